"""A clinician as the code sees them (`User`) and why a login step is refused.

Shared by the login guard, the second factor, API tokens and the account
administration; no Flask.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ..errors import UserError
from ..localtime import parse_iso
from ..settings import DEFAULT_PRACTICE

OPERATOR = "operator"  # the audit actor for `formrelay users ...`


class LoginFailure(StrEnum):
    """Why a login step failed, as the audit log says it."""

    LIMITED = "too many failed attempts"
    BUSY = "too many logins at once"  # every hashing slot taken (hashing.py)
    WRONG_PASSWORD = "wrong password"  # noqa: S105 - a reason, not a password
    UNKNOWN_USER = "unknown user"
    DISABLED = "account disabled"
    NOT_ENROLLED = "account disabled or not enrolled"
    CODE_USED = "TOTP code used before"
    WRONG_CODE = "wrong TOTP code"
    UNSEALABLE = "TOTP secret cannot be opened"
    WRONG_ENROL_CODE = "wrong TOTP code at enrolment"
    WRONG_OLD_PASSWORD = "wrong password at password change"  # noqa: S105


class LoginRefused(UserError):
    """A login step failed. `reason` is for the audit log; users see one generic text
    (the views choose it, the message here is only a fallback)."""

    status = 401

    def __init__(self, reason: LoginFailure):
        super().__init__("Wrong user name or password.")
        self.reason = reason


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str
    recipients: tuple[str, ...]
    forms: tuple[str, ...]
    practice: str
    enrolled: bool
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None

    @property
    def actor(self) -> str:
        return f"user:{self.username}"


def user_from_row(row: dict[str, Any]) -> User:
    return User(id=row["id"], username=row["username"], email=row["email"],
                recipients=tuple(json.loads(row["recipients"])),
                forms=tuple(json.loads(row["forms"])),
                practice=str(row.get("practice") or DEFAULT_PRACTICE),
                enrolled=bool(row["totp_secret"]),
                disabled=bool(row["disabled_at"]), created_at=parse_iso(row["created_at"]),
                last_login_at=parse_iso(row["last_login_at"]) if row["last_login_at"] else None)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
