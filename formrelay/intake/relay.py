"""The submission use case: validate -> encrypt -> store -> enqueue.

`Relay` is shared by the web views, the CLI and the tests, which all get it from
services.build (with every step of the pipeline, see pipeline.py). It holds the
settings, the store and the keyring, takes plain data (form fields and files as
mappings of lists) and returns a `Receipt`. It fails closed: if any recipient key of
the form is unusable, or gpg fails, nothing is stored and `FormUnavailable` is raised;
if the disk refuses the ciphertext or the database write (full, read-only), nothing is
stored and `StoreNotWritable` is raised. The plaintext exists only in this call's memory
and gpg's stdin (a post without files is encrypted in process, crypto/inprocess.py);
what reaches disk is the ciphertext.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..audit_actions import AuditAction
from ..crypto import pins
from ..crypto.inprocess import InProcess
from ..crypto.keyring import CryptoError, GpgTimeout, Keyring, KeyStatus
from ..errors import FormUnavailable, InvalidSubmission, NotFound
from ..i18n import translations
from ..localtime import iso, utcnow
from ..settings import FormSpec, Settings
from ..store import Store, StoreConflict, StoreNotWritable, disk_problem
from . import forms
from .payload import IterStream, encrypted_size, payload_parts
from .pipeline import CopyReceipt, Posted, Step, Stored
from .submission import Submission, new_reference
from .tokens import TokenProblem, TokenReason, TokenUse

log = logging.getLogger("formrelay.relay")

KEY_RECHECK_SECONDS = 60


@dataclass(frozen=True)
class Receipt:
    reference: str
    form_id: str
    received_at: datetime
    delivery: str  # the effective delivery: "email", or "hold"
    size: int  # bytes of ciphertext
    copy: CopyReceipt | None  # the patient's copy, when they asked for one
    reply_code: str = ""  # with replies: the code, shown once ("-": none could be made)


class Relay:
    """Built by services.build, which gives it the store, the keyring and the steps."""

    def __init__(self, settings: Settings, *, store: Store, keyring: Keyring,
                 steps: tuple[Step[Any], ...], clock: Callable[[], datetime] = utcnow):
        self.settings = settings
        self.clock = clock
        self.store = store
        self.keyring = keyring
        self.steps = steps
        self.tmp = settings.tmp_dir
        self.tmp.mkdir(mode=0o700, exist_ok=True)
        self._keys: dict[str, KeyStatus] = {}
        self._keys_at = 0.0
        self._rechecking = False
        self._lock = threading.Lock()
        # small posts are encrypted in process, only to keys gpg has just passed
        self.engine = InProcess()

    # -- keys -------------------------------------------------------------------------
    def sync_keys(self) -> dict[str, KeyStatus]:
        """Import every configured key file and remember the result."""
        with self._lock:
            recipients = self.settings.recipients
            self._keys = self.keyring.sync(pins.file_recipients(recipients),
                                           self.settings.resolve, self.clock())
            self._keys.update(pins.browser_status(self.store, self.keyring, recipients,
                                                  self.clock()))
            self._keys_at = time.monotonic()
            self._admit(self._keys)
            for st in self._keys.values():
                if not st.usable:
                    log.error("key refused: %s", st.line())
                elif st.warning:
                    log.warning("key warning: %s", st.line())
            return dict(self._keys)

    def key_status(self) -> dict[str, KeyStatus]:
        with self._lock:
            stale = not self._keys or time.monotonic() - self._keys_at > KEY_RECHECK_SECONDS
            # One thread rechecks, the others answer from what is known: while gpg hangs,
            # one request waits for the timeout, not every one that comes in meanwhile.
            stale = stale and not (self._rechecking and self._keys)
            self._rechecking = self._rechecking or stale
        if stale:
            try:
                recipients = self.settings.recipients
                recheck = self.keyring.check_all(pins.file_recipients(recipients).values(),
                                                 self.clock(), resolve=self.settings.resolve)
                recheck.update(pins.browser_status(self.store, self.keyring, recipients,
                                                   self.clock()))
            except CryptoError as exc:
                log.error("keys cannot be checked, every form is unavailable: %s", exc)
                self.keys_failed(self.settings.recipients, str(exc))
                return dict(self._keys)
            finally:
                with self._lock:
                    self._rechecking = False
            with self._lock:
                # a key refused at import stays refused until the next import
                for rid, st in recheck.items():
                    old = self._keys.get(rid)
                    if old and not old.usable and "not imported" in st.problem:
                        recheck[rid] = old
                self._keys, self._keys_at = recheck, time.monotonic()
            self._admit(recheck)
        return dict(self._keys)

    def _admit(self, statuses: dict[str, KeyStatus]) -> None:
        """Hand the in-process engine exactly the keys gpg found usable just now, as
        gpg exports them; every other key it held is dropped (crypto/inprocess.py)."""
        passed = {st.fingerprint: st.expires for st in statuses.values() if st.usable}
        exported = b""
        if passed and self.engine.available:
            try:
                exported = self.keyring.export_public(sorted(passed))
            except CryptoError as exc:  # gpg encrypts until the next check works
                log.warning("keys not exported for in-process encryption: %s", exc)
        self.engine.admit(exported, passed)

    def fingerprints(self, spec: FormSpec) -> list[str]:
        """The keys a submission of `spec` (as `form` gives it) is encrypted to: each
        reader's pinned fingerprint (crypto/pins.py; one without a key fails closed)."""
        return pins.fingerprints(self.store, self.settings.recipients, spec.recipients)

    def keys_failed(self, recipients: Iterable[str], problem: str) -> None:
        """gpg failed for these recipients' keys: their forms show themselves unavailable
        at once, without running gpg, until the next recheck (KEY_RECHECK_SECONDS) finds
        gpg and the keys working again."""
        with self._lock:
            failed = []
            for rid in recipients:
                fpr = self.settings.recipients[rid].fingerprint
                self._keys[rid] = KeyStatus(rid, fpr, False, problem)
                failed.append(fpr)
            self.engine.drop(failed)
            self._keys_at = time.monotonic()

    def form_problems(self, spec: FormSpec) -> list[str]:
        status = self.key_status()
        return [status[r].line() for r in spec.recipients if not status[r].usable]

    def form(self, form_id: str) -> FormSpec:
        """The form as configured, with the readers its practice owner added or took off
        (read now: every process encrypts to the same readers)."""
        spec = self.settings.form(form_id)
        if spec is None:
            raise NotFound("There is no form with this address.")
        return pins.with_readers(self.store, self.settings.recipients, spec)

    def require_available(self, spec: FormSpec) -> None:
        problems = self.form_problems(spec)
        if problems:
            for p in problems:
                log.error("form %s unavailable: %s", spec.id, p)
            raise self.unavailable(spec.id)

    def unavailable(self, form_id: str = "") -> FormUnavailable:
        """The fail-closed answer: the form cannot be used now, call its practice."""
        return FormUnavailable("This form is temporarily unavailable. Please call the "
                               "practice at %(phone)s.",
                               phone=self.settings.practice_of(form_id).phone)

    # -- the use case -----------------------------------------------------------------
    def submit(self, form_id: str, lang: str, formdata: forms.Fields,
               files: forms.Files | None = None, *, ip: str = "",
               token: TokenUse | None = None) -> Receipt:
        """Validate, encrypt, store. `token` (the form's anti-replay token) is recorded in
        the submission's transaction: when another post recorded it first, TokenProblem
        rolls this submission back."""
        spec = self.form(form_id)
        self.require_available(spec)
        result = forms.validate(spec, lang, formdata, files or {})
        if not result.ok:
            log.info("form %s: rejected post (%s)", form_id, ", ".join(sorted(result.errors)))
            raise InvalidSubmission("Please correct the marked fields.", errors=result.errors)
        sub = Submission(reference=new_reference(), form_id=spec.id, form_title=spec.title,
                         lang=lang, received_at=self.clock(), answers=result.answers,
                         uploads=result.uploads)
        posted = Posted(sub, spec, formdata, ip)
        try:
            prepared = [step.prepare(posted) for step in self.steps]
        except GpgTimeout as exc:  # the patient's copy runs gpg too
            self._gpg_failed(spec, exc, ip)
            raise self.unavailable(spec.id) from None
        size, delivery, copy = self._encrypt_and_store(sub, spec, prepared, ip, token)
        log.info("form %s: received %s (%d bytes ciphertext, %d files)", spec.id,
                 sub.reference, size, len(sub.uploads))
        return Receipt(sub.reference, spec.id, sub.received_at, delivery, size, copy,
                       posted.notes.get("reply_code", ""))

    def deliver(self, sub: Submission, *, ip: str = "") -> Receipt:
        """Deliver a submission made outside the form (a patient's reply to the
        practice's answer) through the same pipeline as a post: encrypted to the form's
        recipients, mailed or held with its notice, audited."""
        spec = self.form(sub.form_id)
        self.require_available(spec)
        prepared = [step.prepare(Posted(sub, spec, {}, ip, from_form=False))
                    for step in self.steps]
        size, delivery, copy = self._encrypt_and_store(sub, spec, prepared, ip)
        return Receipt(sub.reference, spec.id, sub.received_at, delivery, size, copy)

    def _encrypt_and_store(self, sub: Submission, spec: FormSpec, prepared: list[Any],
                           ip: str, token: TokenUse | None = None
                           ) -> tuple[int, str, CopyReceipt | None]:
        try:
            fprs = self.fingerprints(spec)
        except CryptoError as exc:
            self._gpg_failed(spec, exc, ip)
            raise self.unavailable() from None
        emails = self.settings.recipient_emails(spec)
        tr = translations(spec.lang)
        labels = {k: tr.gettext(v) for k, v in
                  (("reference", "Reference"), ("received", "Received"), ("practice", "Practice"),
                   ("language", "Patient's language"), ("yes", "yes"))}
        practice = self.settings.practice_of(spec.id)

        def parts() -> Iterator[bytes]:  # the payload names the reference: made per attempt
            return payload_parts(sub, sender=practice.sender, recipients=emails,
                                 subject=f"{spec.title} - {sub.reference}", domain=self.domain,
                                 practice=practice.name, labels=labels,
                                 tz=practice.timezone, lang=spec.lang)

        for attempt in range(3):
            out = self.tmp / f"{sub.reference}.{os.getpid()}.asc"
            try:
                ciphertext = self._encrypt(parts, fprs, out, files=bool(sub.uploads))
                size = len(ciphertext) if isinstance(ciphertext, bytes) \
                    else ciphertext.stat().st_size
                delivery = self._delivery_for(sub, spec, size, ip)
                status = "queued" if delivery == "email" else "held"
                # whose it is, recorded for good: access, mail and audit chain follow
                # this record, not the configuration of the day
                row = {"reference": sub.reference, "form_id": spec.id,
                       "received_at": iso(sub.received_at), "delivery": delivery,
                       "status": status, "file_count": len(sub.uploads),
                       "practice": spec.practice, "recipients": json.dumps(spec.recipients),
                       "fingerprints": json.dumps(fprs), "keep_days": spec.retention_days}
                answers: list[CopyReceipt] = []
                stored = Stored(sub, spec, delivery, ip, tuple(fprs))

                def store_it(stored: Stored = stored, answers: list[CopyReceipt] = answers,
                             row: dict[str, Any] = row,
                             ciphertext: Path | bytes = ciphertext) -> None:
                    answers.clear()  # run again when the store retries the transaction
                    with self.store.transaction():
                        self.store.submissions.add(row, ciphertext)
                        if token is not None and not self.store.protection.use_token(
                                token.token.id, token.keep_until):
                            raise TokenProblem(TokenReason.REPLAYED, token.token)
                        self.store.audit.append(AuditAction.RECEIVED, actor="patient", ip=ip,
                                                reference=sub.reference, form_id=spec.id,
                                                detail=f"{stored.delivery}, "
                                                       f"{len(sub.uploads)} files")
                        for step, ready in zip(self.steps, prepared, strict=True):
                            answer = step.record(stored, ready)
                            if answer is not None:
                                answers.append(answer)

                # one transaction: the row, its ciphertext, the token, the audit event and
                # what each step records; run again when PostgreSQL gives it up in a
                # conflict with another, so a busy moment does not turn the patient away
                self.store.retried(store_it)
                return size, delivery, answers[0] if answers else None
            except CryptoError as exc:
                self._gpg_failed(spec, exc, ip)
                raise self.unavailable() from None
            except StoreConflict:
                if attempt == 2:
                    raise
                sub.reference = new_reference()  # a collision: encrypt again with a new one
            except OSError as exc:  # the ciphertext's temp file: the disk refused it
                why = disk_problem(exc)
                if why is None:
                    raise
                raise StoreNotWritable(f"data folder {self.tmp} cannot take the ciphertext "
                                       f"({why}); free disk space there - forms answer "
                                       "\"temporarily unavailable\" until then") from exc
            finally:
                out.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def _encrypt(self, parts: Callable[[], Iterator[bytes]], fprs: list[str], out: Path,
                 *, files: bool) -> Path | bytes:
        """The payload's ciphertext: its bytes, or `out` where gpg wrote it. A post
        without files is encrypted in process when the engine holds every key (gpg
        passed them); the rest, and anything the engine declines, by gpg."""
        if not files and self.engine.available:
            # KeyExpired (a CryptoError): refused like a gpg failure, nothing stored
            ciphertext = self.engine.encrypt(b"".join(parts()), fprs, self.clock())
            if ciphertext is not None:
                return ciphertext  # a few KB: straight into the database, no temp file
        stream = io.BufferedReader(IterStream(parts()), 1 << 16)
        self.keyring.encrypt_stream(stream, fprs, out, compress=not files)
        return out

    def _gpg_failed(self, spec: FormSpec, exc: CryptoError, ip: str) -> None:
        log.error("form %s: encryption failed, nothing stored: %s", spec.id, exc)
        self.store.audit.append(AuditAction.RECEIVED, "failed", actor="patient", ip=ip,
                                form_id=spec.id, practice=self.settings.practice_of(spec.id).id,
                                detail="encryption timed out" if isinstance(exc, GpgTimeout)
                                else "encryption failed")
        # A stuck gpg fails every form; another failure only this form's keys.
        self.keys_failed(self.settings.recipients if isinstance(exc, GpgTimeout)
                         else spec.recipients, str(exc))

    def _delivery_for(self, sub: Submission, spec: FormSpec, size: int, ip: str) -> str:
        """The form's delivery, unless its mail would be over smtp.max_message_mb: then
        held for download (oversize = "hold") or refused at the form, nothing stored."""
        limit_mb = self.settings.smtp.max_message_mb
        if spec.delivery != "email" or encrypted_size(size) <= limit_mb * 1024 * 1024:
            return spec.delivery
        if spec.oversize == "hold":
            log.info("form %s: %s too large for mail (%d bytes), held instead", spec.id,
                     sub.reference, size)
            return "hold"
        log.info("form %s: refused post, too large for mail (%d bytes ciphertext)", spec.id,
                 size)
        self.store.audit.append(AuditAction.RECEIVED, "refused", actor="patient", ip=ip,
                                form_id=spec.id, practice=self.settings.practice_of(spec.id).id,
                                detail=f"too large for mail: {size} bytes")
        message = ("Your answers and files together are too large to send by e-mail (at "
                   "most %(mb)s MB). Please make the files smaller or send fewer, and try "
                   "again.")
        field_error = translations(sub.lang).gettext(
            "Together with the other files this is too large to send.")
        raise InvalidSubmission(message, status=413, mb=limit_mb,
                                errors={u.field: [field_error] for u in sub.uploads})

    @functools.cached_property
    def domain(self) -> str:
        return self.settings.mail_domain
