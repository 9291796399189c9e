"""The mail formrelay sends around a stored ciphertext (no Flask, no network).

`encrypted_message()` wraps the ciphertext in the outer RFC 3156 message that is mailed
(`multipart/encrypted`), as a stream (`Streamed`), with generic outer headers only. The
plaintext inside, the payload, is intake's (intake/payload.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from ..intake.payload import outer_headers


@dataclass(frozen=True)
class Streamed:
    """A message too large to hold in memory: `write(dest)` writes it piece by piece;
    `size` is its size on the wire (for SMTP SIZE and the size limit)."""

    write: Callable[[IO[bytes]], object]
    size: int


def encrypted_message(*, sender: str, recipients: list[str] | tuple[str, ...], subject: str,
                      date: datetime, message_id: str, ciphertext: Callable[[IO[bytes]], object],
                      ciphertext_size: int) -> Streamed:
    """RFC 3156 `multipart/encrypted` around the armoured ciphertext that
    `ciphertext(dest)` writes, unchanged (7bit, not re-encoded). The outer headers are
    the generic ones the caller gives: no patient data, no field names."""
    # Derived from the Message-ID, so every retry is the same message byte for byte.
    boundary = "fr-enc-" + hashlib.sha256(message_id.encode()).hexdigest()[:24]
    head = (outer_headers(sender, recipients, subject, date, message_id)
            + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
            + f' boundary="{boundary}"\r\n\r\n'.encode()
            + b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
            + f"--{boundary}\r\n".encode()
            + b"Content-Type: application/pgp-encrypted\r\n"
              b"Content-Description: PGP/MIME version identification\r\n"
              b"Content-Transfer-Encoding: 7bit\r\n\r\n"
              b"Version: 1\r\n\r\n"
            + f"--{boundary}\r\n".encode()
            + b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
              b"Content-Description: OpenPGP encrypted message\r\n"
              b'Content-Disposition: inline; filename="encrypted.asc"\r\n'
              b"Content-Transfer-Encoding: 7bit\r\n\r\n")
    tail = f"\r\n--{boundary}--\r\n".encode()

    def write(dest: IO[bytes]) -> None:
        dest.write(head)
        ciphertext(dest)
        dest.write(tail)

    size = len(head) + ciphertext_size + ciphertext_size // 64 + len(tail)
    return Streamed(write, size)
