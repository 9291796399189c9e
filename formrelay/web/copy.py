"""`/copy/<token>`: the patient picks up their copy with the link and the pickup code.

GET shows the pickup form (static/copy.js copies the link's secret from the URL
fragment into it); POST checks the secret and the code (or the thank-you page's
15-minute grant) through copies.Copies and sends the PDF as an attachment. Anything
that stops a download gets a calm page with the practice's contact line: a wrong code
(with the tries left), an altered, expired, used-up or locked link.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, g, request, url_for

from ..i18n import gettext
from ..localtime import shown
from ..patient_copy.copies import MAX_FAILURES, Copies, CopyRefused, CopyState
from ..patient_copy.values import CopyInfo
from ..settings import PracticeSettings
from .common import language, relay, render, services

bp = Blueprint("copy", __name__)

# state -> (HTTP status, title, message); the messages tell the patient what to do next.
_GONE: dict[CopyState, tuple[int, str, str]] = {
    CopyState.ALTERED: (
        400, "This link does not work",
        "The link is incomplete or was changed. Open it again from the e-mail, or "
        "copy the whole link into your browser. If that does not help, contact the "
        "practice."),
    CopyState.UNKNOWN: (
        404, "This copy is no longer available",
        "Copies are deleted after their time or their last download. Contact the "
        "practice if you need your answers again."),
    CopyState.EXPIRED: (
        410, "This link has expired",
        "Your copy was deleted when the link expired. Contact the practice if you "
        "need your answers again."),
    CopyState.USED_UP: (
        410, "This copy has been downloaded already",
        "It could be downloaded a limited number of times and has now been deleted. "
        "Contact the practice if you need your answers again."),
    CopyState.LOCKED: (
        403, "This copy is locked",
        f"The wrong pickup code was entered {MAX_FAILURES} times, so the copy was "
        "deleted to protect it. Contact the practice if you need your answers again."),
}


def copies() -> Copies:
    return services().copies


def _practice(form_id: str) -> PracticeSettings:
    """The practice the page speaks for: the one recorded with the copy when it was
    made, while it is configured (a reload may have given its form id to another
    practice since), else the form's."""
    settings = relay().settings
    token = str((request.view_args or {}).get("token", "")).partition("#")[0]
    try:
        row = copies().store.copies.get(copies().copy_id(token)) if token else None
    except CopyRefused:  # an altered link: no row to ask
        row = None
    recorded = settings.practice(str(row["practice"])) if row and row["practice"] else None
    return recorded or settings.practice_of(form_id)


def _headers(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Robots-Tag"] = "noindex"
    return resp


@bp.errorhandler(CopyRefused)
def _gone(exc: CopyRefused) -> Response:
    lang = language(exc.lang or None)
    if exc.form_id:
        g.practice = _practice(exc.form_id)
    status, title, message = _GONE.get(exc.state, _GONE[CopyState.ALTERED])
    html = render("copy_gone.html", lang, title=gettext(lang, title),
                  message=gettext(lang, message))
    return _headers(Response(html, status, mimetype="text/html"))


def _form(token: str, info: CopyInfo, lang: str, *, key: str = "", error: str = "",
          status: int = 200) -> Response:
    g.practice = practice = _practice(info.form_id)
    html = render("copy.html", lang, token=token, key=key, error=error,
                  expires=shown(info.expires_at, practice.timezone, lang),
                  downloads_left=info.downloads_left,
                  action=url_for("copy.fetch", token=token, lang=lang),
                  other_lang="en" if lang == "nl" else "nl")
    return _headers(Response(html, status, mimetype="text/html"))


@bp.get("/copy/<token>")
def show(token: str) -> Any:
    # A mail client may turn the link's '#' into '%23': then the secret arrives here.
    token, _, key = token.partition("#")
    info = copies().info(token)
    return _form(token, info, language(info.lang), key=key)


@bp.post("/copy/<token>")
def fetch(token: str) -> Any:
    token = token.partition("#")[0]
    c = copies()
    key = request.form.get("key", "")
    try:
        info = c.info(token)
        opened = c.open(token, key, code=request.form.get("code", ""),
                        grant=request.form.get("grant", ""), ip=request.remote_addr or "")
    except CopyRefused as exc:
        lang = language(exc.lang or None)
        if exc.state == CopyState.WRONG_CODE:
            msg = gettext(lang, "This pickup code is not right. Tries left before the copy "
                                "is locked: %(n)s.", n=exc.tries_left)
            return _form(token, info, lang, key=key, error=msg, status=403)
        if exc.state == CopyState.CODE_NEEDED:
            return _form(token, info, lang, key=key, status=400,
                         error=gettext(lang, "Enter the pickup code that was shown after "
                                             "you sent the form."))
        if exc.state == CopyState.QUICK_ENDED:
            return _form(token, info, lang, key=key, status=403,
                         error=gettext(lang, "Downloading without the code was possible for "
                                             "15 minutes only. Enter your pickup code."))
        raise  # the link itself is gone: _gone
    resp = Response(opened.pdf, 200, mimetype="application/pdf")
    resp.headers["Content-Disposition"] = f'attachment; filename="{opened.filename}"'
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return _headers(resp)


def register(app: Flask) -> None:
    """Add the /copy routes (the relay's pipeline makes the copies, services.py)."""
    app.register_blueprint(bp)

    @app.context_processor
    def copy_policy() -> dict[str, Any]:
        # what the form's tick-box promises, from the settings in force (a reload may
        # have changed them since the app was built)
        c = copies()
        return {"copy_policy": {"days": c.expiry.days, "downloads": c.max_downloads}}


__all__ = ["bp", "register"]
