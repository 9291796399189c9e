"""The second factor: mandatory TOTP, recovery codes and the enrolment QR code.

TOTP (pyotp, 30-second steps) is enrolled at the first login and each time step is
accepted once per account, so an overheard code cannot be replayed. The TOTP secret
(and, during enrolment, the one offered) is stored only sealed (formrelay.crypto.sealing:
AES-GCM, key from FORMRELAY_SECRET_KEY, bound to the user id), so the database file
alone cannot make login codes; a secret stored in clear by an older version is sealed at
start-up and at its next use. Recovery codes are random, shown once and stored only as
hashes.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from typing import Any

import pyotp
import segno

from ..audit_actions import AuditAction
from ..crypto import sealing
from .login import LoginGuard
from .user import LoginFailure, User, sha256

TOTP_STEP_SECONDS = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
TOTP_PURPOSE = b"formrelay totp-secret v1"
ENROL_PURPOSE = b"formrelay totp-enrolment v1"

log = logging.getLogger("formrelay.users")  # the log channel operators filter on


def _normal_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


def qr_data_uri(text: str) -> str:
    """A QR code as an SVG data: URI (the CSP allows `img-src data:`, no script needed)."""
    return str(segno.make(text, error="m").svg_data_uri(scale=5, border=2))


class SecondFactor(LoginGuard):
    """The second login step, TOTP enrolment and recovery codes (part of `Accounts`)."""

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
        row = self.store.clinicians.get(user_id=user.id)
        if row is None or row["disabled_at"] or not row["totp_secret"]:
            raise self._fail(user.username, ip, LoginFailure.NOT_ENROLLED)
        secret = self._open_totp(row)
        step = self._totp_step(secret, code) if secret else None
        if step is not None:
            if not self.store.clinicians.totp_claim_step(user.id, step):
                raise self._fail(user.username, ip, LoginFailure.CODE_USED)
            method = "TOTP"
        elif len(_normal_code(code)) == 16 and \
                self.store.clinicians.recovery_code_use(user.id, sha256(_normal_code(code))):
            method = f"recovery code ({self.store.clinicians.recovery_codes_left(user.id)} left)"
        else:
            why = LoginFailure.WRONG_CODE if secret else LoginFailure.UNSEALABLE
            raise self._fail(user.username, ip, why)
        self.login_ok(user, ip, method)
        return method

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
        self.store.clinicians.totp_reseal(user_id, clear, self._seal_totp(user_id, clear))

    def seal_stored_secrets(self) -> int:
        """Seal TOTP secrets an older version stored in clear (run at start-up);
        returns how many. The write-ahead log that held them is then truncated."""
        clear = [(r["id"], r["totp_secret"]) for r in self.store.clinicians.rows()
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

    @staticmethod
    def new_totp_secret() -> str:
        return pyotp.random_base32(32)

    def totp_uri(self, user: User, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(
            name=user.username,
            issuer_name=f"formrelay {self.settings.practice_or_default(user.practice).name}")

    def enrol(self, user: User, secret: str, code: str, ip: str) -> list[str]:
        """Confirm the authenticator with its first code; returns the recovery codes
        (shown once). Raises LoginRefused (audited) for a wrong code."""
        if self.limited(user.username, ip):
            raise self._fail(user.username, ip, LoginFailure.LIMITED, count=False)
        step = self._totp_step(secret, code)
        if step is None:
            raise self._fail(user.username, ip, LoginFailure.WRONG_ENROL_CODE)
        with self.store.transaction():
            self.store.clinicians.update(user.id, totp_secret=self._seal_totp(user.id, secret),
                                         totp_last_step=step)
            codes = self._new_recovery_codes(user)
            self.store.audit.append(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                                    detail="TOTP enrolled, recovery codes issued")
        self.login_ok(user, ip, "TOTP (enrolment)")
        return codes

    def _new_recovery_codes(self, user: User) -> list[str]:
        codes = ["".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
                 for _ in range(RECOVERY_CODES)]
        self.store.clinicians.recovery_codes_set(user.id, [sha256(c) for c in codes])
        return ["-".join(c[i:i + 4] for i in range(0, 16, 4)) for c in codes]

    def renew_recovery_codes(self, user: User, ip: str) -> list[str]:
        with self.store.transaction():
            codes = self._new_recovery_codes(user)
            self.store.audit.append(AuditAction.USER_CHANGED, actor=user.actor, ip=ip,
                                    detail="new recovery codes issued")
        return codes

    def recovery_codes_left(self, user: User) -> int:
        return self.store.clinicians.recovery_codes_left(user.id)
