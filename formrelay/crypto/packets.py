"""Which kind of encrypted-data packet a message uses, read from its packet headers.

Every OpenPGP client reads the classic integrity-protected packet, SEIPD version 1
(tag 18, version byte 1). GnuPG 2.4 can write an OCB packet instead (tag 20, LibrePGP)
when every recipient key advertises AEAD, and RFC 9580 defines SEIPD version 2; many
clients (Sequoia, PGPainless, OpenKeychain, older GpgOL and Proton versions) cannot
read those. `formrelay check` encrypts a probe to each key and uses `encryption_packet`
to prove which one gpg wrote. Only headers are parsed; nothing is decrypted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from ..errors import OperatorError

SEIPD_V1 = "SEIPD v1"
_NAMES = {9: "SED (no integrity protection)", 20: "OCB (AEAD, LibrePGP)"}


class PacketError(OperatorError, ValueError):
    """The bytes are not an OpenPGP message that can be read here."""


def dearmor(data: bytes) -> bytes:
    """The binary form of an ASCII-armoured message (binary input is returned as is)."""
    if not data.lstrip().startswith(b"-----BEGIN PGP"):
        return data
    lines = data.decode("ascii", "replace").splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if not ln.strip()) + 1
    except StopIteration:
        raise PacketError("armour without a blank line after its headers") from None
    body = []
    for ln in lines[start:]:
        if ln.startswith("-----END") or ln.startswith("="):
            break
        body.append(ln.strip())
    try:
        return base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise PacketError("armour is not valid base64") from None


def _header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, body start, body length or -1 when it runs to the end / is partial)."""
    if pos >= len(data):
        raise PacketError("message ends before its encrypted data")
    first = data[pos]
    if not first & 0x80:
        raise PacketError(f"not an OpenPGP packet at byte {pos}")
    if first & 0x40:  # new format
        tag = first & 0x3F
        if pos + 1 >= len(data):
            raise PacketError("truncated packet header")
        o1 = data[pos + 1]
        if o1 < 192:
            return tag, pos + 2, o1
        if o1 < 224:
            return tag, pos + 3, ((o1 - 192) << 8) + data[pos + 2] + 192
        if o1 == 255:
            return tag, pos + 6, int.from_bytes(data[pos + 2:pos + 6], "big")
        return tag, pos + 2, -1  # partial body length: the packet streams on
    tag, kind = (first >> 2) & 0x0F, first & 0x03
    if kind == 3:
        return tag, pos + 1, -1
    width = (1, 2, 4)[kind]
    return tag, pos + 1 + width, int.from_bytes(data[pos + 1:pos + 1 + width], "big")


def encryption_packet(message: bytes) -> str:
    """The name of the message's encrypted-data packet: "SEIPD v1" is the one wanted."""
    data = dearmor(message)
    pos = 0
    while True:
        tag, start, length = _header(data, pos)
        if tag == 18:
            if start >= len(data):
                raise PacketError("truncated SEIPD packet")
            return f"SEIPD v{data[start]}"
        if tag in _NAMES:
            return _NAMES[tag]
        if tag not in (1, 3):  # public-key and symmetric-key session keys come first
            raise PacketError(f"unexpected packet (tag {tag}) before the encrypted data")
        if length < 0:
            raise PacketError("session-key packet with an indeterminate length")
        pos = start + length


# Public-key packet versions -> (hash, prefix byte, length width) of the fingerprint:
# v4 (RFC 4880) SHA-1, v5 (LibrePGP) and v6 (RFC 9580) SHA-256.
_FINGERPRINT = {4: ("sha1", 0x99, 2), 5: ("sha256", 0x9A, 4), 6: ("sha256", 0x9B, 4)}


def key_fingerprints(data: bytes) -> tuple[list[str], bool]:
    """The fingerprints of the primary public keys in a key file (armoured or binary),
    and whether it holds secret key material. Only packet headers and public-key
    bodies are read: a cheap check of a key file before gpg imports it."""
    data = dearmor(data)
    found: list[str] = []
    secret = False
    pos = 0
    while pos < len(data):
        tag, start, length = _header(data, pos)
        if length < 0 or start + length > len(data):
            raise PacketError("truncated or streamed packet in a key file")
        if tag in (5, 7):  # secret key, secret subkey
            secret = True
        elif tag == 6 and length:  # a primary public key
            version = data[start]
            if version not in _FINGERPRINT:
                raise PacketError(f"key packet version {version} is not supported")
            algo, prefix, width = _FINGERPRINT[version]
            digest = hashlib.new(algo, bytes([prefix]) + length.to_bytes(width, "big")
                                 + data[start:start + length])
            found.append(digest.hexdigest().upper())
        pos = start + length
    return found, secret


# Public-key material of a v4 key packet, by algorithm: how many MPIs, after an OID?
_MPIS = {1: 2, 2: 2, 3: 2, 16: 3, 17: 4}  # RSA, Elgamal, DSA
_OID_MPI = {19: 0, 22: 0, 18: 1}  # ECDSA, EdDSA (legacy), ECDH (+ its KDF parameters)
_FIXED = {25: 32, 26: 56, 27: 32, 28: 57}  # X25519, X448, Ed25519, Ed448 (RFC 9580)


def _mpi_end(data: bytes, pos: int) -> int:
    if pos + 2 > len(data):
        raise PacketError("truncated key material")
    return pos + 2 + (int.from_bytes(data[pos:pos + 2], "big") + 7) // 8


def secret_key_locks(key: bytes) -> list[int]:
    """The S2K usage octet of every secret (sub)key packet in `key`: 0 means the secret
    is NOT locked by a passphrase. An empty list: no secret key at all. The server uses
    this to refuse a "locked" private key that is in fact readable."""
    data = dearmor(key)
    locks, pos = [], 0
    while pos < len(data):
        tag, start, length = _header(data, pos)
        if length < 0:
            raise PacketError("key packet with an indeterminate length")
        if tag in (5, 7):  # secret key, secret subkey
            if data[start] != 4:
                raise PacketError(f"version {data[start]} secret key: only v4 keys are read")
            algo, p = data[start + 5], start + 6
            if algo in _MPIS:
                for _ in range(_MPIS[algo]):
                    p = _mpi_end(data, p)
            elif algo in _OID_MPI:
                p = _mpi_end(data, p + 1 + data[p])  # the curve's OID, then the point
                if _OID_MPI[algo]:
                    p += 1 + data[p]  # ECDH's KDF parameters
            elif algo in _FIXED:
                p += _FIXED[algo]
            else:
                raise PacketError(f"unknown public-key algorithm {algo}")
            if p >= start + length:
                raise PacketError("secret key packet without its secret part")
            locks.append(data[p])
        pos = start + length
    return locks
