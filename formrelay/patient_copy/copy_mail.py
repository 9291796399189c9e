"""The mails of a patient copy, queued in the TLS-only outbox (no Flask).

`patient_copy` is the link mail: the practice's name, "your copy is ready", the link,
the expiry date, "you need the pickup code shown after sending" and the contact line.
No answers, a neutral subject (never the form title), no attachments. The link holds
the copy's secret, so the outbox row keeps it only sealed with a key derived from
FORMRELAY_SECRET_KEY (`seal`, with formrelay.sealing), and the patient's address too
(`mail.kinds.sealed_recipient`); the worker opens them at send time, and the outbox
drops both once the relay accepted the mail.

`patient_copy_pgp` (optional, `patient_copy_pgp = true`): the PDF itself, PGP/MIME
encrypted to the patient's own public key. The key is checked like a clinician's key
(no secret material, one key, usable for encryption, not expired or weak) in a
throw-away GnuPG home; the outbox keeps only the ciphertext.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..audit_actions import AuditAction
from ..config import FormSpec, Recipient, Settings
from ..crypto import sealing
from ..crypto.keyring import CryptoError, GpgTimeout, Keyring
from ..errors import InvalidSubmission
from ..i18n import gettext, translations
from ..intake.submission import Submission
from ..mail.kinds import BuildError, MailKind, message_id, plain_message, sealed_recipient
from ..mail.transport import Message
from ..store import OutboxMail, Store, iso, parse_iso
from .pdf import local_time

if TYPE_CHECKING:
    from .copies import Copies, PendingCopy

LINK_KIND = "patient_copy"
PGP_KIND = "patient_copy_pgp"
MAX_KEY_CHARS = 20000


def subject(settings: Settings, lang: str) -> str:
    custom = settings.server.copy_mail_subject.strip()
    if custom:
        return custom
    return gettext(lang, "Your copy is ready - %(practice)s",
                   practice=settings.server.practice_name)


def link_text(settings: Settings, lang: str, link: str, expires: datetime,
              downloads: int) -> str:
    _ = translations(lang).gettext
    s = settings.server
    contact = [s.practice_name, f"{_('Phone')} {s.practice_phone}"]
    if s.practice_email:
        contact.append(s.practice_email)
    return "\n".join([
        s.practice_name,
        "",
        _("Your copy is ready."),
        "",
        _("You asked for a copy of the form you sent us. Download it (PDF) here:"),
        "",
        link,
        "",
        _("The link works until %(date)s, for %(n)s downloads.")
        % {"date": local_time(expires, s.timezone), "n": downloads},
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
    store.enqueue(LINK_KIND, sub.reference, to, sealed, spec.id)
    if pending.pgp_ciphertext:
        # "<lang>\n" + the armoured ciphertext: only the patient's key opens it
        store.enqueue(PGP_KIND, sub.reference, to,
                      f"{pending.lang}\n{pending.pgp_ciphertext}".encode("ascii"), spec.id)


PAYLOAD_PURPOSE = b"formrelay outbox patient-copy v1"


def seal(settings: Settings, data: dict[str, Any], reference: str) -> bytes:
    """Encrypt a link mail's payload with a key derived from FORMRELAY_SECRET_KEY: the
    outbox row holds the link only in this form."""
    body = json.dumps(data, ensure_ascii=False).encode()
    return sealing.seal(settings.secret_key, PAYLOAD_PURPOSE, body,
                        f"{LINK_KIND}|{reference}".encode())


def unseal(settings: Settings, blob: bytes, reference: str) -> dict[str, Any]:
    """The payload `seal` made; BuildError if it cannot be opened (e.g. a new secret key)."""
    try:
        data = sealing.unseal(settings.secret_key, PAYLOAD_PURPOSE, blob,
                              f"{LINK_KIND}|{reference}".encode())
    except sealing.Unsealable:
        raise BuildError("copy link payload cannot be opened (was FORMRELAY_SECRET_KEY "
                         "changed?)") from None
    out: dict[str, Any] = json.loads(data)
    return out


def build_link_mail(mail: OutboxMail, settings: Settings, store: Store) -> bytes:
    """The link mail, ready for the relay (plain text, UTF-8, no attachment)."""
    data = unseal(settings, mail.payload or b"", mail.reference)
    lang = data.get("lang", "nl")
    body = link_text(settings, lang, data["link"], parse_iso(data["expires"]),
                     int(data.get("downloads", settings.server.copy_downloads)))
    return plain_message(mail, settings, subject(settings, lang), body)


def build_pgp_mail(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    """The PGP/MIME mail around the ciphertext made for the patient's own key."""
    from ..mail.mime import encrypted_message

    lang, _, payload = (mail.payload or b"").partition(b"\n")
    if not payload.startswith(b"-----BEGIN PGP MESSAGE-----"):
        raise BuildError("patient copy ciphertext missing")

    def write(dest: IO[bytes]) -> None:
        dest.write(payload)

    return encrypted_message(
        sender=settings.sender, recipients=list(mail.recipients),
        subject=subject(settings, lang.decode("ascii", "replace")), date=mail.created_at,
        message_id=message_id(mail, settings), ciphertext=write, ciphertext_size=len(payload))


def _sent(mail: OutboxMail, store: Store) -> None:
    what = "link" if mail.kind == LINK_KIND else "PGP-encrypted copy"
    store.audit(AuditAction.COPY_MAIL_SENT, reference=mail.reference, form_id=mail.form_id,
                detail=f"{what} to the patient")


# -- the patient's own OpenPGP key (optional) -----------------------------------------------
def _bad_key(lang: str, message: str) -> InvalidSubmission:
    return InvalidSubmission("Please correct the marked fields.",
                             errors={"_copy_key": [gettext(lang, message)]})


def check_patient_key(armored: str, lang: str) -> str:
    """The patient's pasted key, if it looks like one public key (pgp_copy imports and
    checks it); else InvalidSubmission next to the key field."""
    text = armored.strip()
    if "PRIVATE KEY" in text:
        raise _bad_key(lang, "This is a private key. Never share it: paste your public key.")
    if len(text) > MAX_KEY_CHARS or "-----BEGIN PGP PUBLIC KEY BLOCK-----" not in text:
        raise _bad_key(lang, "Paste your OpenPGP public key, starting with "
                             "-----BEGIN PGP PUBLIC KEY BLOCK-----.")
    return text


class _scratch_keyring:  # noqa: N801 - used as a context manager, reads like a function
    """A throw-away GnuPG home holding only the patient's public key."""

    def __init__(self, parent: Path | None, timeout: float):
        self.parent = parent
        self.timeout = timeout

    def __enter__(self) -> Keyring:
        if self.parent is not None:
            self.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._dir = tempfile.TemporaryDirectory(prefix="patient-key-", dir=self.parent)
        return Keyring(Path(self._dir.name) / "gnupg", timeout=self.timeout)

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()


def _import_one(ring: Keyring, text: str, lang: str) -> str:
    result = ring.gpg.import_keys(text)
    ring.check_timeout("reading the patient's key")  # a stuck gpg is not a bad key
    fprs = list(dict.fromkeys(result.fingerprints or []))
    if len(fprs) != 1 or ring.gpg.list_keys(secret=True):
        raise _bad_key(lang, "This key could not be read; paste exactly one public key.")
    st = ring.status(Recipient(id="patient", email="", key_file="", fingerprint=fprs[0]))
    if not st.usable:
        raise _bad_key(lang, "This key cannot be used to encrypt (expired, revoked or too "
                             "weak). Leave the field empty or paste another key.")
    return fprs[0]


def pgp_copy(armored: str, pdf: bytes, sub: Submission, settings: Settings,
             store: Store) -> str:
    """The PDF in a MIME message, encrypted to the patient's key; ASCII armour."""
    inner = EmailMessage(policy=SMTP)
    inner["Subject"] = subject(settings, sub.lang)
    inner["From"] = settings.sender
    inner.set_param("protected-headers", "v1")
    inner.set_content(gettext(sub.lang, "Your copy is attached (PDF).") + "\n",
                      charset="utf-8")
    inner.add_attachment(pdf, maintype="application", subtype="pdf",
                         filename=f"{sub.reference.lower()}.pdf")
    inner.replace_header("Content-Type", inner["Content-Type"] + '; protected-headers="v1"')
    with _scratch_keyring(settings.tmp_dir, settings.server.gpg_timeout_seconds) as ring:
        fpr = _import_one(ring, armored, sub.lang)
        out = Path(ring.home.parent) / "copy.asc"
        import io

        try:
            ring.encrypt_stream(io.BytesIO(inner.as_bytes(policy=SMTP)), [fpr], out,
                                compress=False)
        except GpgTimeout:
            raise
        except CryptoError:
            raise _bad_key(sub.lang, "This key cannot be used to encrypt (expired, revoked "
                                     "or too weak). Leave the field empty or paste another "
                                     "key.") from None
        return out.read_text("ascii")


# -- the kinds of mail, for the worker's table (services.mail_kinds()) -------------------
LINK_MAIL = MailKind(LINK_KIND, build_link_mail, on_sent=_sent)
PGP_MAIL = MailKind(PGP_KIND, build_pgp_mail, on_sent=_sent)
