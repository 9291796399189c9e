"""The kinds of mail the outbox sends: what a kind is, and the two core kinds.

Every mail in the outbox has a kind; the kind's builder turns the stored row into the
message at send time, and its hooks run when the row is marked sent or failed. Here
are `MailKind`, the helpers builders share (fixed Message-ID, plain-text mail) and
the two kinds formrelay itself sends: the submission's PGP/MIME mail and plain mail to
the operator. Other features declare their own (notify.py, patient_copy/link_mail.py). The worker
that sends them is outbox.py; it is handed the table of kinds (`services.mail_kinds()`)
and knows no others.

How other features queue their own mail (the interface; keep it stable):

1. Declare the kind as a value in your module, and add it to the table in services.py::

       from formrelay.mail_kinds import MailKind
       def build(mail: OutboxMail, settings: Settings, store: Store) -> bytes: ...
       MAIL = MailKind("notification", build, on_sent=None, on_failed=None)

       # services.py, mail_kinds(): kind_table(..., notification.MAIL)

   `build` returns the complete RFC 5322 message as bytes (or a `mime.Streamed` for
   something large). It is called at every attempt, in the worker process, with the
   claimed `store.OutboxMail` (id, kind, reference, form_id, recipients, payload,
   message_id, created_at, attempts). `plain_message(mail, settings, subject, body)`
   makes a correct plain-text mail (From, To, Date, fixed Message-ID). Raise
   `BuildError("short reason")` if the mail can never be built (it is then
   marked failed at once, as are a recipient address that cannot go in a header and
   the email package's ValueError/UnicodeError/MessageError); any other exception
   defers it. `on_sent(mail, store)` and
   `on_failed(mail, store)` run inside the transaction that marks the row. Nothing
   registers itself when imported: a kind missing from the table is never built (its
   mails wait, deferred as "unknown mail kind").

2. Queue a mail, inside your own transaction if you have one::

       store.enqueue("notification", reference, ["dr@praktijk.nl"], payload=b"...",
                     form_id=form_id)

   `payload` is an opaque blob only your builder reads (encrypt it yourself if it is
   secret: it sits in the database until sent, then it is deleted, and the recipients'
   addresses with it). A patient's address is patient data: queue it as
   `sealed_recipient(settings, address, reference)`; the worker opens it, in
   memory, just before building and sending. Never put patient data in any mail. Check
   `transport.transport_configured(settings)` first: without a relay or sink folder
   nothing can be sent and the mail would wait forever.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from types import MappingProxyType

from ..audit_actions import AuditAction
from ..config import PracticeSettings, Settings
from ..crypto import sealing
from ..errors import OperatorError
from ..i18n import gettext
from ..intake.pipeline import RecordOnly, Stored
from ..store import OutboxMail, Store
from . import mime
from .transport import Message, transport_configured

log = logging.getLogger("formrelay.delivery")  # as before the split: operators filter on it

Builder = Callable[[OutboxMail, Settings, Store], Message]
Hook = Callable[[OutboxMail, Store], None]

SUBMISSION, OPERATOR = "submission", "operator"


class BuildError(OperatorError):
    """A builder cannot ever make this mail (e.g. its ciphertext is gone)."""


@dataclass(frozen=True)
class MailKind:
    """One kind of mail: its name in the outbox, how to build it, what to do once it
    is marked sent or failed (inside that transaction)."""

    kind: str
    build: Builder
    on_sent: Hook | None = None
    on_failed: Hook | None = None


MailKinds = Mapping[str, MailKind]


def kind_table(*kinds: MailKind) -> MailKinds:
    """The kinds by name, read-only; a name given twice is a programming error."""
    table: dict[str, MailKind] = {}
    for k in kinds:
        if k.kind in table:
            raise ValueError(f"mail kind {k.kind!r} given twice")
        table[k.kind] = k
    return MappingProxyType(table)


# -- sealed recipients (a patient's address is patient data) ---------------------------
RECIPIENT_PURPOSE = b"formrelay outbox recipient v1"


def sealed_recipient(settings: Settings, address: str, reference: str) -> str:
    """An address as the outbox keeps it until the mail is sent: sealed (AES-GCM with a
    key from FORMRELAY_SECRET_KEY, bound to the reference)."""
    return sealing.seal_text(settings.secret_key, RECIPIENT_PURPOSE, address,
                             f"rcpt|{reference}".encode())


def open_recipients(mail: OutboxMail, settings: Settings) -> OutboxMail:
    """The mail with its sealed recipients opened (in memory only); BuildError if one
    cannot be opened."""
    if not any(sealing.is_sealed_text(r) for r in mail.recipients):
        return mail
    try:
        opened = tuple(sealing.unseal_text(settings.secret_key, RECIPIENT_PURPOSE, r,
                                           f"rcpt|{mail.reference}".encode())
                       if sealing.is_sealed_text(r) else r for r in mail.recipients)
    except sealing.Unsealable:
        raise BuildError("recipient address cannot be opened (was FORMRELAY_SECRET_KEY "
                         "changed?)") from None
    return replace(mail, recipients=opened)


# -- helpers for builders ----------------------------------------------------------------
def message_id(mail: OutboxMail, settings: Settings) -> str:
    """The mail's fixed Message-ID: every attempt sends the same one."""
    if mail.message_id.startswith("<"):
        return mail.message_id
    return f"<{mail.message_id}@{settings.mail_domain}>"


def plain_message(mail: OutboxMail, settings: Settings, subject: str, body: str) -> bytes:
    """A plain-text UTF-8 mail from the practice's address to the mail's recipients."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = settings.practice_of(mail.form_id).sender
    msg["To"] = ", ".join(mail.recipients)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(mail.created_at)
    msg["Message-ID"] = message_id(mail, settings)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()


# -- the submission's PGP/MIME mail ------------------------------------------------------
@dataclass(frozen=True)
class SubmissionMail(RecordOnly):
    """The pipeline step that queues an email-delivery submission's mail in the
    submission's own transaction (intake/pipeline.py)."""

    store: Store
    settings: Settings

    def record(self, stored: Stored, prepared: None) -> None:
        if stored.delivery != "email":
            return
        spec, reference = stored.spec, stored.sub.reference
        emails = self.settings.recipient_emails(spec)
        self.store.enqueue(SUBMISSION, reference, emails, form_id=spec.id,
                           message_id=mime.message_id(reference, self.settings.mail_domain))


def submission_message(settings: Settings, store: Store, *, reference: str, form_id: str,
                       recipients: list[str] | tuple[str, ...], date: datetime,
                       message_id: str, sender: str, lang: str) -> mime.Streamed:
    """A stored submission's PGP/MIME mail (RFC 3156), as the worker mails it and the
    clinician area offers it as .eml: generic outer headers, the real subject inside the
    ciphertext. BuildError if the ciphertext is gone."""
    row = store.submission(reference)
    if row is None or row["deleted_at"] or not row["size"]:
        raise BuildError("ciphertext no longer stored")
    subject = gettext(lang, "Encrypted form submission %(reference)s", reference=reference)
    return mime.encrypted_message(
        sender=sender, recipients=recipients, subject=subject,
        date=date,
        message_id=message_id, ciphertext=lambda dest: store.copy_ciphertext(reference, dest),
        ciphertext_size=row["size"])


def _build_submission(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    spec = settings.form(mail.form_id)
    return submission_message(settings, store, reference=mail.reference,
                              form_id=mail.form_id, recipients=mail.recipients,
                              date=mail.created_at, message_id=message_id(mail, settings),
                              sender=settings.practice_of(mail.form_id).sender,
                              lang=spec.lang if spec else "nl")


def _submission_sent(mail: OutboxMail, store: Store) -> None:
    store.set_status(mail.reference, "sent", drop_ciphertext=True)
    store.audit(AuditAction.DELETED, reference=mail.reference, form_id=mail.form_id,
                detail="ciphertext deleted after the relay accepted the mail")


def _submission_failed(mail: OutboxMail, store: Store) -> None:
    store.set_status(mail.reference, "failed")


SUBMISSION_MAIL = MailKind(SUBMISSION, _build_submission, on_sent=_submission_sent,
                           on_failed=_submission_failed)


# -- mail to the operator (plain, never patient data) ------------------------------------
def tell_operator(store: Store, settings: Settings, subject: str, body: str, *,
                  reference: str = "", form_id: str = "", once: str = "",
                  practice: PracticeSettings | None = None) -> bool:
    """Queue a plain mail to the operator of `practice` (else of the form's practice,
    else of the default one); False if none is configured. With `once` (a short name),
    nothing is queued while a mail of that name still waits."""
    to = (practice or settings.practice_of(form_id)).operator_email
    if not to or not transport_configured(settings):
        log.warning("no operator mail sent (set operator_email and [smtp]): %s", subject)
        return False
    message_id = ""
    if once:
        if store.mail_waiting(f"{OPERATOR}.{once}."):
            return True
        message_id = f"{OPERATOR}.{once}.{secrets.token_hex(12)}"
    payload = json.dumps({"subject": subject, "body": body}).encode()
    store.enqueue(OPERATOR, reference, [to], payload=payload, form_id=form_id,
                  message_id=message_id, practice=practice.id if practice else "")
    return True


def _build_operator(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    data = json.loads(mail.payload)
    return plain_message(mail, settings, f"[formrelay] {data['subject']}", data["body"])


OPERATOR_MAIL = MailKind(OPERATOR, _build_operator)
