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
import re

from ..errors import OperatorError

SEIPD_V1 = "SEIPD v1"
_NAMES = {9: "SED (no integrity protection)", 20: "OCB (AEAD, LibrePGP)"}


class PacketError(OperatorError, ValueError):
    """The bytes are not an OpenPGP message that can be read here."""


def dearmor(data: bytes, prefix: int = 0) -> bytes:
    """The binary form of an ASCII-armoured message (binary input is returned as is);
    with `prefix`, of about its first `prefix` bytes only (enough for packet headers)."""
    if not data.lstrip().startswith(b"-----BEGIN PGP"):
        return data
    # Byte searches and one C decode, no loop over lines: every post's ciphertext made
    # in process is read back here (crypto/inprocess.py checks its packet type).
    head = _BLANK_LINE.search(data)
    if head is None:
        raise PacketError("armour without a blank line after its headers")
    # the body runs to the checksum line ("=XXXX") or the END line, whichever is first
    ends = [i for i in (data.find(b"\n=", head.end() - 1),
                        data.find(b"\n-----END", head.end() - 1)) if i >= 0]
    body = data[head.end():min(ends) if ends else len(data)]
    joined = body.replace(b"\r", b"").replace(b"\n", b"")
    if b" " in joined or b"\t" in joined:  # blanks around lines are dropped, not inside
        joined = b"".join(ln.strip() for ln in body.splitlines())
    if prefix:
        joined = joined[:(prefix + 2) // 3 * 4]  # whole base64 groups
    try:
        return base64.b64decode(joined, validate=True)
    except (binascii.Error, ValueError):
        raise PacketError("armour is not valid base64") from None


# The first empty (or blank) line ends the armour headers.
_BLANK_LINE = re.compile(rb"\r?\n[ \t]*\r?\n")


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
    """The name of the message's encrypted-data packet: "SEIPD v1" is the one wanted.
    The headers come first: the first few KB are read, the whole message only when the
    session-key packets (one per recipient) run past them."""
    if len(message) > _HEAD_BYTES * 2:
        try:
            return _encryption_packet(dearmor(message, _HEAD_BYTES))
        except PacketError:
            pass  # not within the first bytes: the whole message decides (and says why)
    return _encryption_packet(dearmor(message))


# Enough for the session-key packets of several RSA-4096 recipients (~530 bytes each).
_HEAD_BYTES = 6144


def _encryption_packet(data: bytes) -> str:
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


def pkesk_key_ids(message: bytes) -> list[str]:
    """The key IDs (hex, upper case) the message's v3 public-key session-key packets
    name, read from the start of a binary OpenPGP message."""
    ids, pos = [], 0
    while pos < len(message):
        tag, start, length = _header(message, pos)
        if tag != 1 or length < 0:
            break
        if message[start] == 3:
            ids.append(message[start + 1:start + 9].hex().upper())
        pos = start + length
    return ids


def key_ids(data: bytes) -> set[str]:
    """The key IDs (hex, upper case) of every v4 public key and subkey in a certificate
    (armoured or binary): the IDs a message encrypted to it may name."""
    data = dearmor(data)
    found, pos = set(), 0
    while pos < len(data):
        tag, start, length = _header(data, pos)
        if length < 0 or start + length > len(data):
            raise PacketError("truncated or streamed packet in a key file")
        if tag in (6, 14) and length and data[start] == 4:
            digest = hashlib.sha1(b"\x99" + length.to_bytes(2, "big")  # noqa: S324 - v4 fingerprint
                                  + data[start:start + length])
            found.add(digest.hexdigest().upper()[-16:])
        pos = start + length
    return found


def check_message_to(message: bytes, ids: set[str]) -> bytes:
    """The binary form of `message` if it is one whole OpenPGP message encrypted to
    exactly one of `ids` (one v3 session-key packet naming it, no password packet) with
    SEIPD v1 data that runs exactly to its end; PacketError saying what is wrong
    otherwise. Nothing is decrypted: this is what a server that cannot read it checks."""
    data = dearmor(message)
    named = pkesk_key_ids(data)
    if len(named) != 1 or named[0] not in ids:
        raise PacketError("not encrypted to exactly the patient's key")
    if _encryption_packet(data) != SEIPD_V1:
        raise PacketError("not SEIPD v1 encrypted data")
    pos = 0
    while True:  # walk to the end: every packet's length must add up
        tag, start, length = _header(data, pos)
        if tag == 18:
            break
        pos = start + length
    if length < 0 and not data[pos] & 0x40:  # old format, indeterminate: runs to the end
        return data
    pos = start
    while length < 0:  # partial body lengths: a chain of parts, the last one whole
        part = 1 << (data[pos - 1] & 0x1F)
        if pos + part >= len(data):
            raise PacketError("truncated encrypted data")
        pos += part
        o1 = data[pos]
        if o1 < 192:
            pos, length = pos + 1, o1
        elif o1 < 224:
            pos, length = pos + 2, ((o1 - 192) << 8) + data[pos + 1] + 192
        elif o1 == 255:
            pos, length = pos + 5, int.from_bytes(data[pos + 1:pos + 5], "big")
        else:
            pos += 1
    if pos + length != len(data):
        raise PacketError("the encrypted data does not end where the message does")
    return data
