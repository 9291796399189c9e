"""The patient's confirmation copy: a PDF behind a link plus a pickup code.

A patient who ticks "send me a copy" gets, on the thank-you page, a short pickup code
and a "download now" button (15 minutes, no code needed), and by mail a link. The
link is `<base_url>/copy/<id>.<signature>#<secret>`:

* `<id>` names the copy's row; the signature (itsdangerous, keyed by
  FORMRELAY_SECRET_KEY) refuses altered or made-up links before the database is asked;
* `<secret>` (256 bits from `secrets`) is in the URL *fragment*, which browsers never
  send to a server: it is in no access log (proxy or gunicorn), no error report and no
  `Referer`. A small script (static/copy.js) copies it into the pickup form, which is
  POSTed. The copy's AES-GCM key, the check value and the key that authenticates the
  pickup code are all derived from it (HKDF); the database keeps only the check value.

So the database alone cannot open a copy (no key), cannot test pickup codes (they are
authenticated with a key derived from the secret), and a mail sent to a mistyped
address leaks nothing without the code, which is never mailed. Five wrong codes lock a
copy, which deletes it; so do expiry (default 7 days, at most 30) and the last allowed
download (default 3). This module has no Flask: the web layer, the worker and tests
call it directly; `CopyStep` (step.py) is its part of the relay's pipeline.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from itsdangerous import BadSignature, Signer

from ..audit_actions import AuditAction
from ..errors import InvalidSubmission, UserError
from ..i18n import gettext
from ..intake.addresses import header_problem
from ..intake.submission import Submission
from ..localtime import iso, parse_iso
from ..settings import COPY_MAX_DOWNLOADS as MAX_DOWNLOADS
from ..settings import COPY_MAX_EXPIRY_DAYS as MAX_EXPIRY_DAYS
from ..settings import FormSpec, Settings
from ..store import Store
from .secret import SECRET_BYTES, b64d, b64e, code_mac, derive, new_code, normalize_code, sha256
from .values import CopyInfo, OpenedCopy, PendingCopy

if TYPE_CHECKING:
    from ..intake.forms import Fields


log = logging.getLogger("formrelay.copies")

MAX_FAILURES = 5
QUICK_MINUTES = 15  # the thank-you page's "download now" without the code
FORGET_AFTER_DAYS = 30  # a deleted copy's row (no content) is kept this long, then dropped


class CopyState(StrEnum):
    """Why a copy cannot be given. The last three leave it available: the pickup form
    is shown again; the others end it (the stored states are expired, used_up, locked)."""

    ALTERED = "altered"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED_UP = "used_up"
    LOCKED = "locked"
    WRONG_CODE = "wrong_code"
    CODE_NEEDED = "code_needed"
    QUICK_ENDED = "quick_ended"


class CopyRefused(UserError):
    """The copy cannot be given; `state` says why. The copy views choose the page shown
    to the patient (web/copy.py); the message here is only a fallback."""

    def __init__(self, state: CopyState, *, tries_left: int = 0, lang: str = "",
                 expires_at: datetime | None = None, form_id: str = ""):
        super().__init__("This link does not work")
        self.form_id = form_id  # its practice names itself on the page
        self.state = state
        self.tries_left = tries_left
        self.lang = lang
        self.expires_at = expires_at


class Copies:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], datetime]):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.signer = Signer(settings.secret_key, salt="formrelay.copy-link")
        s = settings.server
        self.expiry = timedelta(days=min(max(1, s.copy_expiry_days), MAX_EXPIRY_DAYS))
        self.max_downloads = min(max(1, s.copy_downloads), MAX_DOWNLOADS)

    # -- links --------------------------------------------------------------------------
    def token(self, copy_id: str) -> str:
        return self.signer.sign(copy_id).decode("ascii")

    def link(self, copy_id: str, secret: bytes) -> str:
        return f"{self.settings.server.base_url.rstrip('/')}/copy/{self.token(copy_id)}" \
               f"#{b64e(secret)}"

    def copy_id(self, token: str) -> str:
        """The copy id in a link token; CopyRefused('altered') if it was changed."""
        token = token.split("#", 1)[0].strip()
        try:
            cid = self.signer.unsign(token).decode("ascii")
        except (BadSignature, UnicodeDecodeError, ValueError):
            raise CopyRefused(CopyState.ALTERED) from None
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", cid):
            raise CopyRefused(CopyState.ALTERED)
        return cid

    # -- issuing (called from the relay's hooks) ----------------------------------------
    def wanted(self, spec: FormSpec, formdata: Fields) -> bool:
        return bool(spec.patient_copy and _first(formdata, "_copy"))

    def email_field(self, spec: FormSpec) -> str:
        """The form's own e-mail question, or '' (then the copy block asks for one)."""
        return next((f.name for f in spec.fields if f.type == "email"), "")

    def recipient(self, sub: Submission, spec: FormSpec, formdata: Fields) -> str:
        """The patient's address for the link; InvalidSubmission next to the field."""
        from email_validator import EmailNotValidError, validate_email

        field = self.email_field(spec)
        if field:
            value = next((str(a.value) for a in sub.answers if a.name == field), "")
            where = field
        else:
            value, where = _first(formdata, "_copy_email").strip(), "_copy_email"
        if not value:
            raise InvalidSubmission(
                "Please correct the marked fields.",
                errors={where: [gettext(sub.lang, "Fill in your e-mail address to receive the "
                                                  "link to your copy, or untick the copy box.")]})
        try:
            address = str(validate_email(value, check_deliverability=False).normalized)
        except EmailNotValidError:
            raise InvalidSubmission(
                "Please correct the marked fields.",
                errors={where: [gettext(sub.lang, "Enter a valid e-mail address, "
                                                  "e.g. name@example.nl.")]}) from None
        if header_problem(address):  # the link mail could never be built
            raise InvalidSubmission(
                "Please correct the marked fields.",
                errors={where: [gettext(sub.lang, "This e-mail address cannot be used. Type "
                                                  "it plainly, e.g. name@example.nl.")]})
        return address

    def prepare(self, sub: Submission, spec: FormSpec, formdata: Fields, *,
                reply_code: str = "") -> PendingCopy | None:
        """Build and encrypt the PDF from the plaintext, if the patient asked for it;
        with `reply_code` (a form with replies) the PDF prints it."""
        if not self.wanted(spec, formdata):
            return None
        email = self.recipient(sub, spec, formdata)
        pgp_key = ""
        if spec.patient_copy_pgp and _first(formdata, "_copy_key").strip():
            from .pgp_copy import check_patient_key

            pgp_key = check_patient_key(_first(formdata, "_copy_key"), sub.lang)
        now = self.clock()
        pending = PendingCopy(
            copy_id=b64e(secrets.token_bytes(16)), secret=secrets.token_bytes(SECRET_BYTES),
            code=new_code(), grant=b64e(secrets.token_bytes(16)), email=email, lang=sub.lang,
            reference=sub.reference, ciphertext=b"", expires_at=now + self.expiry,
            quick_until=now + timedelta(minutes=QUICK_MINUTES), pgp_key=pgp_key,
            reply_code=reply_code)
        self._encrypt(pending, sub)
        return pending

    def _encrypt(self, pending: PendingCopy, sub: Submission) -> None:
        from .pdf import Practice, copy_pdf

        p = self.settings.practice_of(sub.form_id)
        pdf = copy_pdf(sub, Practice(p.name, p.phone, p.email),
                       expires=pending.expires_at, tz=p.timezone,
                       reply_code=pending.reply_code)
        key = derive(pending.secret, "key", pending.copy_id)
        nonce = secrets.token_bytes(12)
        pending.ciphertext = nonce + AESGCM(key).encrypt(nonce, pdf, pending.copy_id.encode())
        pending.reference = sub.reference
        if pending.pgp_key:
            from .pgp_copy import pgp_copy

            pending.pgp_ciphertext = pgp_copy(pending.pgp_key, pdf, sub, self.settings,
                                              self.store)

    def record(self, sub: Submission, spec: FormSpec, pending: PendingCopy,
               ip: str = "") -> str:
        """Store the copy and queue its mail, inside the submission's transaction.
        Returns the link token."""
        if pending.reference != sub.reference:  # the relay drew a new reference
            self._encrypt(pending, sub)
        now = self.clock()
        self.store.copies.add({
            "id": pending.copy_id, "reference": sub.reference, "form_id": spec.id,
            "lang": pending.lang, "check_hash": derive(pending.secret, "check",
                                                         pending.copy_id).hex(),
            "code_mac": code_mac(pending.secret, pending.copy_id, pending.code),
            "quick_hash": sha256(pending.grant), "quick_until": iso(pending.quick_until),
            "created_at": iso(now), "expires_at": iso(pending.expires_at),
            "max_downloads": self.max_downloads, "ciphertext": pending.ciphertext,
            "practice": spec.practice})
        self.store.audit.append(AuditAction.COPY_ISSUED, actor="patient", ip=ip,
                                reference=sub.reference,
                         form_id=spec.id, detail=f"{self.max_downloads} downloads until "
                                                 f"{iso(pending.expires_at)[:16]}Z")
        from .link_mail import queue_mails

        queue_mails(self, pending, sub, spec)
        return self.token(pending.copy_id)

    # -- opening ------------------------------------------------------------------------
    def info(self, token: str) -> CopyInfo:
        """The state of the copy a link names; CopyRefused when it cannot be opened."""
        cid = self.copy_id(token)
        row = self.store.copies.get(cid)
        if row is None:
            raise CopyRefused(CopyState.UNKNOWN)
        return self._live(row)

    def _live(self, row: dict[str, Any]) -> CopyInfo:
        expires = parse_iso(row["expires_at"])
        lang = row["lang"]
        if row["state"] == "active" and self.clock() >= expires:
            self.expire(row["id"])
            row["state"] = "expired"
        if row["state"] != "active":
            raise CopyRefused(CopyState(row["state"]), lang=lang, expires_at=expires,
                              form_id=row["form_id"])
        return CopyInfo(row["id"], row["reference"], row["form_id"], lang, expires,
                        row["max_downloads"] - row["downloads"],
                        MAX_FAILURES - row["failures"])

    def open(self, token: str, key: str, *, code: str = "", grant: str = "",
             ip: str = "") -> OpenedCopy:
        """Check the link secret, then the pickup code (or the thank-you page's grant),
        count the download and return the decrypted PDF."""
        info = self.info(token)
        cid, ref, fid, lang = info.copy_id, info.reference, info.form_id, info.lang
        row = self.store.copies.get(cid) or {}
        try:
            secret = b64d(key)
        except ValueError:
            secret = b""
        if len(secret) != SECRET_BYTES or not hmac.compare_digest(
                derive(secret, "check", cid).hex(), row.get("check_hash", "")):
            self.store.audit.append(AuditAction.COPY_OPENED, "refused", actor="patient", ip=ip,
                                    reference=ref, form_id=fid,
                                    detail="link secret missing or altered")
            raise CopyRefused(CopyState.ALTERED, lang=lang, form_id=fid)
        if grant:
            fresh = self.clock() < parse_iso(row["quick_until"])
            if not (fresh and hmac.compare_digest(sha256(grant), row["quick_hash"])):
                raise CopyRefused(CopyState.QUICK_ENDED, lang=lang, form_id=fid,
                                  tries_left=info.tries_left)
        elif not normalize_code(code):
            raise CopyRefused(CopyState.CODE_NEEDED, lang=lang, form_id=fid,
                              tries_left=info.tries_left)
        elif not hmac.compare_digest(code_mac(secret, cid, code), row["code_mac"]):
            self._wrong_code(info, ip)
        with self.store.transaction():
            taken = self.store.copies.take(cid, self.clock())
            if taken is None:
                raise CopyRefused(CopyState.USED_UP, lang=lang, form_id=fid)
            ciphertext, downloads, used_up = taken
            how = "pickup code" if not grant else "thank-you page"
            self.store.audit.append(AuditAction.COPY_OPENED, actor="patient", ip=ip, reference=ref,
                                    form_id=fid,
                                    detail=f"download {downloads} of {row['max_downloads']} "
                                           f"({how})")
            if used_up:
                self.store.audit.append(AuditAction.COPY_DELETED, reference=ref, form_id=fid,
                                        detail="all downloads used")
        try:
            pdf = AESGCM(derive(secret, "key", cid)).decrypt(ciphertext[:12], ciphertext[12:],
                                                             cid.encode())
        except InvalidTag:  # the stored ciphertext was changed: never hand out garbage
            log.error("copy for %s does not decrypt: the stored ciphertext was altered", ref)
            raise CopyRefused(CopyState.ALTERED, lang=lang, form_id=fid) from None
        left = row["max_downloads"] - downloads
        return OpenedCopy(pdf, f"{ref.lower()}.pdf",
                          CopyInfo(cid, ref, fid, lang, info.expires_at, left, info.tries_left))

    def _wrong_code(self, info: CopyInfo, ip: str) -> None:
        with self.store.transaction():
            failures, locked = self.store.copies.wrong_code(info.copy_id, MAX_FAILURES,
                                                            self.clock())
            self.store.audit.append(AuditAction.COPY_WRONG_CODE, "refused", actor="patient", ip=ip,
                                    reference=info.reference, form_id=info.form_id,
                                    detail=f"attempt {failures} of {MAX_FAILURES}")
            if locked:
                self.store.audit.append(AuditAction.COPY_LOCKED, "refused",
                                        reference=info.reference,
                                 form_id=info.form_id, detail=f"{MAX_FAILURES} wrong codes")
                self.store.audit.append(AuditAction.COPY_DELETED, reference=info.reference,
                                        form_id=info.form_id, detail="locked")
        if locked:
            raise CopyRefused(CopyState.LOCKED, lang=info.lang, form_id=info.form_id)
        raise CopyRefused(CopyState.WRONG_CODE, lang=info.lang, form_id=info.form_id,
                          tries_left=MAX_FAILURES - failures)

    # -- clean-up -----------------------------------------------------------------------
    def expire(self, copy_id: str | None = None) -> int:
        """Delete the content of copies past their date (one, or all); returns how many."""
        now = self.clock()
        with self.store.transaction():
            gone = self.store.copies.expire(now, copy_id)
            for row in gone:
                self.store.audit.append(AuditAction.COPY_EXPIRED, reference=row["reference"],
                                        form_id=row["form_id"],
                                        detail=f"{row['downloads']} downloads")
                self.store.audit.append(AuditAction.COPY_DELETED, reference=row["reference"],
                                        form_id=row["form_id"], detail="expired")
        return len(gone)

    def purge(self) -> int:
        """Expire what is due and forget old rows of deleted copies (for the worker)."""
        n = self.expire()
        self.store.copies.forget(self.clock() - timedelta(days=FORGET_AFTER_DAYS))
        return n


def _first(fields: Fields, name: str) -> str:
    """A control field's first value, as a browser posts it ('' when absent)."""
    return str(next(iter(fields.get(name) or []), "") or "")
