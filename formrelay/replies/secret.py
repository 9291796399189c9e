"""The cryptography of reply keys (no Flask, no database).

Per submission an OpenPGP key pair (v4, Curve25519, made in memory with Sequoia). The
answer is an OpenPGP message to its certificate (letter.py), so the server, or the
clinician's browser, can encrypt an answer without being able to read it back. The
private half (its secret key packets) is stored only wrapped (AES-256-GCM, bound to the
reference) with a key made from two secrets:

* the patient's reply code, through Argon2id (64 MiB, 3 passes): each guess costs that;
* a pepper derived from FORMRELAY_SECRET_KEY, which is not in the database.

So a stolen database (and data folder) opens nothing without the server's secret, and
the server's secret opens nothing without the code: an offline guess of a 12-character
code (about 59 bits) with both costs 2^58 Argon2id runs on average. docs/replies.md
explains the choice. Rows made before answers were OpenPGP messages hold a raw X25519
key (`is_legacy`); their answers (ephemeral X25519, HKDF, AES-256-GCM) still open.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..intake.submission import REFERENCE_ALPHABET

CODE_LENGTH = 12  # 30 symbols: about 59 bits
ARGON2 = {"time_cost": 3, "memory_cost": 64 * 1024, "parallelism": 1}
RAW = serialization.Encoding.Raw


def new_code() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(CODE_LENGTH))


def shown_code(code: str) -> str:
    """The code in groups of four, as the patient writes it down."""
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


def normalize_code(text: str) -> str:
    return re.sub(r"[\s\-.]", "", text or "").upper()[:40]


def _hkdf(material: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"formrelay reply v1|{info}".encode()).derive(material)


def slow_key(code: str, salt: bytes) -> bytes:
    """The costly part of the wrapping key: Argon2id of the code. Made once per code,
    before the reference is final (the relay draws a new one when two collide)."""
    return hash_secret_raw(normalize_code(code).encode(), salt, hash_len=32, type=Type.ID,
                           **ARGON2)


def finish_key(slow: bytes, server_secret: str, reference: str) -> bytes:
    """The wrapping key from `slow_key`'s result, the server's pepper and the reference."""
    pepper = hmac.new(hashlib.sha256(f"formrelay reply pepper|{server_secret}".encode())
                      .digest(), reference.encode(), hashlib.sha256).digest()
    return _hkdf(slow + pepper, f"wrap|{reference}")


def wrap_key(code: str, salt: bytes, server_secret: str, reference: str) -> bytes:
    """The key that wraps the private half: Argon2id(code) and the server's pepper."""
    return finish_key(slow_key(code, salt), server_secret, reference)


@dataclass(frozen=True)
class NewPair:
    """A submission's reply key pair before its reference is final: `wrapped` makes the
    stored form for the reference the submission was stored under."""

    code: str
    salt: bytes
    slow: bytes
    private: bytes
    public: bytes

    def wrapped(self, server_secret: str, reference: str) -> bytes:
        key = finish_key(self.slow, server_secret, reference)
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(key).encrypt(nonce, self.private, reference.encode())


def make_pair(code: str) -> NewPair:
    """A new OpenPGP key pair for `code` (one Argon2id run): a v4 Curve25519 key that
    gpg, rnp, Sequoia and OpenPGP.js read; the public half is an armoured certificate,
    the private half its secret key packets (binary), kept only wrapped."""
    import pysequoia

    tsk = pysequoia.Tsk.generate(user_id="formrelay reply key",
                                 profile=pysequoia.Profile.RFC4880)
    salt = secrets.token_bytes(16)
    return NewPair(code, salt, slow_key(code, salt), bytes(tsk),
                   str(tsk.extract_certificate()).encode())


def unwrap(key: bytes, wrapped: bytes, reference: str) -> bytes:
    """The private half from its wrapped form with the key `wrap_key` made; InvalidTag
    when the key is wrong."""
    return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], reference.encode())


def is_legacy(public_key: bytes) -> bool:
    """A raw X25519 key of the first answers (before they were OpenPGP messages): its
    answer is opened by `open_with_key`."""
    return len(public_key) == 32


def seal_answer(public_key: bytes, text: str, reference: str) -> bytes:
    """An answer to a legacy key (`is_legacy`): rows made before answers were OpenPGP."""
    eph = X25519PrivateKey.generate()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(public_key))
    key = _hkdf(shared, f"answer|{reference}")
    nonce = secrets.token_bytes(12)
    eph_pub = eph.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)
    return eph_pub + nonce + AESGCM(key).encrypt(nonce, text.encode(), reference.encode())


def open_answer(code: str, salt: bytes, wrapped: bytes, answer: bytes, server_secret: str,
                reference: str) -> str:
    """The answer's text; cryptography's InvalidTag when the code (or the server's
    secret) is wrong."""
    key = wrap_key(code, salt, server_secret, reference)
    return open_with_key(key, wrapped, answer, reference)


def open_with_key(key: bytes, wrapped: bytes, answer: bytes, reference: str) -> str:
    """The answer's text with the key `wrap_key` made (the slow part done once);
    InvalidTag when the key is wrong."""
    raw = AESGCM(key).decrypt(wrapped[:12], wrapped[12:], reference.encode())
    private = X25519PrivateKey.from_private_bytes(raw)
    shared = private.exchange(X25519PublicKey.from_public_bytes(answer[:32]))
    plain = AESGCM(_hkdf(shared, f"answer|{reference}")).decrypt(
        answer[32:44], answer[44:], reference.encode())
    return plain.decode()


def code_opens(code: str, salt: bytes, wrapped: bytes, server_secret: str,
               reference: str) -> bool:
    """Does the code unwrap the private key (checked before any answer exists)?"""
    return key_opens(wrap_key(code, salt, server_secret, reference), wrapped, reference)


def key_opens(key: bytes, wrapped: bytes, reference: str) -> bool:
    """Does the key `wrap_key` made unwrap the private key?"""
    from cryptography.exceptions import InvalidTag

    try:
        AESGCM(key).decrypt(wrapped[:12], wrapped[12:], reference.encode())
    except InvalidTag:
        return False
    return True
