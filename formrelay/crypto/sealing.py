"""Sealing small secrets at rest with a key derived from FORMRELAY_SECRET_KEY (no Flask).

Some values the database must hold can open something on their own: a queued patient-
copy link mail holds the link's secret, a clinician's TOTP secret makes login codes.
They are stored sealed: AES-256-GCM under a key derived with HKDF-SHA256 from
FORMRELAY_SECRET_KEY, one key per `purpose`, and bound to where the value belongs
(`aad`, e.g. the user id), so a copied file or a value moved to another row opens
nothing. Format: b"v1" + 12-byte nonce + ciphertext and tag; `seal_text` wraps it as
"sealed:v1:<base64url>" for TEXT columns. A changed secret key means sealed values
cannot be opened any more (`Unsealable`); callers say what to do then.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import OperatorError

VERSION = b"v1"
TEXT_PREFIX = "sealed:v1:"
NONCE_BYTES = 12


class Unsealable(OperatorError, ValueError):
    """A sealed value cannot be opened: damaged, moved, or FORMRELAY_SECRET_KEY changed."""


@functools.lru_cache(maxsize=64)
def _key(secret_key: str, purpose: bytes) -> bytes:
    # derived once per key and purpose: every submission seals its mail's context
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=purpose).derive(secret_key.encode())


def seal(secret_key: str, purpose: bytes, data: bytes, aad: bytes) -> bytes:
    """`data` encrypted and authenticated; `aad` must be given again to open it."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return VERSION + nonce + AESGCM(_key(secret_key, purpose)).encrypt(nonce, data, aad)


def unseal(secret_key: str, purpose: bytes, blob: bytes, aad: bytes) -> bytes:
    """What `seal` sealed; Unsealable if it cannot be opened."""
    if not blob.startswith(VERSION) or len(blob) < len(VERSION) + NONCE_BYTES + 16:
        raise Unsealable("unknown sealed format")
    start = len(VERSION)
    try:
        return AESGCM(_key(secret_key, purpose)).decrypt(
            blob[start:start + NONCE_BYTES], blob[start + NONCE_BYTES:], aad)
    except InvalidTag:
        raise Unsealable("sealed value does not open with this key") from None


def seal_json(secret_key: str, purpose: bytes, data: dict[str, Any], aad: bytes) -> bytes:
    """`seal` for a mail's payload: a JSON object."""
    return seal(secret_key, purpose, json.dumps(data, ensure_ascii=False).encode(), aad)


def unseal_json(secret_key: str, purpose: bytes, blob: bytes, aad: bytes) -> dict[str, Any]:
    """What `seal_json` sealed; Unsealable if it cannot be opened."""
    out: dict[str, Any] = json.loads(unseal(secret_key, purpose, blob, aad))
    return out


def is_sealed_text(value: str | None) -> bool:
    return bool(value) and str(value).startswith(TEXT_PREFIX)


def seal_text(secret_key: str, purpose: bytes, text: str, aad: bytes) -> str:
    """`seal` for a TEXT column: "sealed:v1:<base64url>"."""
    blob = seal(secret_key, purpose, text.encode("utf-8"), aad)
    return TEXT_PREFIX + base64.urlsafe_b64encode(blob[len(VERSION):]).decode("ascii")


def unseal_text(secret_key: str, purpose: bytes, value: str, aad: bytes) -> str:
    if not is_sealed_text(value):
        raise Unsealable("not a sealed value")
    try:
        raw = base64.urlsafe_b64decode(value[len(TEXT_PREFIX):].encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise Unsealable("damaged sealed value") from None
    try:
        return unseal(secret_key, purpose, VERSION + raw, aad).decode("utf-8")
    except UnicodeDecodeError:
        raise Unsealable("damaged sealed value") from None
