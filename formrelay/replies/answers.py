"""The practice's answer to a patient, from reply code to reading (no Flask).

A form with `replies = true` gives the patient, on the thank-you page (and in the copy
PDF), their reference and a reply code, shown once (`new_pair` and `record_pair`, run by
the relay's reply step, step.py). A clinician of the submission's practice whose key it
was sent to writes an answer, with optional files: encrypted in the clinician's browser
to the submission's reply key (`answer_sealed`: the server checks the ciphertext, never
sees the text), or without JavaScript by the server at once (`answer`, letter.py),
which then forgets it. The patient, if the form had
their address, gets a mail that says only "the practice answered" and where to read it.
On /r/ the patient enters the reference and the code (`read`). Five wrong codes lock
the answer (its key and text are deleted), as the copy pickup does; after
server.reply_expiry_days (default 30) it is deleted too (`expire`). Every step is
audited; no message tells whether a reference exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag

from ..audit_actions import AuditAction
from ..clinician import hashing
from ..clinician.inbox import REFERENCE
from ..clinician.user import User
from ..crypto import pins, sealing
from ..errors import UserError
from ..i18n import gettext
from ..intake.relay import Relay
from ..intake.submission import Answer, Submission, new_reference
from ..localtime import iso, parse_iso
from ..mail.kinds import BuildError, MailKind, sealed_recipient
from ..settings import FormSpec, Settings
from ..store import OutboxMail, Store
from . import letter, secret

MAX_FAILURES = 5
MAIL_KIND = "reply_notice"
MAX_ANSWER = 20_000  # characters
PURPOSE = b"formrelay outbox reply-notice v1"
EMAIL_PURPOSE = b"formrelay reply email v1"


class ReplyState(StrEnum):
    NONE = "none"  # unknown reference, expired, locked: one answer for all
    WRONG_CODE = "wrong_code"
    LOCKED = "locked"
    NOT_YET = "not_yet"
    BUSY = "busy"  # every hashing slot of this worker taken: try again soon (429)


class ReplyRefused(UserError):
    def __init__(self, state: ReplyState, *, tries_left: int = 0, practice: str = ""):
        super().__init__("No answer can be shown")
        self.state = state
        self.tries_left = tries_left
        self.practice = practice


class Answers:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], datetime]):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.expiry = timedelta(days=max(1, settings.server.reply_expiry_days))

    def issue(self, reference: str, form_id: str, email: str, lang: str) -> str:
        """Make the submission's reply key, for the form's readers now; returns the code,
        shown once. hashing.Busy when this worker's hashing slots stay taken (a flood of
        posts or checks); CryptoError when a reader has no key."""
        spec = self.settings.form(form_id)
        if spec is None:
            raise UserError("No such form.")
        spec = pins.with_readers(self.store, self.settings.recipients, spec)
        fprs = pins.fingerprints(self.store, self.settings.recipients, spec.recipients)
        pair = self.new_pair()
        self.record_pair(reference, spec, fprs, email, lang, pair)
        return pair.code

    def new_pair(self) -> secret.NewPair:
        """A new reply code and its key pair, before the submission is stored (the
        patient's copy prints the code). hashing.Busy when this worker's hashing slots
        stay taken (a flood of posts or checks)."""
        code = secret.new_code()
        # an Argon2id run: off the event loop, in one of the worker's hashing slots
        with hashing.slot():
            return hashing.run(secret.make_pair, code)

    def record_pair(self, reference: str, spec: FormSpec, fingerprints: Sequence[str],
                    email: str, lang: str, pair: secret.NewPair) -> None:
        """Store the reply key made by `new_pair` for the submission stored as
        `reference` (inside the submission's transaction, when the relay runs it). Who
        may answer is who the submission was encrypted to: `spec` as the relay used it
        (with the readers its practice owner chose) and the keys, as pinned then."""
        form_id = spec.id
        now = self.clock()
        sealed = sealing.seal_text(self.settings.secret_key, EMAIL_PURPOSE, email,
                                   reference.encode()) if email else ""
        practice = self.settings.practice_of(form_id).id
        with self.store.transaction():
            self.store.replies.add({
                "reference": reference, "practice": practice, "form_id": form_id,
                "recipients": list(fingerprints),
                "recipient_ids": list(spec.recipients), "lang": lang,
                "salt": pair.salt, "public_key": pair.public,
                "wrapped_key": pair.wrapped(self.settings.secret_key, reference),
                "email_sealed": sealed, "created_at": iso(now),
                "expires_at": iso(now + self.expiry)})
            self.store.audit.append(AuditAction.REPLY_OFFERED, actor="patient", reference=reference,
                                    form_id=form_id, practice=practice,
                                    detail="mail address given" if email else "no mail address")

    # -- the clinician ------------------------------------------------------------------
    def may_answer(self, user: User, reference: str) -> dict[str, Any] | None:
        row = self.store.replies.get(reference) if REFERENCE.match(reference) else None
        if row is None or row["state"] != "waiting" or row["practice"] != user.practice:
            return None
        if set(user.recipients) & set(row["recipient_ids"]):  # as recorded: a key rotates
            return row
        # a row from before ids were recorded: by a key file's fingerprint (a browser
        # recipient has none configured, and "" matches nothing)
        fprs = {self.settings.recipients[r].fingerprint for r in user.recipients
                if r in self.settings.recipients} - {""}
        return row if fprs & set(row["recipients"]) else None

    def answer(self, user: User, reference: str, text: str,
               files: list[tuple[str, bytes]] | None = None, ip: str = "") -> None:
        """Encrypt the answer (text and files) on the server, store it, queue the mail:
        the way without JavaScript, and the CLI's. The plaintext is in this memory and
        gpg's pipe for the time it takes to encrypt, never on disk."""
        text = text.strip()
        if not text or len(text) > MAX_ANSWER:
            raise UserError("Write an answer of 1 to %(n)s characters.", n=MAX_ANSWER)
        attached = letter.check_files(files or [])
        row = self._answerable(user, reference)
        public = bytes(row["public_key"])
        if secret.is_legacy(public):  # a reply key made before answers were OpenPGP
            if attached:
                raise UserError("This answer can only be text: its reply code was made "
                                "before answers could carry files.")
            sealed = secret.seal_answer(public, text, reference)
        else:
            sealed = letter.seal(public, letter.compose(text, attached),
                                 self.settings.tmp_dir,
                                 self.settings.server.gpg_timeout_seconds)
        self._store(user, row, reference, sealed, ip,
                    f"{len(sealed)} bytes sealed on the server, {len(attached)} files")

    def answer_sealed(self, user: User, reference: str, ciphertext: bytes,
                      ip: str = "") -> None:
        """Store an answer the clinician's browser encrypted to the reply key: the
        server checks its packets (one message, to exactly that key) and never sees it
        in clear."""
        row = self._answerable(user, reference)
        public = bytes(row["public_key"])
        if secret.is_legacy(public):
            raise UserError("This answer can only be encrypted on the server: reload the "
                            "page without JavaScript.", status=422)
        sealed = letter.check_sealed(public, ciphertext)
        self._store(user, row, reference, sealed, ip,
                    f"{len(sealed)} bytes sealed in the browser")

    def certificate(self, row: dict[str, Any]) -> str:
        """The reply key's armoured certificate, for the clinician's browser ('' for a
        legacy key, which only the server path answers)."""
        public = bytes(row["public_key"])
        return "" if secret.is_legacy(public) else public.decode("ascii")

    def _answerable(self, user: User, reference: str) -> dict[str, Any]:
        row = self.may_answer(user, reference)
        if row is None:
            raise UserError("This submission cannot be answered (any more).", status=404)
        return row

    def _store(self, user: User, row: dict[str, Any], reference: str, sealed: bytes,
               ip: str, detail: str) -> None:
        with self.store.transaction():
            if not self.store.replies.store_answer(reference, sealed, f"user:{user.username}",
                                                   self.clock()):
                raise UserError("This submission cannot be answered (any more).", status=404)
            self.store.audit.append(AuditAction.REPLY_ANSWERED, actor=f"user:{user.username}",
                                    ip=ip,
                             reference=reference, form_id=str(row["form_id"]),
                             practice=str(row["practice"]), detail=detail)
            email = str(row["email_sealed"] or "")
            if email:
                address = sealing.unseal_text(self.settings.secret_key, EMAIL_PURPOSE, email,
                                              reference.encode())
                payload = sealing.seal_json(self.settings.secret_key, PURPOSE,
                                            {"lang": row["lang"], "practice": row["practice"]},
                                            reference.encode())
                self.store.outbox.enqueue(MAIL_KIND, reference,
                                          [sealed_recipient(self.settings, address, reference)],
                                          payload, str(row["form_id"]))

    # -- the patient --------------------------------------------------------------------
    def read(self, reference: str, code: str, ip: str = "") -> letter.Letter:
        """The answer (text and files), for the right code; ReplyRefused otherwise."""
        return self._open(reference, code, ip)[0]

    def can_reply(self, reference: str) -> bool:
        reference = reference.strip().upper()
        row = self.store.replies.get(reference) if REFERENCE.match(reference) else None
        return bool(row and row["state"] == "answered" and not row["replied_at"])

    def patient_reply(self, relay: Relay, reference: str, code: str, text: str,
                      ip: str = "") -> str:
        """The patient's one reply to the answer, delivered like a new submission of the
        same form to the same recipients; returns its new reference."""
        text = text.strip()
        if not text or len(text) > MAX_ANSWER:
            raise UserError("Write a reply of 1 to %(n)s characters.", n=MAX_ANSWER)
        if "\x00" in text or "\ufffd" in text:  # as a form's answer (intake/forms.py)
            raise UserError("This answer contains characters that could not be read; "
                            "please type it again.")
        reference = reference.strip().upper()
        _, row = self._open(reference, code, ip)
        spec = self.settings.form(str(row["form_id"]))
        if spec is None or spec.practice != row["practice"]:
            # the form is gone, or its id is now another practice's: a reply delivered
            # as that form's submission would reach the other practice's recipients
            raise UserError("This answer can no longer be replied to here. Please call "
                            "the practice.", status=410)
        if not self.store.replies.claim(reference, self.clock()):
            raise UserError("You have already replied to this answer.", status=409)
        lang = str(row["lang"])
        sub = Submission(reference=new_reference(), form_id=spec.id,
                         form_title=f"{spec.title} ({reference})", lang=lang,
                         received_at=self.clock(), answers=[
                             Answer("reply_to", gettext(lang, "Reply to"), "text", reference),
                             Answer("reply", gettext(lang, "Reply"), "textarea", text)])
        try:
            receipt = relay.deliver(sub, ip=ip)
        except BaseException:
            self.store.replies.claim(reference, None)
            raise
        self.store.audit.append(AuditAction.REPLY_PATIENT, actor="patient", ip=ip,
                                reference=reference, form_id=spec.id, practice=str(row["practice"]),
                                detail=f"delivered as {receipt.reference}")
        return receipt.reference

    def _open(self, reference: str, code: str, ip: str) -> tuple[letter.Letter, dict[str, Any]]:
        reference = reference.strip().upper()
        # only a well-formed reference is looked up (PostgreSQL refuses a NUL outright)
        row = self.store.replies.get(reference) if REFERENCE.match(reference) else None
        if row is not None and row["state"] in ("waiting", "answered") and \
                self.clock() >= parse_iso(row["expires_at"]):
            self.expire()
            row = self.store.replies.get(reference)
        if row is None or row["state"] not in ("waiting", "answered"):
            raise ReplyRefused(ReplyState.NONE)
        practice, form_id = str(row["practice"]), str(row["form_id"])
        wrapped, salt = bytes(row["wrapped_key"]), bytes(row["salt"])
        # the try is counted before the hash: tries from many addresses at once still
        # get MAX_FAILURES checks in all; a right code gives its try back
        if not self.store.replies.take_try(reference, MAX_FAILURES):
            raise ReplyRefused(ReplyState.BUSY, practice=practice)
        try:
            key = self._slow_key(code, salt, reference, practice)
        except ReplyRefused:
            self.store.replies.give_back_try(reference)  # not checked: does not count
            raise
        if key and secret.key_opens(key, wrapped, reference):
            self.store.replies.give_back_try(reference)
            row = self.store.replies.get(reference)  # locked meanwhile by other tries?
            if row is None or row["state"] not in ("waiting", "answered"):
                raise ReplyRefused(ReplyState.NONE)
        else:
            with self.store.transaction():
                failures, locked = self.store.replies.wrong_code(reference, MAX_FAILURES,
                                                                 self.clock())
                self.store.audit.append(AuditAction.REPLY_WRONG_CODE, "refused", actor="patient",
                                        ip=ip, reference=reference, form_id=form_id,
                                        practice=practice, detail=f"attempt {failures} of "
                                                                  f"{MAX_FAILURES}")
                if locked:
                    self.store.audit.append(AuditAction.REPLY_LOCKED, "refused",
                                            reference=reference,
                                     form_id=form_id, practice=practice,
                                     detail=f"{MAX_FAILURES} wrong codes: key and answer "
                                            "deleted")
            if locked:
                raise ReplyRefused(ReplyState.LOCKED, practice=practice)
            raise ReplyRefused(ReplyState.WRONG_CODE, tries_left=MAX_FAILURES - failures,
                               practice=practice)
        if row["answer"] is None:
            raise ReplyRefused(ReplyState.NOT_YET, practice=practice)
        answer = bytes(row["answer"])
        try:
            if secret.is_legacy(bytes(row["public_key"])):
                opened = letter.Letter(secret.open_with_key(key, wrapped, answer, reference))
            else:
                opened = letter.open_letter(secret.unwrap(key, wrapped, reference), answer)
        except (InvalidTag, ValueError):  # pysequoia raises ValueError on a bad message
            raise ReplyRefused(ReplyState.NONE, practice=practice) from None
        self.store.audit.append(AuditAction.REPLY_OPENED, actor="patient", ip=ip,
                                reference=reference,
                                form_id=form_id, practice=practice,
                                detail=f"{len(opened.files)} files" + (
                                    f", {opened.refused} refused (type or size)" if opened.refused
                                    else ""))
        return opened, row

    def _slow_key(self, code: str, salt: bytes, reference: str, practice: str) -> bytes:
        """The code's wrapping key (b"" for no code): one Argon2id run, as costly as a
        password hash, so it takes one of the worker's hashing slots and runs off the
        event loop like a login's (clinician/hashing.py). Anyone who sends a form with
        replies gets a reference and its right code, which never locks: without this a
        flood of checks from rotating addresses stalls the worker for every patient."""
        if not secret.normalize_code(code):
            return b""
        try:
            with hashing.slot():
                return hashing.run(secret.wrap_key, code, salt, self.settings.secret_key,
                                   reference)
        except hashing.Busy:
            raise ReplyRefused(ReplyState.BUSY, practice=practice) from None

    def expire(self) -> int:
        rows = self.store.replies.expire(self.clock())
        for r in rows:
            self.store.audit.append(AuditAction.REPLY_EXPIRED, reference=r["reference"],
                                    form_id=r["form_id"], practice=r["practice"],
                                    detail=f"{r['state']}: key and answer deleted")
        return len(rows)


def build_mail(mail: OutboxMail, settings: Settings, store: Store) -> bytes:
    """The patient's notice: the practice answered; where to read it. Nothing else."""
    from ..i18n import translations
    from ..uploads.mail import _contact, _message

    try:
        data = sealing.unseal_json(settings.secret_key, PURPOSE, mail.payload or b"",
                                   mail.reference.encode())
    except sealing.Unsealable:
        raise BuildError("answer notice payload cannot be opened (was FORMRELAY_SECRET_KEY "
                         "changed?)") from None
    lang = str(data.get("lang", "nl"))
    practice = settings.practice_or_default(str(data.get("practice", "")))
    _ = translations(lang).gettext
    link = f"{settings.server.base_url.rstrip('/')}/r/?reference={mail.reference}"
    body = "\n".join([
        practice.name, "",
        _("The practice has answered your form."),
        _("Open this page and enter your reply code to read the answer:"), "",
        link, "",
        _("You received the reply code after sending the form. This e-mail does not "
          "contain the answer."), "",
        _contact(practice, lang), ""])
    return _message(mail, settings, practice, _("An answer from %(practice)s")
                    % {"practice": practice.name}, body)


def mail_sent(mail: OutboxMail, store: Store) -> None:
    store.audit.append(AuditAction.REPLY_MAIL_SENT, reference=mail.reference, form_id=mail.form_id,
                       detail="answer notice to the patient")


NOTICE_MAIL = MailKind(MAIL_KIND, build_mail, on_sent=mail_sent)


def purge(settings: Settings, store: Store, now: datetime) -> int:
    return Answers(settings, store, lambda: now).expire()
