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
   makes a correct plain-text mail (From as recorded, To, Date, fixed Message-ID). Raise
   `BuildError("short reason")` if the mail can never be built (it is then
   marked failed at once, as are a recipient address that cannot go in a header and
   the email package's ValueError/UnicodeError/MessageError); any other exception
   defers it. `on_sent(mail, store)` and
   `on_failed(mail, store)` run inside the transaction that marks the row. Nothing
   registers itself when imported: a kind missing from the table is never built (its
   mails wait, deferred as "unknown mail kind").

2. Queue a mail, inside your own transaction if you have one, with whose it is
   recorded now (the builder reads it back with `recorded(mail, settings)`, never
   the configuration of the day)::

       rec = recorded_for(settings.practice_of(form_id), spec.lang)
       store.outbox.enqueue("notification", reference, ["dr@praktijk.nl"], payload=b"...",
                            form_id=form_id, practice=rec.practice,
                            context=sealed_context(settings, rec, reference))

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
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from types import MappingProxyType

from ..audit_actions import AuditAction
from ..crypto import sealing
from ..errors import OperatorError
from ..i18n import gettext
from ..intake.payload import message_id as submission_message_id
from ..intake.pipeline import RecordOnly, Stored
from ..settings import DEFAULT_PRACTICE, PracticeSettings, Settings
from ..store import OutboxMail, Store
from . import mime
from .transport import MailError, Message, transport_configured

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


# -- whose a mail is: recorded when it is queued ---------------------------------------
CONTEXT_PURPOSE = b"formrelay outbox sender v1"


@dataclass(frozen=True)
class Recorded:
    """Whose a queued mail is, as it was when the mail was queued (in the submission's
    transaction): the practice's name, phone, contact address, time zone, sender and
    operator, and the form's language. Builders take these, never today's
    configuration: a reload that removes a practice, or gives its form id to another,
    must not send its patients' mail under another practice's name. Kept sealed with the
    outbox row (the operator's address is a person's), dropped once the mail is sent."""

    practice: str
    name: str
    phone: str
    email: str
    sender: str
    timezone: str
    operator: str
    lang: str = "nl"


def recorded_for(practice: PracticeSettings, lang: str = "nl") -> Recorded:
    return Recorded(practice=practice.id, name=practice.name, phone=practice.phone,
                    email=practice.email, sender=practice.sender, timezone=practice.timezone,
                    operator=practice.operator_email, lang=lang)


def instance(settings: Settings) -> Recorded:
    """The instance itself, for what is no practice's (the relay refusing formrelay, a
    removed practice's waiting mail): `[server] operator_email`, smtp.from_address."""
    s = settings.server
    return Recorded(practice=DEFAULT_PRACTICE, name="formrelay", phone="", email="",
                    sender=settings.smtp.from_address or f"formrelay@{settings.mail_domain}",
                    timezone=s.timezone, operator=s.operator_email)


def sealed_context(settings: Settings, rec: Recorded, reference: str) -> str:
    """`rec` as the outbox row keeps it (sealed, bound to the reference)."""
    return sealing.seal_text(settings.secret_key, CONTEXT_PURPOSE,
                             json.dumps(asdict(rec), ensure_ascii=False),
                             f"ctx|{reference}".encode())


class PracticeGone(MailError):
    """A mail queued before its practice was recorded with it, whose practice is no
    longer configured: it waits (never sent under another practice's name) and the
    instance's operator is told."""


def recorded(mail: OutboxMail, settings: Settings) -> Recorded:
    """Whose `mail` is, as recorded when it was queued. A mail queued by an older
    version has no record: its practice's details as configured now, if that practice
    is still there (PracticeGone otherwise)."""
    if mail.context:
        try:
            data = json.loads(sealing.unseal_text(settings.secret_key, CONTEXT_PURPOSE,
                                                  mail.context, f"ctx|{mail.reference}".encode()))
        except sealing.Unsealable:
            raise BuildError("sender details cannot be opened (was FORMRELAY_SECRET_KEY "
                             "changed?)") from None
        return Recorded(**data)
    practice = settings.practice(mail.practice) if mail.practice else \
        settings.practice_of(mail.form_id)
    spec = settings.form(mail.form_id)
    if practice is None:
        if mail.kind == OPERATOR:
            return instance(settings)
        raise PracticeGone("practice no longer configured",
                           f"mail of practice {mail.practice} waits until it is back")
    return recorded_for(practice, spec.lang if spec and spec.practice == practice.id else "nl")


# -- helpers for builders ----------------------------------------------------------------
def message_id(mail: OutboxMail, settings: Settings) -> str:
    """The mail's fixed Message-ID: every attempt sends the same one."""
    if mail.message_id.startswith("<"):
        return mail.message_id
    return f"<{mail.message_id}@{settings.mail_domain}>"


def plain_message(mail: OutboxMail, settings: Settings, subject: str, body: str, *,
                  sender: str = "") -> bytes:
    """A plain-text UTF-8 mail to the mail's recipients, from `sender` or else the
    address recorded with the mail."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender or recorded(mail, settings).sender
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
        rec = recorded_for(self.settings.practice_of(spec.id), spec.lang)
        self.store.outbox.enqueue(SUBMISSION, reference, emails, form_id=spec.id,
                                  message_id=submission_message_id(reference,
                                                                   self.settings.mail_domain),
                                  practice=rec.practice,
                                  context=sealed_context(self.settings, rec, reference))


def submission_message(settings: Settings, store: Store, *, reference: str, form_id: str,
                       recipients: list[str] | tuple[str, ...], date: datetime,
                       message_id: str, sender: str, lang: str) -> mime.Streamed:
    """A stored submission's PGP/MIME mail (RFC 3156), as the worker mails it and the
    clinician area offers it as .eml: generic outer headers, the real subject inside the
    ciphertext. BuildError if the ciphertext is gone."""
    row = store.submissions.get(reference)
    if row is None or row["deleted_at"] or not row["size"]:
        raise BuildError("ciphertext no longer stored")
    subject = gettext(lang, "Encrypted form submission %(reference)s", reference=reference)
    return mime.encrypted_message(
        sender=sender, recipients=recipients, subject=subject,
        date=date,
        message_id=message_id, ciphertext=lambda dest: store.submissions.copy_to(reference, dest),
        ciphertext_size=row["size"])


def _build_submission(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    rec = recorded(mail, settings)
    return submission_message(settings, store, reference=mail.reference,
                              form_id=mail.form_id, recipients=mail.recipients,
                              date=mail.created_at, message_id=message_id(mail, settings),
                              sender=rec.sender, lang=rec.lang)


def _submission_sent(mail: OutboxMail, store: Store) -> None:
    store.submissions.set_status(mail.reference, "sent", drop_ciphertext=True)
    store.audit.append(AuditAction.DELETED, reference=mail.reference, form_id=mail.form_id,
                       detail="ciphertext deleted after the relay accepted the mail")


def _submission_failed(mail: OutboxMail, store: Store) -> None:
    store.submissions.set_status(mail.reference, "failed")


SUBMISSION_MAIL = MailKind(SUBMISSION, _build_submission, on_sent=_submission_sent,
                           on_failed=_submission_failed)


# -- mail to the operator (plain, never patient data) ------------------------------------
def tell_operator(store: Store, settings: Settings, subject: str, body: str, *,
                  reference: str = "", form_id: str = "", once: str = "",
                  practice: PracticeSettings | None = None, about: OutboxMail | None = None,
                  everyone: bool = False) -> bool:
    """Queue a plain mail to an operator: with `everyone`, the instance's (`[server]
    operator_email`: what concerns every practice, like a relay refusing formrelay);
    with `about`, that mail's practice's as recorded with it; else the operator of
    `practice` (else of the form's practice, else of the default one). False if none
    is configured. With `once` (a short name), nothing is queued while a mail of that
    name still waits."""
    if everyone:
        rec = instance(settings)
    elif about is not None:
        try:
            rec = recorded(about, settings)
        except (PracticeGone, BuildError):
            rec = instance(settings)
    else:
        rec = recorded_for(practice or settings.practice_of(form_id))
    to = rec.operator
    if not to or not transport_configured(settings):
        log.warning("no operator mail sent (set operator_email and [smtp]): %s", subject)
        return False
    message_id = ""
    if once:
        if store.outbox.waiting(f"{OPERATOR}.{once}."):
            return True
        message_id = f"{OPERATOR}.{once}.{secrets.token_hex(12)}"
    payload = json.dumps({"subject": subject, "body": body}).encode()
    store.outbox.enqueue(OPERATOR, reference, [to], payload=payload, form_id=form_id,
                         message_id=message_id, practice=rec.practice,
                         context=sealed_context(settings, rec, reference))
    return True


def _build_operator(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    data = json.loads(mail.payload)
    return plain_message(mail, settings, f"[formrelay] {data['subject']}", data["body"])


OPERATOR_MAIL = MailKind(OPERATOR, _build_operator)
