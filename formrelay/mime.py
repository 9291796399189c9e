"""Build the MIME documents formrelay encrypts and sends (no Flask, no network).

`payload_stream()` produces the one plaintext that is encrypted per submission: a
complete MIME message (`multipart/mixed; protected-headers="v1"`) with the real subject
inside, a readable text body, the answers as JSON and the uploads as attachments. It is
produced as a stream, so a 20 MB upload is base64-encoded chunk by chunk straight into
gpg's stdin. Headers and small parts are made by Python's `email` package.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import format_datetime
from typing import IO

from .submission import Submission

# 57 raw bytes = one 76-character base64 line; read many lines at a time.
_B64_CHUNK = 57 * 1024


def message_id(reference: str, domain: str) -> str:
    """Fixed per submission, so a retried delivery is recognisably the same mail."""
    return f"<{reference.lower()}@{domain}>"


def text_body(sub: Submission, practice: str, labels: dict[str, str]) -> str:
    lines = [sub.form_title, "=" * len(sub.form_title), "",
             f"{labels['reference']}: {sub.reference}",
             f"{labels['received']}: {sub.received_at:%Y-%m-%d %H:%M} UTC",
             f"{labels['practice']}: {practice}", ""]
    for a in sub.answers:
        lines.append(f"{a.label}:")
        value = a.display() or "-"
        lines.extend(f"  {ln}" for ln in value.splitlines() or ["-"])
        lines.append("")
    return "\n".join(lines)


def _headers_bytes(msg: Message) -> bytes:
    """Just the header block (with its blank line) of a part without a body."""
    raw = msg.as_bytes(policy=SMTP)
    head, _, _ = raw.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n"


def _b64_lines(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(_B64_CHUNK):
        yield base64.encodebytes(chunk).replace(b"\n", b"\r\n")


def payload_parts(sub: Submission, *, sender: str, recipients: list[str], subject: str,
                  domain: str, practice: str, labels: dict[str, str]) -> Iterator[bytes]:
    boundary = "fr-" + secrets.token_hex(12)
    outer = EmailMessage(policy=SMTP)
    outer["Subject"] = subject
    outer["From"] = sender
    outer["To"] = ", ".join(recipients)
    outer["Date"] = format_datetime(sub.received_at)
    outer["Message-ID"] = message_id(sub.reference, domain)
    outer["MIME-Version"] = "1.0"
    outer["Content-Type"] = f'multipart/mixed; boundary="{boundary}"; protected-headers="v1"'
    yield _headers_bytes(outer)
    yield b"This is a multipart message in MIME format.\r\n"

    text = EmailMessage(policy=SMTP)
    text.set_content(text_body(sub, practice, labels), charset="utf-8", cte="quoted-printable")
    del text["MIME-Version"]
    yield f"\r\n--{boundary}\r\n".encode() + text.as_bytes(policy=SMTP)

    js = EmailMessage(policy=SMTP)
    js.set_content(json.dumps(sub.as_json(), ensure_ascii=False, indent=2).encode("utf-8"),
                   maintype="application", subtype="json", cte="base64",
                   disposition="attachment", filename="answers.json")
    del js["MIME-Version"]
    yield f"\r\n--{boundary}\r\n".encode() + js.as_bytes(policy=SMTP)

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
