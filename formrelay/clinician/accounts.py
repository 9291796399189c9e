"""Clinician accounts: who they are, passwords, and the administration the CLI does.

No Flask here: `formrelay users` and the clinician area both use `Accounts`. Passwords
are hashed with argon2id (argon2-cffi), off the event loop and a few at a time
(hashing.py). The login steps build on the login guard
(login.py: failed logins counted per account and per client address), the second factor
(second_factor.py: TOTP and recovery codes) and API tokens (api_tokens.py). Every
change and every login is audited.
"""

from __future__ import annotations

import functools
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..audit_actions import AuditAction
from ..crypto import pins
from ..errors import UserError
from ..settings import PracticeSettings
from . import hashing
from .api_tokens import ApiTokens
from .second_factor import SecondFactor
from .user import OPERATOR, LoginFailure, User, user_from_row

RESERVED_NAMES = {"patient", "system", OPERATOR}
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,39}$")
MIN_PASSWORD, MAX_PASSWORD = 12, 256
_hasher = PasswordHasher()  # argon2id, RFC 9106 "low memory" parameters (64 MiB, t=3)


@functools.cache
def _dummy_hash() -> str:
    """Checked when the account does not exist: a wrong name costs as long as a wrong
    password, so timing does not tell which names exist."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(UserError):
    """An account command cannot be done; the message says why and what to do."""


class Accounts(SecondFactor, ApiTokens):
    """Every account job in one object: the CLI and the clinician area use this."""

    # -- reading ----------------------------------------------------------------------
    def get(self, username: str) -> User | None:
        row = self.store.clinicians.get(username=username.strip().lower())
        return user_from_row(row) if row else None

    def all(self) -> list[User]:
        return [user_from_row(r) for r in self.store.clinicians.rows()]

    def require(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            known = ", ".join(u.username for u in self.all()) or "none yet"
            raise AccountError(f"no user {username!r}; existing users: {known}")
        return user

    def forms_of(self, user: User) -> list[str]:
        """The forms whose submissions `user` may see: those named for the user, and
        those sent to a recipient the user is (as the configuration names it, or added by
        the practice owner); only ever forms of the user's own practice (a form moved to
        another practice is no longer theirs)."""
        mine = set(user.recipients)
        forms = self.settings.forms
        return sorted({fid for fid in user.forms
                       if fid not in forms or forms[fid].practice == user.practice}
                      | {fid for fid, spec in forms.items()
                         if spec.practice == user.practice and mine & set(
                             pins.with_readers(self.store, self.settings.recipients,
                                               spec).recipients)})

    # -- administration (the CLI) -----------------------------------------------------
    def check_password_rules(self, password: str, username: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"the password is too short: use at least {MIN_PASSWORD} "
                               "characters (a few words make a good one)")
        if len(password) > MAX_PASSWORD:
            raise AccountError(f"the password is too long: at most {MAX_PASSWORD} characters")
        if username.lower() in password.lower():
            raise AccountError("the password must not contain the user name")

    def add(self, username: str, password: str, *, email: str = "",
            recipients: list[str] | tuple[str, ...] = (),
            forms: list[str] | tuple[str, ...] = (), practice: str = "") -> User:
        username = username.strip().lower()
        if not USERNAME.match(username) or username in RESERVED_NAMES:
            raise AccountError(f"{username!r} is not a usable user name: use 2-40 lowercase "
                               "letters, digits, '.', '-' or '_' (not patient/system/operator)")
        if self.get(username):
            raise AccountError(f"user {username!r} exists already; use `formrelay users reset`")
        practice = practice or self.settings.default_practice.id
        self._check_links(list(recipients), list(forms), practice)
        if email and "@" not in email:
            raise AccountError(f"{email!r} is not an e-mail address")
        self.check_password_rules(password, username)
        with self.store.transaction():
            uid = self.store.clinicians.add(username, _hasher.hash(password), email=email,
                                            recipients=list(recipients), forms=list(forms),
                                            practice=practice)
            self.store.audit.append(AuditAction.USER_CREATED, actor=OPERATOR, practice=practice,
                                    detail=f"user:{username}; practice {practice}; recipients "
                                           f"{','.join(recipients) or '-'}; forms "
                                           f"{','.join(forms) or '-'}")
        user = self.by_id(uid)
        assert user is not None  # noqa: S101 - just written
        return user

    def _check_links(self, recipients: list[str], forms: list[str], practice: str) -> None:
        own = self.settings.practice(practice)
        if own is None:
            raise AccountError(f"unknown practice {practice!r}; configured: "
                               f"{', '.join(p.id for p in self._practices())}")
        if not recipients and not forms:
            raise AccountError("tie the user to at least one --recipient or --form, or they "
                               "would see nothing")
        for kind, ids, configured, mine in (
                ("recipient", recipients, self.settings.recipients, own.recipients),
                ("form", forms, self.settings.forms, own.forms)):
            for item in ids:
                if item not in configured:
                    raise AccountError(f"unknown {kind} {item!r}; configured: "
                                       f"{', '.join(mine) or 'none'} (practice {own.id})")
                if item not in mine:
                    other = configured[item].practice
                    raise AccountError(
                        f"{kind} {item!r} belongs to practice {other!r}, not to {own.id!r}: "
                        f"a user sees one practice only; use --practice {other} or one of "
                        f"{own.id}'s: {', '.join(mine) or 'none'}")

    def _practices(self) -> list[PracticeSettings]:
        return list(self.settings.practices.values()) or [self.settings.default_practice]

    def reset(self, username: str, password: str) -> User:
        """New password; TOTP, recovery codes, sessions and API tokens are dropped, so
        the next login enrols a new authenticator (for a lost phone or a leak)."""
        user = self.require(username)
        self.check_password_rules(password, user.username)
        with self.store.transaction():
            self.store.clinicians.update(user.id, password_hash=_hasher.hash(password),
                                         totp_secret=None, totp_last_step=0)
            self.store.clinicians.recovery_codes_set(user.id, [])
            self.store.clinicians.sessions_end(user.id)
            self.store.clinicians.token_revoke(user.id)
            self.store.clinicians.login_failures_clear(self._tag(user.username))
            self.store.audit.append(AuditAction.USER_CHANGED, actor=OPERATOR,
                                    practice=user.practice,
                             detail=f"{user.actor}: password reset, TOTP to enrol again, "
                                    "sessions ended, API tokens revoked")
        return self.require(username)

    def set_disabled(self, username: str, disabled: bool) -> User:
        user = self.require(username)
        with self.store.transaction():
            self.store.clinicians.update(user.id,
                                         disabled_at=self.store_now() if disabled else None)
            ended = self.store.clinicians.sessions_end(user.id) if disabled else 0
            self.store.audit.append(AuditAction.USER_CHANGED, actor=OPERATOR,
                                    practice=user.practice,
                             detail=f"{user.actor}: {'disabled' if disabled else 'enabled'}"
                                    + (f", {ended} session(s) ended" if ended else ""))
        return self.require(username)

    def remove(self, username: str) -> None:
        user = self.require(username)
        with self.store.transaction():
            self.store.clinicians.remove(user.id)
            self.store.audit.append(AuditAction.USER_REMOVED, actor=OPERATOR, detail=user.actor,
                                    practice=user.practice)

    # -- passwords --------------------------------------------------------------------
    def check_password(self, username: str, password: str, ip: str) -> User:
        """The first login step. Raises LoginRefused (audited) on any failure."""
        username = re.sub(r"[^a-z0-9._-]", "?", username.strip().lower()[:40])
        if self.limited(username, ip):
            raise self._fail(username, ip, LoginFailure.LIMITED, count=False)
        row = self.store.clinicians.get(username=username) if username else None
        stored = row["password_hash"] if row else _dummy_hash()
        try:
            with hashing.slot():
                # tries that waited for a slot together all passed the check above
                limited = self.limited(username, ip)
                if not limited:
                    hashing.run(_hasher.verify, stored, password[:MAX_PASSWORD])
        except hashing.Busy:
            raise self._fail(username, ip, LoginFailure.BUSY, count=False) from None
        except (VerificationError, InvalidHashError):
            why = LoginFailure.WRONG_PASSWORD if row else LoginFailure.UNKNOWN_USER
            raise self._fail(username, ip, why) from None
        if limited:
            raise self._fail(username, ip, LoginFailure.LIMITED, count=False)
        if row is None:  # only with the dummy hash's own password: practically never
            raise self._fail(username, ip, LoginFailure.UNKNOWN_USER)
        user = user_from_row(row)
        if user.disabled:
            raise self._fail(username, ip, LoginFailure.DISABLED)
        if _hasher.check_needs_rehash(row["password_hash"]):
            self.store.clinicians.update(user.id, password_hash=hashing.run(_hasher.hash, password))
        return user

    def set_password(self, user: User, password: str) -> None:
        """The password an invited clinician chose (invitations.py checks the link and
        audits; the caller holds the transaction)."""
        self.check_password_rules(password, user.username)
        self.store.clinicians.update(user.id, password_hash=_hasher.hash(password))

    def change_password(self, user: User, old: str, new: str, ip: str) -> None:
        row = self.store.clinicians.get(user_id=user.id)
        stored = row["password_hash"] if row else _dummy_hash()
        try:
            with hashing.slot():
                hashing.run(_hasher.verify, stored, old[:MAX_PASSWORD])
        except hashing.Busy:
            raise self._fail(user.username, ip, LoginFailure.BUSY, count=False) from None
        except (VerificationError, InvalidHashError):
            raise self._fail(user.username, ip, LoginFailure.WRONG_OLD_PASSWORD) from None
        self.check_password_rules(new, user.username)
        with self.store.transaction():
            self.store.clinicians.update(user.id, password_hash=hashing.run(_hasher.hash, new))
            self.store.audit.append(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                                    detail="password changed")
