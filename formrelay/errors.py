"""One exception family for everything a user can be told.

A `FormrelayError` carries an HTTP status, an English message (the msgid, translated
when shown), its parameters and optional per-field errors. The web layer has one
handler that renders it as HTML for browsers or as the single JSON shape
``{"ok": false, "error": ..., "errors": {field: [...]}}`` for the widget.
"""

from __future__ import annotations

from typing import Any


class FormrelayError(Exception):
    status = 400

    def __init__(self, message: str, *, status: int | None = None,
                 errors: dict[str, list[str]] | None = None, **params: Any):
        super().__init__(message)
        self.message = message
        self.params = params
        self.errors = errors or {}
        if status is not None:
            self.status = status


class NotFound(FormrelayError):
    status = 404


class InvalidSubmission(FormrelayError):
    status = 400


class FormUnavailable(FormrelayError):
    """The form cannot be used safely right now (fail closed): call the practice."""

    status = 503


class TooLarge(FormrelayError):
    status = 413
