"""The link mail of a patient copy, queued in the TLS-only outbox (no Flask).

`patient_copy` is the link mail: the practice's name, "your copy is ready", the link,
the expiry date, "you need the pickup code shown after sending" and the contact line.
No answers, a neutral subject (never the form title), no attachments. The link holds
the copy's secret, so the outbox row keeps it only sealed with a key derived from
FORMRELAY_SECRET_KEY (`seal`, with formrelay.crypto.sealing), and the patient's address
too (`mail.kinds.sealed_recipient`); the worker opens them at send time, and the outbox
drops both once the relay accepted the mail. `queue_mails` queues it, and the PGP copy
(pgp_copy.py) when there is one; both kinds are named here.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..audit_actions import AuditAction
from ..crypto import sealing
from ..i18n import gettext, translations
from ..intake.submission import Submission
from ..localtime import iso, parse_iso
from ..mail.kinds import (
    BuildError,
    MailKind,
    Recorded,
    plain_message,
    recorded,
    recorded_for,
    sealed_context,
    sealed_recipient,
)
from ..settings import FormSpec, Settings
from ..store import OutboxMail, Store
from .pdf import local_time

if TYPE_CHECKING:
    from .copies import Copies
    from .values import PendingCopy


LINK_KIND = "patient_copy"
PGP_KIND = "patient_copy_pgp"


def subject(settings: Settings, lang: str, practice_name: str) -> str:
    custom = settings.server.copy_mail_subject.strip()
    if custom:
        return custom
    return gettext(lang, "Your copy is ready - %(practice)s", practice=practice_name)


def link_text(settings: Settings, lang: str, link: str, expires: datetime,
              downloads: int, p: Recorded) -> str:
    """The link mail's text, in the name of the practice recorded with the mail."""
    _ = translations(lang).gettext
    contact = [p.name, f"{_('Phone')} {p.phone}"]
    if p.email:
        contact.append(p.email)
    return "\n".join([
        p.name,
        "",
        _("Your copy is ready."),
        "",
        _("You asked for a copy of the form you sent us. Download it (PDF) here:"),
        "",
        link,
        "",
        _("The link works until %(date)s, for %(n)s downloads.")
        % {"date": local_time(expires, p.timezone, lang), "n": downloads},
        _("You need the pickup code that was shown after you sent the form."),
        _("This e-mail does not contain your answers."),
        "",
        _("Did you not fill in a form? Then you can ignore this e-mail."),
        "",
        " · ".join(contact),
        "",
    ])


def queue_mails(copies: Copies, pending: PendingCopy, sub: Submission, spec: FormSpec) -> None:
    """Queue the link mail (and the PGP mail) inside the submission's transaction."""
    store = copies.store
    link = copies.link(pending.copy_id, pending.secret)
    sealed = seal(copies.settings, {"link": link, "expires": iso(pending.expires_at),
                                    "lang": pending.lang, "downloads": copies.max_downloads},
                  sub.reference)
    # the patient's address is theirs: the outbox keeps it sealed too
    to = [sealed_recipient(copies.settings, pending.email, sub.reference)]
    # in the name of the practice the patient wrote to, whatever a reload does later
    rec = recorded_for(copies.settings.practice_of(spec.id), pending.lang)
    context = sealed_context(copies.settings, rec, sub.reference)
    store.outbox.enqueue(LINK_KIND, sub.reference, to, sealed, spec.id, practice=rec.practice,
                         context=context)
    if pending.pgp_ciphertext:
        # "<lang>\n" + the armoured ciphertext: only the patient's key opens it
        store.outbox.enqueue(PGP_KIND, sub.reference, to,
                             f"{pending.lang}\n{pending.pgp_ciphertext}".encode("ascii"), spec.id,
                             practice=rec.practice, context=context)


PAYLOAD_PURPOSE = b"formrelay outbox patient-copy v1"


def seal(settings: Settings, data: dict[str, Any], reference: str) -> bytes:
    """Encrypt a link mail's payload with a key derived from FORMRELAY_SECRET_KEY: the
    outbox row holds the link only in this form."""
    return sealing.seal_json(settings.secret_key, PAYLOAD_PURPOSE, data,
                             f"{LINK_KIND}|{reference}".encode())


def unseal(settings: Settings, blob: bytes, reference: str) -> dict[str, Any]:
    """The payload `seal` made; BuildError if it cannot be opened (e.g. a new secret key)."""
    try:
        return sealing.unseal_json(settings.secret_key, PAYLOAD_PURPOSE, blob,
                                   f"{LINK_KIND}|{reference}".encode())
    except sealing.Unsealable:
        raise BuildError("copy link payload cannot be opened (was FORMRELAY_SECRET_KEY "
                         "changed?)") from None


def build_link_mail(mail: OutboxMail, settings: Settings, store: Store) -> bytes:
    """The link mail, ready for the relay (plain text, UTF-8, no attachment)."""
    data = unseal(settings, mail.payload or b"", mail.reference)
    lang = data.get("lang", "nl")
    rec = recorded(mail, settings)
    body = link_text(settings, lang, data["link"], parse_iso(data["expires"]),
                     int(data.get("downloads", settings.server.copy_downloads)), rec)
    return plain_message(mail, settings, subject(settings, lang, rec.name), body)


def copy_mail_sent(mail: OutboxMail, store: Store) -> None:
    what = "link" if mail.kind == LINK_KIND else "PGP-encrypted copy"
    store.audit.append(AuditAction.COPY_MAIL_SENT, reference=mail.reference, form_id=mail.form_id,
                       detail=f"{what} to the patient")


# -- the kind of mail, for the worker's table (services.mail_kinds()) ---------------------
LINK_MAIL = MailKind(LINK_KIND, build_link_mail, on_sent=copy_mail_sent)
