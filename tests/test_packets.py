"""Reading the encrypted-data packet's type from a message's headers (crypto/packets.py),
as every in-process ciphertext is checked: from the first few KB when the headers fit
there, else from the whole message, with the same answer either way."""

from __future__ import annotations

import base64
import os

import pytest

from formrelay.crypto.packets import PacketError, dearmor, encryption_packet


def _packet(tag: int, body: bytes) -> bytes:
    """A new-format packet with a five-octet length."""
    return bytes([0xC0 | tag, 255]) + len(body).to_bytes(4, "big") + body


def _armour(data: bytes, crlf: bool = False) -> bytes:
    text = base64.b64encode(data).decode()
    lines = ["-----BEGIN PGP MESSAGE-----", "", *(text[i:i + 64] for i in
                                                   range(0, len(text), 64)),
             "=AbCd", "-----END PGP MESSAGE-----", ""]
    return ("\r\n" if crlf else "\n").join(lines).encode()


def _message(recipients: int, data_tag: int = 18, version: int = 1,
             size: int = 20000) -> bytes:
    """Session-key packets of RSA-4096 size, one per recipient, then the data packet."""
    keys = b"".join(_packet(1, os.urandom(530)) for _ in range(recipients))
    return keys + _packet(data_tag, bytes([version]) + os.urandom(size))


@pytest.mark.parametrize("recipients", [1, 3, 11, 30])  # 11 and 30 run past the first KB
@pytest.mark.parametrize("crlf", [False, True])
def test_the_packet_type_whatever_the_number_of_recipients(recipients: int,
                                                           crlf: bool) -> None:
    assert encryption_packet(_armour(_message(recipients), crlf)) == "SEIPD v1"
    assert encryption_packet(_armour(_message(recipients, version=2), crlf)) == "SEIPD v2"
    assert encryption_packet(_armour(_message(recipients, data_tag=20), crlf)) \
        == "OCB (AEAD, LibrePGP)"
    assert encryption_packet(_message(recipients)) == "SEIPD v1"  # binary


def test_the_prefix_decodes_like_the_whole() -> None:
    armoured = _armour(_message(2))
    whole = dearmor(armoured)
    assert whole == _message_bytes(armoured)
    assert dearmor(armoured, 6144)[:6144] == whole[:6144]


def _message_bytes(armoured: bytes) -> bytes:
    lines = armoured.decode().splitlines()
    return base64.b64decode("".join(ln for ln in lines[2:] if not ln.startswith(("=", "-"))))


@pytest.mark.parametrize("bad", [
    b"-----BEGIN PGP MESSAGE-----\nno blank line",
    b"-----BEGIN PGP MESSAGE-----\n\n!!! not base64 !!!\n-----END PGP MESSAGE-----\n",
])
def test_broken_armour_is_refused(bad: bytes) -> None:
    with pytest.raises(PacketError):
        encryption_packet(bad)


def test_a_message_cut_in_its_session_keys_is_refused_with_why() -> None:
    """Long, but cut inside the session-key packets: the whole message is read and the
    answer says where it ends, not a type guessed from the first KB."""
    cut = _message(30)[:12000]
    with pytest.raises(PacketError, match="ends before its encrypted data"):
        encryption_packet(_armour(cut))
