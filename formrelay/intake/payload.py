"""The one plaintext formrelay encrypts per submission (no Flask, no network).

`payload_parts()` produces it: a complete MIME message (`multipart/mixed;
protected-headers="v1"`) with the real subject inside, a readable text body, the answers
as JSON and the uploads as attachments. It is produced as a stream (`IterStream`), so a
20 MB upload is base64-encoded chunk by chunk straight into gpg's stdin. Headers and
small parts are made by Python's `email` package. The mail around the ciphertext
(mail/mime.py) writes its outer headers with `outer_headers` from here, and
`encrypted_size` tells the relay what that mail will weigh.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import secrets
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import format_datetime
from typing import IO

from ..localtime import DEFAULT_TZ, answer_date, shown
from .submission import Submission

LANGUAGE_NAMES = {"nl": "Nederlands", "en": "English"}

# 57 raw bytes = one 76-character base64 line; read many lines at a time.
_B64_CHUNK = 57 * 1024


def message_id(reference: str, domain: str) -> str:
    """Fixed per submission, so a retried delivery is recognisably the same mail."""
    return f"<{reference.lower()}@{domain}>"


def text_body(sub: Submission, practice: str, labels: dict[str, str],
              tz: str = DEFAULT_TZ, lang: str = "nl") -> str:
    """The readable part, in the form's language `lang` (its labels, its dates)."""
    lines = [sub.form_title, "=" * len(sub.form_title), "",
             f"{labels['reference']}: {sub.reference}",
             f"{labels['received']}: {shown(sub.received_at, tz, lang)}",
             f"{labels['practice']}: {practice}"]
    if "language" in labels:  # the patient may have read the questions in another language
        lines.append(f"{labels['language']}: {LANGUAGE_NAMES.get(sub.lang, sub.lang)}")
    lines.append("")
    for a in sub.answers:
        # no colon after a label that ends a sentence ("Waarvoor ...?", a consent text)
        lines.append(a.label if a.label.endswith((".", "?", "!", ":")) else f"{a.label}:")
        value = a.display() or "-"
        if isinstance(a.value, bool):  # a consent tick, in the practice's language
            value = labels.get("yes", "yes") if a.value else "-"
        elif a.type in ("date", "birthdate") and isinstance(a.value, str) and a.value:
            value = answer_date(a.value, lang)  # answers.json keeps the ISO date
        lines.extend(f"  {ln}" for ln in value.splitlines() or ["-"])
        lines.append("")
    return "\n".join(lines)


def _headers_bytes(msg: Message) -> bytes:
    """Just the header block (with its blank line) of a part without a body."""
    raw = msg.as_bytes(policy=SMTP)
    head, _, _ = raw.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n"


def _b64(data: bytes) -> bytes:
    """`data` in base64, 76-character CRLF lines (as base64.encodebytes, whose Python
    loop calls the C encoder once per 57 bytes: here once, then only slices)."""
    enc = binascii.b2a_base64(data, newline=False)
    return b"\r\n".join([enc[i:i + 76] for i in range(0, len(enc), 76)]) + b"\r\n" \
        if enc else b""


def _b64_lines(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(_B64_CHUNK):
        yield _b64(chunk)


def payload_parts(sub: Submission, *, sender: str, recipients: list[str], subject: str,
                  domain: str, practice: str, labels: dict[str, str],
                  tz: str = DEFAULT_TZ, lang: str = "nl") -> Iterator[bytes]:
    # The fixed headers and the two small parts are written directly: building them with
    # EmailMessage cost ~5 ms of CPU per submission (its header registry), a fifth of the
    # whole post. Values that need encoding still go through the email package.
    boundary = "fr-" + secrets.token_hex(12)
    yield (outer_headers(sender, recipients, subject, sub.received_at,
                          message_id(sub.reference, domain))
           + f'Content-Type: multipart/mixed; boundary="{boundary}";\r\n'
             f' protected-headers="v1"\r\n\r\n'.encode())
    yield b"This is a multipart message in MIME format.\r\n"

    # One CRLF line per text line (splitlines drops stray CRs); b2a_qp then keeps CRLF.
    text = "\r\n".join(text_body(sub, practice, labels, tz, lang).splitlines()) + "\r\n"
    yield (f"\r\n--{boundary}\r\n".encode()
           + b'Content-Type: text/plain; charset="utf-8"\r\n'
             b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
           + binascii.b2a_qp(text.encode("utf-8"), istext=True))

    # Compact, so the C encoder writes it (indent falls back to the pure-Python one, ~0.5
    # ms a post); mail clients and the clinician's tools read it the same.
    answers = json.dumps(sub.as_json(), ensure_ascii=False, separators=(",", ":")
                         ).encode("utf-8")
    yield (f"\r\n--{boundary}\r\n".encode()
           + b"Content-Type: application/json\r\n"
             b"Content-Transfer-Encoding: base64\r\n"
             b'Content-Disposition: attachment; filename="answers.json"\r\n\r\n'
           + _b64(answers))

    for up in sub.uploads:
        part = EmailMessage(policy=SMTP)
        maintype, _, subtype = up.content_type.partition("/")
        part["Content-Type"] = up.content_type
        part.set_param("name", up.filename)
        part["Content-Disposition"] = "attachment"
        part.set_param("filename", up.filename, header="Content-Disposition")
        part["Content-Transfer-Encoding"] = "base64"
        yield f"\r\n--{boundary}\r\n".encode() + _headers_bytes(part)
        up.stream.seek(0)
        yield from _b64_lines(up.stream)
    yield f"\r\n--{boundary}--\r\n".encode()


class IterStream(io.RawIOBase):
    """A read-only file object over an iterator of byte chunks (for gpg's stdin)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


# Outer headers, the version part and the boundaries: well under this many bytes.
_OUTER_OVERHEAD = 2048


def encrypted_size(ciphertext_size: int) -> int:
    """The size on the wire of the PGP/MIME message around an armoured ciphertext of
    `ciphertext_size` bytes (gpg's 64-character LF lines become CRLF lines)."""
    return ciphertext_size + ciphertext_size // 64 + _OUTER_OVERHEAD


# Raw bytes per RFC 2047 encoded word: 52 base64 characters, so "Subject: " and one
# word stay within 78 characters a line.
_WORD_BYTES = 39


def encoded_words(text: str) -> str:
    """`text` as RFC 2047 encoded words (UTF-8, base64), folded one word a line; never
    splits a character. Written directly: the email package's header registry cost
    ~1.3 ms a post for a title with one accented letter."""
    words, chunk = [], b""
    for ch in text:
        raw = ch.encode("utf-8")
        if len(chunk) + len(raw) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += raw
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?="
                         for w in words if w)


def outer_headers(sender: str, recipients: list[str] | tuple[str, ...], subject: str,
                   date: datetime, message_id: str) -> bytes:
    """From, To, Subject, Date, Message-ID, MIME-Version (without the blank line). Plain
    ASCII values are written directly (the email package's header parser costs ~10 ms
    a mail); anything else goes through the email package for correct encoding."""
    if all(v.isascii() and "\n" not in v and "\r" not in v
           for v in (sender, *recipients, message_id)) \
            and "\n" not in subject and "\r" not in subject:
        to, line = [], "To:"
        for i, addr in enumerate(recipients):
            item = f" {addr}" + ("," if i < len(recipients) - 1 else "")
            if len(line) + len(item) > 78 and line != "To:":
                to.append(line)
                line = ""
            line += item
        to.append(line)
        subject = subject if subject.isascii() else encoded_words(subject)
        lines = [f"From: {sender}", "\r\n".join(to), f"Subject: {subject}",
                 f"Date: {format_datetime(date)}", f"Message-ID: {message_id}",
                 "MIME-Version: 1.0"]
        return ("\r\n".join(lines) + "\r\n").encode("ascii")
    outer = EmailMessage(policy=SMTP)
    outer["From"] = sender
    outer["To"] = ", ".join(recipients)
    outer["Subject"] = subject
    outer["Date"] = format_datetime(date)
    outer["Message-ID"] = message_id
    outer["MIME-Version"] = "1.0"
    return _headers_bytes(outer)[:-2]
