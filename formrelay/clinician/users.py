"""Clinician accounts: passwords, mandatory TOTP, recovery codes, API tokens, login limits.

No Flask here: `formrelay users` and the clinician area both use `Accounts`. Passwords
are hashed with argon2id (argon2-cffi). TOTP (pyotp, 30-second steps) is enrolled at the
first login and each time step is accepted once per account, so an overheard code cannot
be replayed. The TOTP secret (and, during enrolment, the one offered) is stored only
sealed (formrelay.sealing: AES-GCM, key from FORMRELAY_SECRET_KEY, bound to the user
id), so the database file alone cannot make login codes; a secret stored in clear by an
older version is sealed at start-up and at its next use. Recovery codes and API tokens
are random, shown once and stored only as hashes. Failed logins are counted in the
database, per account and per client address, so the limit holds across worker
processes. Every change and every login is audited.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..audit_actions import AuditAction
from ..config import Settings
from ..crypto import sealing
from ..errors import UserError
from ..store import Store, iso, parse_iso

OPERATOR = "operator"  # the audit actor for `formrelay users ...`
RESERVED_NAMES = {"patient", "system", OPERATOR}
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,39}$")
MIN_PASSWORD, MAX_PASSWORD = 12, 256
FAILURE_WINDOW = timedelta(minutes=15)
TOTP_STEP_SECONDS = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
_hasher = PasswordHasher()  # argon2id, RFC 9106 "low memory" parameters (64 MiB, t=3)
TOTP_PURPOSE = b"formrelay totp-secret v1"
ENROL_PURPOSE = b"formrelay totp-enrolment v1"

log = logging.getLogger("formrelay.users")


@functools.cache
def _dummy_hash() -> str:
    """Checked when the account does not exist: a wrong name costs as long as a wrong
    password, so timing does not tell which names exist."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(UserError):
    """An account command cannot be done; the message says why and what to do."""


class LoginFailure(StrEnum):
    """Why a login step failed, as the audit log says it."""

    LIMITED = "too many failed attempts"
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
    enrolled: bool
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None

    @property
    def actor(self) -> str:
        return f"user:{self.username}"


def _user(row: dict[str, Any]) -> User:
    return User(id=row["id"], username=row["username"], email=row["email"],
                recipients=tuple(json.loads(row["recipients"])),
                forms=tuple(json.loads(row["forms"])), enrolled=bool(row["totp_secret"]),
                disabled=bool(row["disabled_at"]), created_at=parse_iso(row["created_at"]),
                last_login_at=parse_iso(row["last_login_at"]) if row["last_login_at"] else None)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _normal_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


def qr_data_uri(text: str) -> str:
    """A QR code as an SVG data: URI (the CSP allows `img-src data:`, no script needed)."""
    return str(segno.make(text, error="m").svg_data_uri(scale=5, border=2))


class Accounts:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    def now(self) -> datetime:
        return self.store.clock()

    # -- reading ----------------------------------------------------------------------
    def get(self, username: str) -> User | None:
        row = self.store.user_row(username=username.strip().lower())
        return _user(row) if row else None

    def by_id(self, user_id: int) -> User | None:
        row = self.store.user_row(user_id=user_id)
        return _user(row) if row else None

    def all(self) -> list[User]:
        return [_user(r) for r in self.store.user_rows()]

    def require(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            known = ", ".join(u.username for u in self.all()) or "none yet"
            raise AccountError(f"no user {username!r}; existing users: {known}")
        return user

    def forms_of(self, user: User) -> list[str]:
        """The forms whose submissions `user` may see: those named for the user, and
        those sent to a recipient the user is."""
        mine = set(user.recipients)
        return sorted(set(user.forms) | {fid for fid, spec in self.settings.forms.items()
                                         if mine & set(spec.recipients)})

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
            forms: list[str] | tuple[str, ...] = ()) -> User:
        username = username.strip().lower()
        if not USERNAME.match(username) or username in RESERVED_NAMES:
            raise AccountError(f"{username!r} is not a usable user name: use 2-40 lowercase "
                               "letters, digits, '.', '-' or '_' (not patient/system/operator)")
        if self.get(username):
            raise AccountError(f"user {username!r} exists already; use `formrelay users reset`")
        self._check_links(list(recipients), list(forms))
        if email and "@" not in email:
            raise AccountError(f"{email!r} is not an e-mail address")
        self.check_password_rules(password, username)
        with self.store.transaction():
            uid = self.store.user_add(username, _hasher.hash(password), email=email,
                                      recipients=list(recipients), forms=list(forms))
            self.store.audit(AuditAction.USER_CREATED, actor=OPERATOR,
                             detail=f"user:{username}; recipients "
                                    f"{','.join(recipients) or '-'}; forms "
                                    f"{','.join(forms) or '-'}")
        user = self.by_id(uid)
        assert user is not None  # noqa: S101 - just written
        return user

    def _check_links(self, recipients: list[str], forms: list[str]) -> None:
        if not recipients and not forms:
            raise AccountError("tie the user to at least one --recipient or --form, or they "
                               "would see nothing")
        for rid in recipients:
            if rid not in self.settings.recipients:
                raise AccountError(f"unknown recipient {rid!r}; configured: "
                                   f"{', '.join(self.settings.recipients) or 'none'}")
        for fid in forms:
            if fid not in self.settings.forms:
                raise AccountError(f"unknown form {fid!r}; configured: "
                                   f"{', '.join(self.settings.forms) or 'none'}")

    def reset(self, username: str, password: str) -> User:
        """New password; TOTP, recovery codes, sessions and API tokens are dropped, so
        the next login enrols a new authenticator (for a lost phone or a leak)."""
        user = self.require(username)
        self.check_password_rules(password, user.username)
        with self.store.transaction():
            self.store.user_update(user.id, password_hash=_hasher.hash(password),
                                   totp_secret=None, totp_last_step=0)
            self.store.recovery_codes_set(user.id, [])
            self.store.sessions_end(user.id)
            self.store.token_revoke(user.id)
            self.store.login_failures_clear(self._tag(user.username))
            self.store.audit(AuditAction.USER_CHANGED, actor=OPERATOR,
                             detail=f"{user.actor}: password reset, TOTP to enrol again, "
                                    "sessions ended, API tokens revoked")
        return self.require(username)

    def set_disabled(self, username: str, disabled: bool) -> User:
        user = self.require(username)
        with self.store.transaction():
            self.store.user_update(user.id, disabled_at=self.store_now() if disabled else None)
            ended = self.store.sessions_end(user.id) if disabled else 0
            self.store.audit(AuditAction.USER_CHANGED, actor=OPERATOR,
                             detail=f"{user.actor}: {'disabled' if disabled else 'enabled'}"
                                    + (f", {ended} session(s) ended" if ended else ""))
        return self.require(username)

    def remove(self, username: str) -> None:
        user = self.require(username)
        with self.store.transaction():
            self.store.user_remove(user.id)
            self.store.audit(AuditAction.USER_REMOVED, actor=OPERATOR, detail=user.actor)

    def store_now(self) -> str:
        return iso(self.now())

    # -- login ------------------------------------------------------------------------
    def _tag(self, username: str) -> str:
        """A typed name is not written down (people type their password into the name
        field, and the audit log is kept for years); this keyed tag still counts and
        shows repeated tries of the same name."""
        return hmac.new(self.settings.secret_key.encode(), username.encode(),
                        hashlib.sha256).hexdigest()[:16]

    def limited(self, username: str, ip: str) -> bool:
        since = self.now() - FAILURE_WINDOW
        s = self.settings.server
        by_name = self.store.login_failures(since, username=self._tag(username))
        return (by_name >= s.login_max_failures
                or self.store.login_failures(since, ip=ip) >= s.login_max_failures_ip)

    def _fail(self, username: str, ip: str, reason: LoginFailure, *,
              count: bool = True) -> LoginRefused:
        with self.store.transaction():
            if count:
                self.store.login_failure(self._tag(username), ip)
            known = bool(username) and self.store.user_row(username=username) is not None
            self.store.audit(AuditAction.LOGIN, "failed",
                             actor=f"user:{username}" if known else "unknown", ip=ip,
                             detail=reason.value if known else
                             f"{reason} (name tag {self._tag(username)})")
        return LoginRefused(reason)

    def check_password(self, username: str, password: str, ip: str) -> User:
        """The first login step. Raises LoginRefused (audited) on any failure."""
        username = re.sub(r"[^a-z0-9._-]", "?", username.strip().lower()[:40])
        if self.limited(username, ip):
            raise self._fail(username, ip, LoginFailure.LIMITED, count=False)
        row = self.store.user_row(username=username) if username else None
        try:
            _hasher.verify(row["password_hash"] if row else _dummy_hash(),
                           password[:MAX_PASSWORD])
        except (VerificationError, InvalidHashError):
            why = LoginFailure.WRONG_PASSWORD if row else LoginFailure.UNKNOWN_USER
            raise self._fail(username, ip, why) from None
        if row is None:  # only with the dummy hash's own password: practically never
            raise self._fail(username, ip, LoginFailure.UNKNOWN_USER)
        user = _user(row)
        if user.disabled:
            raise self._fail(username, ip, LoginFailure.DISABLED)
        if _hasher.check_needs_rehash(row["password_hash"]):
            self.store.user_update(user.id, password_hash=_hasher.hash(password))
        return user

    def _totp_step(self, secret: str, code: str) -> int | None:
        """The time step `code` belongs to (now, or one step either side), or None."""
        code = re.sub(r"\s", "", code)
        if not re.fullmatch(r"\d{6}", code):
            return None
        totp = pyotp.TOTP(secret)
        step = int(self.now().timestamp()) // TOTP_STEP_SECONDS
        for s in (step - 1, step, step + 1):
            if hmac.compare_digest(totp.generate_otp(s), code):
                return s
        return None

    def second_factor(self, user: User, code: str, ip: str) -> str:
        """The second login step: a TOTP code (each accepted once) or a recovery code.
        Returns how the user logged in; raises LoginRefused (audited)."""
        if self.limited(user.username, ip):
            raise self._fail(user.username, ip, LoginFailure.LIMITED, count=False)
        row = self.store.user_row(user_id=user.id)
        if row is None or row["disabled_at"] or not row["totp_secret"]:
            raise self._fail(user.username, ip, LoginFailure.NOT_ENROLLED)
        secret = self._open_totp(row)
        step = self._totp_step(secret, code) if secret else None
        if step is not None:
            if not self.store.totp_claim_step(user.id, step):
                raise self._fail(user.username, ip, LoginFailure.CODE_USED)
            method = "TOTP"
        elif len(_normal_code(code)) == 16 and \
                self.store.recovery_code_use(user.id, sha256(_normal_code(code))):
            method = f"recovery code ({self.store.recovery_codes_left(user.id)} left)"
        else:
            why = LoginFailure.WRONG_CODE if secret else LoginFailure.UNSEALABLE
            raise self._fail(user.username, ip, why)
        self.login_ok(user, ip, method)
        return method

    # -- the TOTP secret at rest (sealed) ---------------------------------------------
    def _totp_aad(self, user_id: int) -> bytes:
        return f"totp|{user_id}".encode()

    def _seal_totp(self, user_id: int, secret: str) -> str:
        return sealing.seal_text(self.settings.secret_key, TOTP_PURPOSE, secret,
                                 self._totp_aad(user_id))

    def _open_totp(self, row: dict[str, Any]) -> str | None:
        """The user's TOTP secret, or None when it cannot be opened (a changed
        FORMRELAY_SECRET_KEY: the operator is told; recovery codes still work)."""
        stored = str(row["totp_secret"] or "")
        if not sealing.is_sealed_text(stored):
            self._reseal(row["id"], stored)  # stored in clear by an older version
            return stored
        try:
            return sealing.unseal_text(self.settings.secret_key, TOTP_PURPOSE, stored,
                                       self._totp_aad(row["id"]))
        except sealing.Unsealable:
            log.error("user %s: the stored TOTP secret cannot be opened (was "
                      "FORMRELAY_SECRET_KEY changed?); restore the old key, or run "
                      "`formrelay users reset %s` so the next login enrols again",
                      row["username"], row["username"])
            return None

    def _reseal(self, user_id: int, clear: str) -> None:
        self.store.totp_reseal(user_id, clear, self._seal_totp(user_id, clear))

    def seal_stored_secrets(self) -> int:
        """Seal TOTP secrets an older version stored in clear (run at start-up);
        returns how many. The write-ahead log that held them is then truncated."""
        clear = [(r["id"], r["totp_secret"]) for r in self.store.user_rows()
                 if r["totp_secret"] and not sealing.is_sealed_text(r["totp_secret"])]
        for uid, secret in clear:
            self._reseal(uid, secret)
        if clear:
            self.store.truncate_wal()
            log.info("sealed the TOTP secrets of %d account(s) stored in clear", len(clear))
        return len(clear)

    def seal_enrolment(self, user: User, secret: str) -> str:
        """The secret offered at enrolment, as the session (in the database) keeps it."""
        return sealing.seal_text(self.settings.secret_key, ENROL_PURPOSE, secret,
                                 f"enrol|{user.id}".encode())

    def open_enrolment(self, user: User, sealed: str) -> str | None:
        try:
            return sealing.unseal_text(self.settings.secret_key, ENROL_PURPOSE, sealed,
                                       f"enrol|{user.id}".encode())
        except sealing.Unsealable:
            return None

    def login_ok(self, user: User, ip: str, method: str) -> None:
        with self.store.transaction():
            self.store.user_update(user.id, last_login_at=self.store_now())
            self.store.login_failures_clear(self._tag(user.username))
            self.store.audit(AuditAction.LOGIN, actor=user.actor, ip=ip, detail=method)

    # -- TOTP enrolment and recovery codes --------------------------------------------
    @staticmethod
    def new_totp_secret() -> str:
        return pyotp.random_base32(32)

    def totp_uri(self, user: User, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(
            name=user.username, issuer_name=f"formrelay {self.settings.server.practice_name}")

    def enrol(self, user: User, secret: str, code: str, ip: str) -> list[str]:
        """Confirm the authenticator with its first code; returns the recovery codes
        (shown once). Raises LoginRefused (audited) for a wrong code."""
        if self.limited(user.username, ip):
            raise self._fail(user.username, ip, LoginFailure.LIMITED, count=False)
        step = self._totp_step(secret, code)
        if step is None:
            raise self._fail(user.username, ip, LoginFailure.WRONG_ENROL_CODE)
        with self.store.transaction():
            self.store.user_update(user.id, totp_secret=self._seal_totp(user.id, secret),
                                   totp_last_step=step)
            codes = self._new_recovery_codes(user)
            self.store.audit(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                             detail="TOTP enrolled, recovery codes issued")
        self.login_ok(user, ip, "TOTP (enrolment)")
        return codes

    def _new_recovery_codes(self, user: User) -> list[str]:
        codes = ["".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
                 for _ in range(RECOVERY_CODES)]
        self.store.recovery_codes_set(user.id, [sha256(c) for c in codes])
        return ["-".join(c[i:i + 4] for i in range(0, 16, 4)) for c in codes]

    def renew_recovery_codes(self, user: User, ip: str) -> list[str]:
        with self.store.transaction():
            codes = self._new_recovery_codes(user)
            self.store.audit(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                             detail="new recovery codes issued")
        return codes

    def recovery_codes_left(self, user: User) -> int:
        return self.store.recovery_codes_left(user.id)

    def change_password(self, user: User, old: str, new: str, ip: str) -> None:
        row = self.store.user_row(user_id=user.id)
        try:
            _hasher.verify(row["password_hash"] if row else _dummy_hash(), old[:MAX_PASSWORD])
        except (VerificationError, InvalidHashError):
            raise self._fail(user.username, ip, LoginFailure.WRONG_OLD_PASSWORD) from None
        self.check_password_rules(new, user.username)
        with self.store.transaction():
            self.store.user_update(user.id, password_hash=_hasher.hash(new))
            self.store.audit(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                             detail="password changed")

    # -- API tokens -------------------------------------------------------------------
    def new_token(self, user: User, name: str, ip: str) -> str:
        name = re.sub(r"\s+", " ", name).strip()[:60] or "API"
        token = "fr_" + secrets.token_urlsafe(32)
        with self.store.transaction():
            tid = self.store.token_add(user.id, name, sha256(token), token[:7] + "…")
            self.store.audit(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                             detail=f"API token #{tid} ({name}) created")
        return token

    def tokens(self, user: User) -> list[dict[str, Any]]:
        return self.store.token_rows(user.id)

    def revoke_token(self, user: User, token_id: int, ip: str) -> bool:
        with self.store.transaction():
            done = self.store.token_revoke(user.id, token_id) == 1
            if done:
                self.store.audit(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                                 detail=f"API token #{token_id} revoked")
        return done

    def user_for_token(self, token: str) -> tuple[User, int] | None:
        """The active user behind an API token and the token's id, or None."""
        if not token.startswith("fr_") or len(token) > 100:
            return None
        owner = self.store.token_owner(sha256(token))
        if owner is None:
            return None
        user = self.by_id(owner[1])
        if user is None or user.disabled:
            return None
        return user, owner[0]
