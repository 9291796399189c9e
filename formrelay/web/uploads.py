"""`/u/...`: the patient's side of upload links.

`POST /u/ask` is the thank-you page's "send me a link to upload documents" (a form
with `upload_link = true`): the page carries a signed, one-hour token naming the
submission's reference, so only the patient who just sent the form can ask, once.
Anything that stops a link gets a calm page with the practice's contact line and
nothing about whether a reference exists.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..errors import UserError
from ..i18n import gettext
from ..localtime import shown
from ..uploads.links import LinkRefused, LinkState, UploadLinks
from .common import language, posted_language, render, services

bp = Blueprint("uploads", __name__)
OFFER_SECONDS = 3600

# state -> (HTTP status, title, message)
GONE: dict[LinkState, tuple[int, str, str]] = {
    LinkState.ALTERED: (
        404, "This link does not work",
        "The link is incomplete, was changed or no longer exists. Open it again from the "
        "e-mail, or call the practice."),
    LinkState.CLOSED: (
        410, "This link was used",
        "The documents sent with this link have reached the practice, and the link works "
        "only once. Call the practice if you want to send more."),
    LinkState.EXPIRED: (
        410, "This link has expired",
        "Call the practice if you still want to send documents: they can send you a new "
        "link."),
}


def links() -> UploadLinks:
    s = services()
    return UploadLinks(s.settings, s.store, s.clock)


def no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Robots-Tag"] = "noindex"
    return resp


def _offers() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(services().settings.secret_key, salt="formrelay.upload-offer")


def offer_token(reference: str) -> str:
    """For the thank-you page: lets its patient ask for an upload link within the hour."""
    return _offers().dumps(reference)


def gone_page(exc: LinkRefused) -> Response:
    lang = language(exc.lang or "nl")
    if exc.practice:
        g.practice = services().settings.practice_or_default(exc.practice)
    status, title, message = GONE[exc.state]
    html = render("copy_gone.html", lang, title=gettext(lang, title),
                  message=gettext(lang, message))
    return no_store(Response(html, status, mimetype="text/html"))


bp.register_error_handler(LinkRefused, gone_page)


@bp.post("/u/ask")
def ask() -> Any:
    lang = posted_language(language())
    try:
        reference = str(_offers().loads(request.form.get("offer", ""), max_age=OFFER_SECONDS))
    except (BadSignature, UnicodeDecodeError):
        return gone_page(LinkRefused(LinkState.ALTERED, lang=lang))
    s = services()
    row = s.store.submissions.get(reference)
    spec = s.settings.form(row["form_id"]) if row else None
    if row is None or spec is None or not spec.upload_link or \
            spec.practice != row["practice"]:  # its form id now another practice's
        return gone_page(LinkRefused(LinkState.ALTERED, lang=lang))
    g.practice = s.settings.practice_of(spec.id)
    u = links()
    if u.asked_already(reference):
        html = render("upload_asked.html", lang, again=True, email="", expires="")
        return no_store(Response(html, 200, mimetype="text/html"))
    email = request.form.get("email", "")
    try:
        made = u.for_submission(reference, email, lang, actor="patient",
                                ip=request.remote_addr or "")
    except UserError as exc:
        errors = [m for ms in exc.errors.values() for m in ms] or [gettext(lang, exc.message)]
        html = render("upload_ask.html", lang, offer=request.form.get("offer", ""),
                      email=email, error=" ".join(errors))
        return no_store(Response(html, 400, mimetype="text/html"))
    html = render("upload_asked.html", lang, again=False, email=email,
                  expires=shown(made.expires_at, g.practice.timezone or
                                s.settings.server.timezone))
    return no_store(Response(html, 200, mimetype="text/html"))


def register(app: Flask) -> None:
    app.jinja_env.globals["upload_offer_token"] = offer_token
    app.register_blueprint(bp)
