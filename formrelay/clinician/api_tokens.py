"""API tokens for scripted download: made per user, shown once, stored hashed, revocable."""

from __future__ import annotations

import re
import secrets
from typing import Any

from ..audit_actions import AuditAction
from .login import LoginGuard
from .user import User, sha256


class ApiTokens(LoginGuard):
    """A user's API tokens (part of `Accounts`)."""

    def new_token(self, user: User, name: str, ip: str) -> str:
        name = re.sub(r"\s+", " ", name).strip()[:60] or "API"
        token = "fr_" + secrets.token_urlsafe(32)
        with self.store.transaction():
            tid = self.store.clinicians.token_add(user.id, name, sha256(token), token[:7] + "…")
            self.store.audit.append(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                                    detail=f"API token #{tid} ({name}) created")
        return token

    def tokens(self, user: User) -> list[dict[str, Any]]:
        return self.store.clinicians.tokens(user.id)

    def revoke_token(self, user: User, token_id: int, ip: str) -> bool:
        with self.store.transaction():
            done = self.store.clinicians.token_revoke(user.id, token_id) == 1
            if done:
                self.store.audit.append(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                                        detail=f"API token #{token_id} revoked")
        return done

    def user_for_token(self, token: str) -> tuple[User, int] | None:
        """The active user behind an API token and the token's id, or None."""
        if not token.startswith("fr_") or len(token) > 100:
            return None
        owner = self.store.clinicians.token_owner(sha256(token))
        if owner is None:
            return None
        user = self.by_id(owner[1])
        if user is None or user.disabled:
            return None
        return user, owner[0]
