"""A copy's link secret and what is derived from it (no Flask, no database).

The link secret (256 bits from `secrets`) travels only in the link's fragment; the
copy's AES-GCM key, the check value the database keeps and the key that authenticates
the pickup code are all derived from it (HKDF-SHA256), so the database alone can open
no copy and test no code. The pickup code uses the references' alphabet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..intake.submission import REFERENCE_ALPHABET

SECRET_BYTES = 32  # the link secret: 256 bits
CODE_LENGTH = 6  # about 29 bits; 5 tries, and only with the link


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Decode url-safe base64 without padding; ValueError when it is not that."""
    text = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive(secret: bytes, purpose: str, copy_id: str) -> bytes:
    """A 256-bit value for one purpose (key, check, code) of one copy (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"formrelay copy v1|{purpose}|{copy_id}".encode()).derive(secret)


def new_code() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> str:
    """What the patient typed, as the code is stored: capitals, no spaces or dashes."""
    return re.sub(r"[\s\-.]", "", text or "").upper()[:32]


def code_mac(secret: bytes, copy_id: str, code: str) -> str:
    return hmac.new(derive(secret, "code", copy_id), normalize_code(code).encode(),
                    hashlib.sha256).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
