"""An answer's content: its text and optional files as one MIME message, encrypted to
the submission's reply key as one OpenPGP message (no Flask, no database).

Two ways in, one format, so the patient's page reads both alike:

* **In the clinician's browser** (static/reader/answer.js): the page encrypts the MIME
  message with the vendored OpenPGP.js to the reply key's certificate and posts only
  the ciphertext. The server checks it without reading it (`check_sealed`): one whole
  message, SEIPD v1, one session-key packet naming exactly that key.
* **On the server** (no JavaScript, the CLI): `compose` then `seal`, gpg in a throw-away
  home holding only the reply certificate. The text and files pass through the
  request's memory and gpg's stdin pipe once, never a file.

The server opens an answer only with the patient's code (`open_letter`), in the memory
of the patient's request. There the files' types are checked by their first bytes,
whoever encrypted them: a file that is not what its name says is not handed out.
"""

from __future__ import annotations

import io
import re
import tempfile
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from ..crypto.keyring import CryptoError, Keyring
from ..crypto.packets import PacketError, check_message_to, dearmor, key_ids
from ..errors import UserError
from ..intake.forms import sniff_upload

MAX_FILES = 5
MAX_FILES_BYTES = 10 * 1024 * 1024  # all files of one answer together
# the ciphertext of the text, the files and their MIME framing (base64: 4/3)
MAX_SEALED = MAX_FILES_BYTES * 4 // 3 + 200_000
TYPES = ("pdf", "jpg", "jpeg", "png", "heic", "docx", "odt", "txt")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")


@dataclass(frozen=True)
class AnswerFile:
    name: str
    data: bytes


@dataclass(frozen=True)
class Letter:
    text: str
    files: list[AnswerFile] = field(default_factory=list)
    refused: int = 0  # files in the message that are not handed out (type, size)


def safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip()[:120]


def file_problem(name: str, data: bytes) -> str:
    """Why a file cannot go with an answer ('' when it can)."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in TYPES or not sniff_upload(ext, data[:64]):
        return "not an allowed type"
    if not data:
        return "empty"
    return ""


def check_files(files: list[tuple[str, bytes]]) -> list[AnswerFile]:
    """The files the clinician attached, or UserError saying which one is refused."""
    files = [(safe_name(n), d) for n, d in files if n]
    if len(files) > MAX_FILES:
        raise UserError("Attach at most %(n)s files to an answer.", n=MAX_FILES)
    if sum(len(d) for _, d in files) > MAX_FILES_BYTES:
        raise UserError("The files of one answer may together be at most %(n)s MB.",
                        n=MAX_FILES_BYTES // (1024 * 1024))
    for name, data in files:
        if file_problem(name, data):
            raise UserError("%(name)s is refused: send PDF, JPEG, PNG, HEIC, Word, "
                            "OpenDocument or text files, as their names say.", name=name)
    return [AnswerFile(n, d) for n, d in files]


def compose(text: str, files: list[AnswerFile]) -> bytes:
    """The MIME message the patient's page reads: the text, then each file."""
    msg = EmailMessage(policy=policy.SMTP)
    msg.set_content(text, charset="utf-8", cte="base64")
    for f in files:
        msg.add_attachment(f.data, maintype="application", subtype="octet-stream",
                           filename=f.name)
    return msg.as_bytes()


def seal(certificate: bytes, mime: bytes, tmp_dir: Path, timeout: float) -> bytes:
    """`mime` encrypted by gpg to the reply certificate alone (binary, SEIPD v1)."""
    tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reply-key-", dir=tmp_dir) as scratch:
        ring = Keyring(Path(scratch) / "gnupg", timeout=timeout)
        fprs = list(ring.gpg.import_keys(certificate.decode("ascii")).fingerprints or [])
        if len(set(fprs)) != 1:
            raise CryptoError("the reply key could not be read by gpg")
        out = Path(scratch) / "answer.asc"
        ring.encrypt_stream(io.BytesIO(mime), [fprs[0]], out, compress=False)
        return check_message_to(out.read_bytes(), key_ids(certificate))


def check_sealed(certificate: bytes, ciphertext: bytes) -> bytes:
    """The binary form of a ciphertext the clinician's browser made, if it is one
    OpenPGP message to exactly the reply key; UserError otherwise."""
    if len(ciphertext) > MAX_SEALED:
        raise UserError("The answer with its files is too large.", status=413)
    try:
        return check_message_to(ciphertext, key_ids(certificate))
    except (PacketError, IndexError):
        raise UserError("This answer was not encrypted for the patient. Reload the page "
                        "and write it again.", status=422) from None


def open_letter(private: bytes, ciphertext: bytes) -> Letter:
    """The answer, decrypted with the reply key's private half (in this memory only)."""
    import pysequoia

    key = pysequoia.Tsk.from_bytes(private)
    plain = pysequoia.decrypt(dearmor(ciphertext), decryptor=key.decryptor(None)).bytes or b""
    msg = message_from_bytes(plain, policy=policy.default)
    text, refused = "", 0
    files: list[AnswerFile] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment":
            name = safe_name(part.get_filename() or "")
            data = part.get_payload(decode=True) or b""
            if not isinstance(data, bytes) or file_problem(name, data) or \
                    len(files) >= MAX_FILES:
                refused += 1
            else:
                files.append(AnswerFile(name, data))
        elif part.get_content_type() == "text/plain" and not text:
            text = str(part.get_content())
    return Letter(text.strip(), files, refused)
