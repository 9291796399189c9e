"""The one error handler: FormrelayError -> translated HTML page or the JSON shape.

Unhandled exceptions are logged with their type and stack frames (never their message,
which can quote the form's content) and shown as a calm generic page; werkzeug's HTTP
errors (413, 404, 405...) get the same friendly treatment instead of a bare page. A
disk that refuses writes (full, read-only) is a 503 "temporarily unavailable, call the
practice" (fail closed), with the reason in the operator's log.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import FormrelayError
from ..i18n import gettext, pick_language
from ..logs import log_exception, redact_path
from ..store import StoreNotWritable
from .common import language, relay, render, wants_json
from .request import BadForm

log = logging.getLogger("formrelay.web")

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


def respond(status: int, message: str, errors: dict[str, list[str]] | None = None,
            lang: str | None = None) -> Any:
    lang = lang or language()
    if wants_json():
        return jsonify(error_body(message, errors)), status
    return render("error.html", lang, status=status, message=message), status


def register(app: Flask) -> None:
    @app.errorhandler(FormrelayError)
    def formrelay_error(exc: FormrelayError) -> Any:
        lang = language()
        msg = gettext(lang, exc.message, **exc.params)
        return respond(exc.status, msg, exc.errors, lang)

    @app.errorhandler(StoreNotWritable)
    def not_writable(exc: StoreNotWritable) -> Any:
        # The message names the database and the disk's reason, never what was posted;
        # the transaction was rolled back whole, so the patient is told nothing arrived.
        log.error("%s %s refused, nothing stored: %s", request.method,
                  redact_path(request.path), exc)
        if request.path.startswith("/clinician"):
            return respond(503, gettext(language(), _PAGE_UNAVAILABLE))
        return formrelay_error(relay().unavailable())

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        if isinstance(exc, BadForm):  # a body werkzeug could not take: say what is wrong
            log.info("refused a post to %s: %s", redact_path(request.path), exc.kind)
            # the query's lang (the form's action has it): reading the body again is not safe
            spec = relay().settings.form((request.view_args or {}).get("form_id", ""))
            lang = pick_language(request.args.get("lang"), spec.lang if spec else "nl")
            return respond(code, gettext(lang, exc.message, **exc.params), lang=lang)
        lang = language() if code != 413 else "nl"  # reading args is safe; the body is not
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
