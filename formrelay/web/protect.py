"""Protection of the public form without cookies: origin, honeypot, form token, limits.

A post to /f/<form_id> must come from a page of one of the form's `allowed_origins` or
of formrelay itself (the `Origin` header, else the `Referer`), leave the honeypot field
empty, and carry a genuine form token that is neither too fresh, too old nor used
before (intake/tokens.py). Refusals a patient can cause by accident (an old tab, a double
click, autofill in the hidden field) show the form again with what they typed and a
fresh token ("please send again"); a foreign origin gets a plain 403 page.

Posts are counted per client address and per form; the counters live in the database
(one transaction per post, `_counted`), or in Redis through flask-limiter when
`server.rate_limit_storage` names it, so they hold across all gunicorn workers (and, with
Redis, all app instances). Over the
limit: a translated 429 page with `Retry-After`. Counters that cannot be reached refuse
the post with the fail-closed 503, as any other operator error.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import Storage

from ..errors import UserError
from ..i18n import gettext
from ..intake import ratelimit
from ..intake.relay import Relay
from ..intake.tokens import FormToken, FormTokens, TokenProblem, TokenReason, TokenUse
from ..settings import FormSpec, ServerSettings
from ..store.clinician import client_network
from .common import language, relay

log = logging.getLogger("formrelay.web")

HONEYPOT = "_hp"
TOKEN = "_token"  # noqa: S105 - a field name, not a secret
KEY_PREFIX = "fr"  # of the rate-limit counters' keys

SEND_AGAIN = {
    "missing": "This form could not be checked. Please send it again.",
    "invalid": "This form could not be checked. Please send it again.",
    "too_fast": "That was very fast. Please check your answers and send the form again.",
    "too_old": "This form was open for a long time. For your safety, please check your "
               "answers and send it again.",
    "replayed": "This form was already sent once. If you did not see a reference, please "
                "send it again.",
    "honeypot": "Your form could not be sent. Please check your answers and send it again.",
}
FOREIGN_ORIGIN = ("This form can only be sent from the practice's own website. Please open "
                  "the form there and send it again.")


class SendAgain(Exception):
    """A refused post the patient can simply send again; `shown_at` for the new token.

    Outside the errors.py tree on purpose: it is the submit view's control flow (show the
    form again with what was typed), caught there and never meant for the error mapper."""

    def __init__(self, kind: str, shown_at: datetime | None):  # a TokenReason or "honeypot"
        super().__init__(kind)
        self.kind = kind
        self.shown_at = shown_at

    def message(self, lang: str) -> str:
        return gettext(lang, SEND_AGAIN[self.kind])


@dataclass
class Protection:
    own_origin: str
    storage: Storage  # where the counters live (the health check asks it)
    limiter: Limiter | None  # flask-limiter, only for counters in Redis

    @property
    def tokens(self) -> FormTokens:
        """Form tokens under the settings in force (min_fill_seconds and
        form_token_max_age_minutes may change on a reload)."""
        r = relay()
        s = r.settings.server
        return FormTokens(r.settings.secret_key, r.clock, min_fill_seconds=s.min_fill_seconds,
                          max_age_minutes=s.form_token_max_age_minutes)


def protection() -> Protection:
    p: Protection = current_app.extensions["formrelay.protect"]
    return p


def origin_of(url: str) -> str:
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return ""
    host = parts.hostname.lower()
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}"


def check_origin(spec: FormSpec) -> None:
    """The post must come from an allowed page (browsers always send Origin on POST)."""
    origin = request.headers.get("Origin", "")
    if not origin or origin == "null":
        origin = origin_of(request.headers.get("Referer", ""))
    else:
        origin = origin_of(origin)
    allowed = {origin_of(o) for o in spec.allowed_origins} | {protection().own_origin}
    if origin and origin in allowed:
        return
    log.info("form %s: refused a post from origin %s", spec.id, origin or "(none)")
    raise UserError(FOREIGN_ORIGIN, status=403)


def check_post(spec: FormSpec) -> FormToken:
    """Honeypot and form token; returns the token (its `shown_at`: when the patient first
    saw the form). Raises SendAgain (show the form again with their answers) on any
    refusal. The token is recorded by the submission's own transaction (`first_use`)."""
    p = protection()
    token = request.form.get(TOKEN, "")
    if request.form.get(HONEYPOT):
        log.info("form %s: refused a post with the honeypot filled", spec.id)
        raise SendAgain("honeypot", None)
    try:
        return p.tokens.check(token, spec.id, relay().store.protection.token_used)
    except TokenProblem as exc:
        raise send_again(spec, exc) from None


def first_use(ft: FormToken) -> TokenUse:
    """For Relay.submit, which records the token inside the submission's transaction."""
    return protection().tokens.first_use(ft)


def send_again(spec: FormSpec, exc: TokenProblem) -> SendAgain:
    """A refused token as the answer the patient gets: the form again, and when they may
    send it (too fast: from when they first saw it; too old: at once)."""
    p = protection()
    log.info("form %s: refused a post: token %s", spec.id, exc.kind)
    shown: datetime | None = None
    if exc.kind == TokenReason.TOO_FAST and exc.token:
        shown = exc.token.shown_at
    elif exc.kind == TokenReason.TOO_OLD:
        # they filled it in already: the new token may be sent at once
        shown = p.tokens.clock() - p.tokens.min_fill
    return SendAgain(exc.kind, shown)


def issue_token(form_id: str, shown_at: datetime | None = None) -> str:
    return protection().tokens.issue(form_id, shown_at)


# -- rate limits -------------------------------------------------------------------------
def client_key() -> str:
    """The client address; an IPv6 client is counted per /64 (one household or phone
    gets a whole /64 and could otherwise rotate through it)."""
    return client_network(request.remote_addr or "unknown")  # as logins count (store)


def form_key() -> str:
    form_id = (request.view_args or {}).get("form_id", "")
    # unknown ids share one counter (they are refused anyway) so they cannot fill the table
    return f"form:{form_id}" if form_id in relay().settings.forms else "form:?"


def _too_many(exc: RateLimitExceeded) -> Any:
    """flask-limiter's refusal (counters in Redis)."""
    log.info("rate limit reached: %s", exc.description)
    limiter = protection().limiter
    current = limiter.current_limit if limiter is not None else None
    # Redis' counters run on real time
    return _refused(max(1, math.ceil(current.reset_at - time.time())) if current else 60)


def _refused(wait: int) -> Any:
    """The translated 429 page (or JSON), with when to try again."""
    from .errors import respond

    lang = language()
    body, status = respond(429, gettext(lang, "Too many attempts. Please wait a moment and "
                                              "try again."), lang=lang)
    out = current_app.make_response((body, status))
    out.headers["Retry-After"] = str(wait)
    return out


@dataclass(frozen=True)
class _Limit:
    item: RateLimitItem
    key: Callable[[], str]  # the client's or the form's counter
    scope: str


@functools.lru_cache(maxsize=32)
def _limits(ip_rate: str, form_rate: str, scope: str) -> tuple[_Limit, ...]:
    """The limits of these settings' texts, parsed once per text (a reload that changes
    `rate_limit_ip` or `rate_limit_form` gives new ones): the address's counted in
    `scope`, the form's (if any) in "form"; shortest window first, the address's before
    the form's at the same window."""
    limits = [*(_Limit(i, client_key, scope) for i in parse_many(ip_rate)),
              *(_Limit(i, form_key, "form") for i in (parse_many(form_rate) if form_rate else ()))]
    return tuple(sorted(limits, key=lambda lim: lim.item))


def _counted(view: Callable[..., Any],
             limits_of: Callable[[ServerSettings], tuple[_Limit, ...]]) -> Callable[..., Any]:
    """`view` behind the posting limits, counted in the database in one transaction
    (store hit_limits), before anything else of the post is looked at: a post refused
    later (token, validation, a key) has been counted. flask-limiter took one transaction
    per limit (three with the defaults) and its own bookkeeping around each. The keys are
    its; the order is the shortest window first, the address's limits before the form's
    at the same window (`register` sorts them), up to the first one exceeded: posts a
    flooding address is refused do not use up the form's limit for every patient.
    `limits_of` reads them from the settings in force, so a reload changes them."""

    @functools.wraps(view)
    def counted(*args: Any, **kwargs: Any) -> Any:
        r = relay()
        limits = limits_of(r.settings.server)
        keys: dict[Callable[[], str], str] = {}  # the address is parsed once, not per limit
        hits = [(lim.item.key_for(KEY_PREFIX, keys.get(lim.key) or keys.setdefault(
                    lim.key, lim.key()), lim.scope), lim.item.get_expiry(), lim.item.amount)
                for lim in limits]
        over = r.store.protection.hit_limits(hits)
        if over is None:
            return view(*args, **kwargs)
        index, ends = over
        log.info("rate limit reached: %s (%s)", limits[index].item, limits[index].scope)
        # the database's counters run on the relay's clock
        return _refused(max(1, math.ceil(ends - r.clock().timestamp())))

    return counted


def register(app: Flask, r: Relay) -> None:
    """Set up tokens and the rate limits on the form's POST route (call after the
    public blueprint is registered)."""
    s = r.settings.server
    own = origin_of(s.base_url)
    view = app.view_functions["public.submit"]
    if not s.rate_limit_storage:
        # The database: counted by the project, every limit in one transaction. No
        # flask-limiter on the app: its hooks ran on every request of every route.
        app.view_functions["public.submit"] = _counted(
            view, lambda now: _limits(now.rate_limit_ip, now.rate_limit_form, "ip"))
        storage = ratelimit.open_storage(r.settings, r.store)
        app.extensions["formrelay.protect"] = Protection(own, storage, None)
        app.register_error_handler(StorageError, _counters_down)
        return
    uri, options = ratelimit.storage_uri(r.settings)
    limiter = Limiter(client_key, app=app, storage_uri=uri,
                      storage_options=cast(dict[str, str | int], options),
                      strategy="fixed-window", headers_enabled=False, key_prefix=KEY_PREFIX)
    # `formrelay serve` and gunicorn refuse to start without Redis; a worker started (or
    # recycled) while it is away comes up and refuses posts until it is back
    why = ratelimit.problem(limiter.storage)
    if why:
        log.error("%s", ratelimit.unreachable(r.settings, why))
    app.extensions["formrelay.protect"] = Protection(own, limiter.storage, limiter)
    # the limits as callables: flask-limiter reads them at each request, so a reload
    # changes them
    per_form = limiter.limit(lambda: relay().settings.server.rate_limit_form,
                             key_func=form_key, methods=["POST"], scope="form")
    per_ip = limiter.limit(lambda: relay().settings.server.rate_limit_ip, methods=["POST"],
                           scope="ip")
    # the one applied first is counted first at the same window: the address's
    app.view_functions["public.submit"] = per_form(per_ip(view))  # type: ignore[assignment]
    app.register_error_handler(RateLimitExceeded, _too_many)
    app.register_error_handler(StorageError, _counters_down)


# The patient's other posts, counted per address like the form's (server.rate_limit_ip),
# each group in a counter of its own so that a patient who has just sent the form can
# still ask for an upload link and read the answer: reading an answer with the reply
# code and replying to it (a guesser of codes across references meets this before the
# per-reference lock), and asking for an upload link (each one sends a mail).
PATIENT_POSTS = {"replies.read": "answers", "replies.reply": "answers", "uploads.ask": "ask"}


def limit_patient_posts(app: Flask, r: Relay) -> None:
    """The rate limits on PATIENT_POSTS (call after their blueprints are registered).
    Over the limit: the same 429 page with Retry-After as the form's, before the view
    reads the body."""
    limiter = app.extensions["formrelay.protect"].limiter
    if limiter is None:  # counters in the database, counted like the form's posts
        for endpoint, scope in PATIENT_POSTS.items():
            app.view_functions[endpoint] = _counted(app.view_functions[endpoint],
                                                    _address_limits(scope))
        return
    per_ip = {scope: limiter.shared_limit(lambda: relay().settings.server.rate_limit_ip,
                                          scope, methods=["POST"])
              for scope in set(PATIENT_POSTS.values())}
    for endpoint, scope in PATIENT_POSTS.items():
        app.view_functions[endpoint] = per_ip[scope](app.view_functions[endpoint])


def _address_limits(scope: str) -> Callable[[ServerSettings], tuple[_Limit, ...]]:
    return lambda now: _limits(now.rate_limit_ip, "", scope)


def _counters_down(exc: StorageError) -> Any:
    """Redis went away: the post is refused like any operator error (logged, 503 "call
    the practice"), never let through uncounted."""
    down = ratelimit.CountersDown(ratelimit.unreachable(relay().settings, str(exc.storage_error)))
    return current_app.handle_user_exception(down)
