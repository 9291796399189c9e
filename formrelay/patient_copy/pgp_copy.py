"""The patient's own-key copy (optional, `patient_copy_pgp = true`): the PDF itself,
PGP/MIME encrypted to the patient's own public key.

The key is checked like a clinician's key (no secret material, one key, usable for
encryption, not expired or weak) in a throw-away GnuPG home; the outbox keeps only the
ciphertext. The mail is queued with the link mail (link_mail.queue_mails).
"""

from __future__ import annotations

import tempfile
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..crypto.keyring import CryptoError, GpgTimeout, Keyring
from ..errors import InvalidSubmission
from ..i18n import gettext
from ..intake.submission import Submission
from ..mail.kinds import BuildError, MailKind, message_id, recorded
from ..mail.transport import Message
from ..settings import Recipient, Settings
from ..store import OutboxMail, Store
from .link_mail import PGP_KIND, copy_mail_sent, subject

if TYPE_CHECKING:
    pass


MAX_KEY_CHARS = 20000


def build_pgp_mail(mail: OutboxMail, settings: Settings, store: Store) -> Message:
    """The PGP/MIME mail around the ciphertext made for the patient's own key."""
    from ..mail.mime import encrypted_message

    lang, _, payload = (mail.payload or b"").partition(b"\n")
    if not payload.startswith(b"-----BEGIN PGP MESSAGE-----"):
        raise BuildError("patient copy ciphertext missing")

    def write(dest: IO[bytes]) -> None:
        dest.write(payload)

    rec = recorded(mail, settings)  # whose it was when queued
    return encrypted_message(
        sender=rec.sender, recipients=list(mail.recipients),
        subject=subject(settings, lang.decode("ascii", "replace"), rec.name),
        date=mail.created_at,
        message_id=message_id(mail, settings), ciphertext=write, ciphertext_size=len(payload))


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
    practice = settings.practice_of(sub.form_id)
    inner["Subject"] = subject(settings, sub.lang, practice.name)
    inner["From"] = practice.sender
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


# -- the kind of mail, for the worker's table (services.mail_kinds()) ---------------------
PGP_MAIL = MailKind(PGP_KIND, build_pgp_mail, on_sent=copy_mail_sent)
