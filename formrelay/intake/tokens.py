"""Signed, short-lived form tokens: protection for the public form without cookies.

A browser that blocks third-party cookies cannot keep a session inside the iframe, so
the form page carries its own proof instead: a token signed with the secret key
(itsdangerous) that names the form, the time the patient first saw it and a random id.
On a post the token must be genuine, for this form, at least `min_fill_seconds` old
(bots post at once), at most `max_age` old, and not posted before (its id is remembered
in the database until it would have expired anyway). No Flask here: the clock is
injected and the replay check is a callable, so tests and the CLI can use it directly.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from ..errors import UserError

SALT = "formrelay.form-token.v1"


class TokenReason(StrEnum):
    """Why a posted token was refused."""

    MISSING = "missing"
    INVALID = "invalid"
    TOO_FAST = "too_fast"
    TOO_OLD = "too_old"
    REPLAYED = "replayed"


class TokenProblem(UserError):
    """A posted token was refused; `kind` says why. The form view shows the form again
    (web/protect.py), so the generic message is only a fallback."""

    def __init__(self, kind: TokenReason, token: FormToken | None = None):
        super().__init__("This form could not be checked. Please send it again.")
        self.kind = kind
        self.token = token  # the decoded token when it was genuine (too fast, too old...)


@dataclass(frozen=True)
class FormToken:
    form_id: str
    shown_at: datetime  # when the patient first saw the (empty) form
    id: str

    def age(self, now: datetime) -> float:
        return (now - self.shown_at).total_seconds()


@dataclass(frozen=True)
class TokenUse:
    """A checked form token to record with the post: the submission's transaction stores
    `token.id` as used until `keep_until`, or rolls back with TokenProblem(REPLAYED) when
    another post recorded it first."""
    token: FormToken
    keep_until: datetime


class FormTokens:
    """Issues and checks form tokens for one secret key and clock."""

    def __init__(self, secret_key: str, clock: Callable[[], datetime], *,
                 min_fill_seconds: int, max_age_minutes: int):
        self._serializer = URLSafeSerializer(secret_key, salt=SALT)
        self.clock = clock
        self.min_fill = timedelta(seconds=min_fill_seconds)
        self.max_age = timedelta(minutes=max_age_minutes)

    def issue(self, form_id: str, shown_at: datetime | None = None) -> str:
        """A new token; `shown_at` keeps the time of first display when the form is shown
        again after a refused post (the patient does not have to wait a second time)."""
        shown = shown_at or self.clock()
        # whole milliseconds, rounded down: a token is never younger than it says
        stamp = math.floor(shown.timestamp() * 1000) / 1000
        payload = {"f": form_id, "t": stamp, "n": secrets.token_urlsafe(12)}
        return str(self._serializer.dumps(payload))

    def decode(self, token: str, form_id: str) -> FormToken:
        """The token's content if it is genuine and for this form; no timing checks."""
        if not token:
            raise TokenProblem(TokenReason.MISSING)
        try:
            data: Any = self._serializer.loads(token)
        except BadSignature:
            raise TokenProblem(TokenReason.INVALID) from None
        if not isinstance(data, dict) or data.get("f") != form_id or \
                not isinstance(data.get("t"), int | float) or not isinstance(data.get("n"), str):
            raise TokenProblem(TokenReason.INVALID)
        shown = datetime.fromtimestamp(float(data["t"]), tz=self.clock().tzinfo)
        return FormToken(form_id=form_id, shown_at=shown, id=data["n"])

    def check(self, token: str, form_id: str, used: Callable[[str], bool]) -> FormToken:
        """Accept a posted token or raise TokenProblem; `used(id)` says whether it was
        posted before (Store.protection.token_used). Nothing is recorded here: the submission's
        transaction records the token with the post (`first_use`), so a post costs one
        commit, and a post that is not stored leaves its token unused."""
        ft = self.decode(token, form_id)
        now = self.clock()
        age = now - ft.shown_at
        if age < self.min_fill:
            raise TokenProblem(TokenReason.TOO_FAST, ft)
        if age > self.max_age:
            raise TokenProblem(TokenReason.TOO_OLD, ft)
        if used(ft.id):
            raise TokenProblem(TokenReason.REPLAYED, ft)
        return ft

    def first_use(self, ft: FormToken) -> TokenUse:
        """The token's first use, for the relay to record inside the submission's
        transaction (Relay.submit(token=...)): kept as used until it could no longer be
        accepted anyway."""
        return TokenUse(ft, ft.shown_at + self.max_age)
