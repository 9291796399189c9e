"""The one error mapper of the web side: every error a request meets becomes a page.

A `UserError` (errors.py) is a translated HTML page with its status for browsers, or
the single JSON shape for the widget and for the scripted API (always JSON, in English,
with `WWW-Authenticate` on a 401). An `OperatorError` that reaches a request (a disk
that refuses writes, gpg failing or stuck, a key that cannot be used) is the fail-closed
503 "temporarily unavailable, call the practice", with its message in the operator's
log. Unhandled exceptions are logged with their type and stack frames (never their
message, which can quote the form's content) and shown as a calm generic page;
werkzeug's HTTP errors (413, 404, 405...) get the same friendly treatment instead of a
bare page.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import OperatorError, UserError
from ..i18n import gettext
from ..logs import log_exception, redact_path
from ..store import StoreNotWritable
from .common import language, relay, render, wants_json
from .request import BadForm

log = logging.getLogger("formrelay.web")
API_BLUEPRINT = "clinician_api"

_HTTP_MESSAGES = {
    400: "The request could not be read. Please reload the page and try again.",
    404: "This page does not exist.",
    405: "This page cannot be used this way.",
    408: "Sending took too long, so nothing was stored. Check your connection and send "
         "the form again.",
    413: "What you sent is too large. Make attached files smaller and try again.",
    429: "Too many attempts. Please wait a moment and try again.",
}
_PAGE_UNAVAILABLE = "This page is temporarily unavailable. Please try again later."
_GENERIC = "Something went wrong on our side. Your answers were not stored; please try " \
           "again later or call the practice."


def error_body(message: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {"ok": False, "error": message, "errors": errors or {}}


def _api() -> bool:
    """A request to the scripted API (web/clinician/api.py): a program reads the answer."""
    return request.blueprint == API_BLUEPRINT


def respond(status: int, message: str, errors: dict[str, list[str]] | None = None,
            lang: str | None = None) -> Any:
    if wants_json() or _api():
        resp = jsonify(error_body(message, errors))
        if status == 401 and _api():
            resp.headers["WWW-Authenticate"] = 'Bearer realm="formrelay"'
        return resp, status
    lang = lang or language()
    return render("error.html", lang, status=status, message=message), status


def register(app: Flask) -> None:
    @app.errorhandler(UserError)
    def user_error(exc: UserError) -> Any:
        lang = "en" if _api() else language()
        msg = gettext(lang, exc.message, **exc.params)
        return respond(exc.status, msg, exc.errors, lang)

    @app.errorhandler(OperatorError)
    def operator_error(exc: OperatorError) -> Any:
        # The message names paths, keys and reasons, never what was posted. A disk that
        # refused a write rolled the transaction back whole: the patient is told that
        # nothing arrived.
        what = "refused, nothing stored" if isinstance(exc, StoreNotWritable) else "failed"
        log.error("%s %s %s: %s", request.method, redact_path(request.path), what, exc)
        if request.path.startswith("/clinician"):
            return respond(503, gettext("en" if _api() else language(), _PAGE_UNAVAILABLE))
        return user_error(relay().unavailable((request.view_args or {}).get("form_id", "")))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        if isinstance(exc, BadForm):  # a body werkzeug could not take: say what is wrong
            log.info("refused a %s to %s: %s", request.method, redact_path(request.path),
                     exc.kind)
            lang = language()
            return respond(code, gettext(lang, exc.message, **exc.params), lang=lang)
        lang = language()
        text = _HTTP_MESSAGES.get(code, exc.description or "")
        return respond(code, gettext(lang, text), lang=lang)

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> Any:
        # Its type and stack frames only: the message (and so a formatted traceback) can
        # quote the value that caused it, a patient's answer.
        log_exception(log, "unhandled error in %s %s", request.method,
                      redact_path(request.path), exc=exc)
        try:
            relay()
            return respond(500, gettext(language(), _GENERIC))
        except Exception:  # noqa: BLE001 - the error page itself must not fail
            return "Internal error", 500
