"""The clinician area: login (password + TOTP), held submissions, download, processed.

Views stay thin: `clinician.accounts.Accounts` does the login steps, `inbox.Inbox` the rights checks
and the audit entries. Every POST here carries a flask-wtf CSRF token (checked for the
whole area in `guard`, refused and audited when missing), the session is server-side
(session.py) and gets a new id at login. The area answers only over HTTPS (or
on a loopback address); behind the TLS proxy set `server.trusted_proxies`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import wraps
from typing import Any, cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    redirect,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

from ...audit_actions import AuditAction
from ...clinician.inbox import ASSISTANT
from ...clinician.second_factor import qr_data_uri
from ...clinician.user import LoginFailure, LoginRefused, User
from ...errors import UserError
from ...i18n import gettext
from ...localtime import iso, parse_iso
from ...logs import redact_path
from ...mail.mime import Streamed
from ...services import Services
from ...settings import LANGUAGES, is_loopback
from ..common import relay, render, services
from ..widget import openpgp_file
from .session import ClinicianSession

log = logging.getLogger("formrelay.web")

bp = Blueprint("clinician", __name__, url_prefix="/clinician")

PENDING = timedelta(minutes=5)  # between the password and the code
View = Callable[..., Any]


def area() -> Services:
    """The area's services: `accounts` (login steps) and `inbox` (rights, audit)."""
    return services()


def sess() -> ClinicianSession:
    return cast(ClinicianSession, session)


def client_ip() -> str:
    return request.remote_addr or ""


def lang() -> str:
    wanted = request.args.get("lang")
    if wanted in LANGUAGES:
        session["lang"] = wanted
    return str(session.get("lang", "nl"))


def t(message: str, **params: object) -> str:
    return gettext(lang(), message, **params)


def page(template: str, status: int = 200, **ctx: Any) -> tuple[str, int]:
    return render(template, lang(), csrf_token=generate_csrf(), user=g.get("user"),
                  **ctx), status


# -- the guard of every page in the area ------------------------------------------------
def secure_enough() -> bool:
    """HTTPS, or a browser on this very machine (a secure context for cookies too)."""
    if request.is_secure:
        return True
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    return is_loopback(host) and is_loopback(request.remote_addr or "")


def refuse_request(detail: str) -> UserError:
    user = current_user()
    what = f"{request.method} {request.path}: {detail}"
    if user is None:  # nobody known: counted, the first of each minute audited
        area().accounts.refused_anonymously(AuditAction.REQUEST, client_ip(), "request", what)
    else:
        relay().store.audit.append(AuditAction.REQUEST, "refused", actor=user.actor, ip=client_ip(),
                                   detail=what)
    return UserError("This page was open too long or did not come from this site. "
                     "Please go back, reload the page and try again.", status=400)


def guard() -> None:
    if not secure_enough():
        # the fix is the operator's: the page speaks plain language, the log says what
        log.warning("clinician area refused over plain http (from %s, %s): open it with "
                    "https://; behind a TLS proxy set server.trusted_proxies so the "
                    "forwarded scheme is trusted (formrelay check warns about it)",
                    client_ip(), redact_path(request.path))
        raise UserError("The clinician area works only over a secure connection. Open it "
                        "with an address that starts with https://. If that does not help, "
                        "contact whoever manages formrelay for your practice.", status=403)
    if request.method != "POST":
        return
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        raise refuse_request(f"foreign origin {origin[:100]}")
    try:
        validate_csrf(request.form.get("csrf_token"),
                      time_limit=relay().settings.server.session_max_hours * 3600)
    except ValidationError as exc:
        raise refuse_request(f"CSRF check failed ({exc})") from None


bp.before_request(guard)


def current_user() -> User | None:
    if "user" in g:
        return cast(User | None, g.user)
    uid = session.get("uid")
    user = area().accounts.by_id(int(uid)) if uid else None
    if uid and (user is None or user.disabled):
        sess().end()
        user = None
    g.user = user
    return user


def login_required(view: View) -> View:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return redirect(url_for("clinician.login"))
        return view(*args, **kwargs)

    return wrapped


# -- login --------------------------------------------------------------------------------
def _pending_user() -> User | None:
    pending = session.get("pending")
    if not pending:
        return None
    if parse_iso(pending["at"]) + PENDING < relay().store.clock():
        session.pop("pending", None)
        session["notice"] = "expired"
        return None
    return area().accounts.by_id(int(pending["uid"]))


def _log_in(user: User) -> None:
    """Full login: a new session id, holding only who is logged in."""
    keep = session.get("lang")
    session.clear()
    sess().regenerate()
    session.update({"uid": user.id, "actor": user.actor, **({"lang": keep} if keep else {})})


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if current_user() is not None:
        return redirect(url_for("clinician.inbox"))
    notice = session.pop("notice", "")
    if request.method == "GET":
        return page("clinician/login.html", notice=notice)
    username = request.form.get("username", "")
    try:
        user = area().accounts.check_password(username, request.form.get("password", ""),
                                              client_ip())
    except LoginRefused as exc:
        if exc.reason == LoginFailure.BUSY:  # refused before its password was checked
            return page("clinician/login.html", 429, error=t(
                "The server is busy with many logins. Wait a minute and try again."),
                username=username[:40])
        limited = exc.reason == LoginFailure.LIMITED
        error = t("Too many failed attempts. Wait 15 minutes and try again.") if limited \
            else t("Wrong user name or password.")
        return page("clinician/login.html", 429 if limited else 401, error=error,
                    username=username[:40])
    keep = session.get("lang")
    session.clear()
    sess().regenerate()  # whatever was there before the password is not carried on
    session.update({"pending": {"uid": user.id, "at": iso(relay().store.clock())},
                    **({"lang": keep} if keep else {})})
    return redirect(url_for("clinician.enrol" if not user.enrolled else "clinician.code"))


def _paused() -> tuple[str, int]:
    """A second login step after too many failures: back to the password, paused."""
    session.pop("pending", None)
    return page("clinician/login.html", 429, error=t(
        "Too many failed attempts. Wait 15 minutes and try again."))


@bp.route("/login/code", methods=["GET", "POST"])
def code() -> Any:
    user = _pending_user()
    if user is None or not user.enrolled:
        return redirect(url_for("clinician.login"))
    if request.method == "GET":
        return page("clinician/code.html")
    try:
        area().accounts.second_factor(user, request.form.get("code", ""), client_ip())
    except LoginRefused as exc:
        if exc.reason == LoginFailure.LIMITED:
            return _paused()
        return page("clinician/code.html", 401, error=t(
            "This code is not valid (each code works once). Wait for the next code in "
            "your app and try again."))
    _log_in(user)
    return redirect(url_for("clinician.inbox"))


@bp.route("/enrol", methods=["GET", "POST"])
def enrol() -> Any:
    user = _pending_user()
    if user is None or user.enrolled:
        return redirect(url_for("clinician.login"))
    accounts = area().accounts
    # the session lives in the database: it keeps the offered secret only sealed
    sealed = session.get("enrol_secret")
    secret = accounts.open_enrolment(user, sealed) if sealed else None
    if secret is None:
        secret = accounts.new_totp_secret()
        session["enrol_secret"] = accounts.seal_enrolment(user, secret)
    uri = accounts.totp_uri(user, secret)
    ctx: dict[str, Any] = {"qr": qr_data_uri(uri),
                           "secret": " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))}
    if request.method == "GET":
        return page("clinician/enrol.html", **ctx)
    try:
        codes = accounts.enrol(user, secret, request.form.get("code", ""), client_ip())
    except LoginRefused as exc:
        if exc.reason == LoginFailure.LIMITED:
            return _paused()
        return page("clinician/enrol.html", 401, error=t(
            "This code is not valid. Check the time on your phone and enter the code your "
            "app shows now."), **ctx)
    _log_in(user)
    g.user = accounts.by_id(user.id)
    return page("clinician/recovery.html", codes=codes)


@bp.post("/logout")
def logout() -> Any:
    user = current_user()
    if user is not None:
        relay().store.audit.append(AuditAction.LOGOUT, actor=user.actor, ip=client_ip())
    sess().end()
    return redirect(url_for("clinician.login"))


# -- the inbox ----------------------------------------------------------------------------
@bp.get("/")
@login_required
def inbox() -> Any:
    user = current_user()
    assert user is not None  # noqa: S101 - login_required
    keys = area().reader_keys
    if keys.browser_recipients(user) and keys.active(user) is None:
        return redirect(url_for("clinician_reader.key"))  # no key yet: make it first
    items = area().inbox.items(user)
    left = area().accounts.recovery_codes_left(user)
    readers = {i.reference: keys.readers_of(i.readers) for i in items}
    assistant = relay().store.readers.role_of(user.id) == ASSISTANT
    return page("clinician/inbox.html", items=items, recovery_left=left,
                forms=area().accounts.forms_of(user), readers=readers,
                reads=bool(keys.keys(user)) and not assistant, assistant=assistant,
                openpgp=openpgp_file(),
                idle_minutes=relay().settings.server.session_idle_minutes)


def _spooled(message: Streamed) -> Iterator[bytes]:
    # The message holds only ciphertext; spooled to the data folder past 1 MB.
    buf = tempfile.SpooledTemporaryFile(max_size=1 << 20, dir=str(relay().tmp))
    message.write(buf)
    buf.seek(0)

    def chunks() -> Iterator[bytes]:
        with buf:
            while chunk := buf.read(1 << 16):
                yield chunk

    return chunks()


def download_response(user: User, reference: str, fmt: str, via: str) -> Response:
    """The ciphertext as .asc, or as a PGP/MIME .eml; audited (shared with the API)."""
    box = area().inbox
    item = box.get(user, reference, action=AuditAction.DOWNLOADED, ip=client_ip())
    box.download(user, item, fmt, client_ip(), via)
    if fmt == "eml":
        body: Iterator[bytes] = _spooled(box.eml(item, user))
        mimetype = "message/rfc822"
    else:
        body, mimetype = box.asc_chunks(item), "application/pgp-encrypted"
    resp = Response(body, mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="{item.reference}.{fmt}"'
    if fmt == "asc":
        resp.headers["Content-Length"] = str(item.size)
    return resp


@bp.get("/s/<reference>/<any(asc, eml):fmt>")
@login_required
def download(reference: str, fmt: str) -> Any:
    user = current_user()
    assert user is not None  # noqa: S101 - login_required
    return download_response(user, reference, fmt, "web")


@bp.post("/s/<reference>/handler")
@login_required
def handler(reference: str) -> Any:
    """Triage: who handles this submission (readers and assistants alike)."""
    user = current_user()
    assert user is not None  # noqa: S101 - login_required
    area().inbox.note_handler(user, reference, request.form.get("handler", ""), client_ip())
    return redirect(url_for("clinician.inbox"))


@bp.route("/s/<reference>/processed", methods=["GET", "POST"])
@login_required
def processed(reference: str) -> Any:
    user = current_user()
    assert user is not None  # noqa: S101 - login_required
    box = area().inbox
    if request.method == "GET":
        item = box.get(user, reference, action=AuditAction.DELETED, ip=client_ip())
        return page("clinician/confirm.html", item=item)
    item = box.mark_processed(user, reference, client_ip())
    flash(t("%(reference)s is marked processed; its encrypted answers were deleted.",
            reference=item.reference))
    return redirect(url_for("clinician.inbox"))

