"""One exception tree for every error formrelay raises on purpose.

    FormrelayError          catch this to catch them all
    ├── UserError           the patient, clinician or API client did it or can fix it
    └── OperatorError       only the operator can fix it: configuration, keys, gpg, the
                            disk or database, the mail relay

A `UserError` carries an HTTP status, an English message (the msgid, translated when
shown), its parameters and optional per-field errors; web/errors.py renders it as HTML
for browsers or as the single JSON shape ``{"ok": false, "error": ..., "errors":
{field: [...]}}`` for the widget and the API. An `OperatorError` carries a one-line
message saying what to do next and the CLI's exit code; a request that meets one gets
the fail-closed 503 page while the message goes to the operator's log. The CLI turns
both into one line and an exit code (cli/__init__.py). The modules that raise them define their
own subclasses (config.ConfigError, crypto.keyring.CryptoError, store.StoreError, ...).
"""

from __future__ import annotations

from typing import Any


class FormrelayError(Exception):
    """The base of every error formrelay raises on purpose."""


class UserError(FormrelayError):
    status = 400

    def __init__(self, message: str, *, status: int | None = None,
                 errors: dict[str, list[str]] | None = None, **params: Any):
        super().__init__(message)
        self.message = message
        self.params = params
        self.errors = errors or {}
        if status is not None:
            self.status = status

    def english(self) -> str:
        """The message with its parameters, untranslated (for the CLI and logs)."""
        return self.message % self.params if self.params else self.message


class OperatorError(FormrelayError):
    """str() is the one-line message for the operator: what is wrong and what to do. It
    names files, keys and reasons, never what a patient sent, so it may be logged."""

    exit_code = 1


class NotFound(UserError):
    status = 404


class InvalidSubmission(UserError):
    status = 400


class FormUnavailable(UserError):
    """The form cannot be used safely right now (fail closed): call the practice. What
    the patient is told when an operator error stands in the way."""

    status = 503


__all__ = [
    "FormUnavailable",
    "FormrelayError",
    "InvalidSubmission",
    "NotFound",
    "OperatorError",
    "UserError",
]
