"""The login guard: failed logins counted per account and per client network (an
address, or an IPv6 /64: store/clinician.py `client_network`).

Failures are counted in the database, so the limit holds across worker processes; a
typed name is kept only as a keyed tag. Every login and every failed step of a known
account is audited; attempts by nobody known are counted per address and minute, the
first of each minute audited (`refused_anonymously`), and once an address or account
is paused its attempts are refused without writing anything.
`Accounts` (and its second factor and API tokens) build on this class.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from ..audit_actions import AuditAction
from ..localtime import iso
from ..settings import Settings
from ..store import Store
from .user import LoginFailure, LoginRefused, User, user_from_row

FAILURE_WINDOW = timedelta(minutes=15)


class LoginGuard:
    """Counts failed login steps and refuses them past the limits; the base of
    `Accounts` and its parts (second factor, API tokens)."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    def now(self) -> datetime:
        return self.store.clock()

    def store_now(self) -> str:
        return iso(self.now())

    def by_id(self, user_id: int) -> User | None:
        row = self.store.clinicians.get(user_id=user_id)
        return user_from_row(row) if row else None

    def _tag(self, username: str) -> str:
        """A typed name is not written down (people type their password into the name
        field, and the audit log is kept for years); this keyed tag still counts and
        shows repeated tries of the same name."""
        return hmac.new(self.settings.secret_key.encode(), username.encode(),
                        hashlib.sha256).hexdigest()[:16]

    def name_tag(self, username: str) -> str:
        """The keyed tag failures of `username` are counted under (see `_tag`)."""
        return self._tag(username)

    def limited(self, username: str, ip: str) -> bool:
        since = self.now() - FAILURE_WINDOW
        s = self.settings.server
        by_name = self.store.clinicians.login_failures(since, username=self._tag(username))
        return (by_name >= s.login_max_failures
                or self.store.clinicians.login_failures(since, ip=ip) >= s.login_max_failures_ip)

    def _fail(self, username: str, ip: str, reason: LoginFailure, *,
              count: bool = True) -> LoginRefused:
        if not count:  # paused: refused before anything is checked, and nothing written
            return LoginRefused(reason)
        with self.store.transaction():
            self.store.clinicians.login_failure(self._tag(username), ip)
            known = bool(username) and self.store.clinicians.get(username=username) is not None
            if known:
                self.store.audit.append(AuditAction.LOGIN, "failed", actor=f"user:{username}",
                                        ip=ip, detail=reason.value)
            else:
                self.refused_anonymously(AuditAction.LOGIN, ip, "login",
                                         f"{reason} (name tag {self._tag(username)})")
        return LoginRefused(reason)

    def refused_anonymously(self, action: AuditAction, ip: str, what: str,
                            detail: str) -> None:
        """A refused attempt by nobody known (a bad API token, an unknown name, a request
        without its CSRF token): counted per address and minute (store/refusals.py); only
        the first of each minute is audited, so a flood cannot grow the audit log."""
        with self.store.transaction():
            if self.store.refusals.count(ip, what) == 1:
                self.store.audit.append(action, "failed" if action != AuditAction.REQUEST else
                                        "refused", actor="unknown", ip=ip,
                                        detail=f"{detail}; more from this address in this minute "
                                               "are counted, not logged one by one")

    def login_ok(self, user: User, ip: str, method: str) -> None:
        with self.store.transaction():
            self.store.clinicians.update(user.id, last_login_at=self.store_now())
            self.store.clinicians.login_failures_clear(self._tag(user.username))
            self.store.audit.append(AuditAction.LOGIN, actor=user.actor, ip=ip, detail=method)
