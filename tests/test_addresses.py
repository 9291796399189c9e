"""The header-safety check of e-mail addresses (intake/addresses.py): plain addresses take
a shortcut past the email package's round trip, and must get the same answer from both;
anything the round trip refuses is still refused."""

from __future__ import annotations

import random
import string

import pytest

from formrelay.intake.addresses import _round_trip_problem, header_problem

_ATOM = string.ascii_letters + string.digits + "_%+-"
_LABEL = string.ascii_letters + string.digits + "-"


def _plain_addresses(n: int, seed: int = 17) -> list[str]:
    """Random addresses of the shortcut's alphabet: short and long atoms, one to four of
    them on each side, up to the 254-character limit."""
    rnd = random.Random(seed)

    def atom(alphabet: str, longest: int) -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, longest)))

    out: list[str] = []
    while len(out) < n:
        local = ".".join(atom(_ATOM, rnd.choice((3, 12, 70))) for _ in range(rnd.randint(1, 4)))
        domain = ".".join(atom(_LABEL, rnd.choice((5, 40))) for _ in range(rnd.randint(1, 4)))
        address = f"{local}@{domain}"
        if len(address) <= 254:
            out.append(address)
    return out


TYPICAL = ["jeroen.vandenbergh@example.nl", "a@b", "x_y%z+tag@mail-1.example.co.uk",
           "-@-", "1.2.3@4.5.6"]


def test_plain_addresses_pass_like_the_round_trip() -> None:
    for address in TYPICAL + _plain_addresses(1500):
        assert _round_trip_problem(address) == "", address
        assert header_problem(address) == "", address


REFUSED = [
    "=?utf-8?b?DQpCY2M6IHpAcQ==?=@example.org",  # decodes to a line break and a Bcc
    "=?utf-8?q?x=40y?=@example.org",  # decodes to another address
    "a\r\nBcc: x@example.org",
    "a\u2028b@example.org",  # a line separator
    "a\u200b@example.org",  # a zero-width space (Cf)
    "Dr. Who <who@example.org>",  # a display name: not the bare address typed
    "a@example.org, b@example.org",  # two addresses
    "a..b@example.org",
    ".a@example.org",
    "a@example..org",
]


@pytest.mark.parametrize("address", REFUSED)
def test_what_the_round_trip_refuses_is_refused(address: str) -> None:
    """None of these fit the shortcut: the full check answers, with a reason that never
    echoes the address."""
    problem = header_problem(address)
    assert problem == _round_trip_problem(address)
    if problem:
        assert address not in problem


@pytest.mark.parametrize("address", REFUSED[:7])
def test_unsafe_addresses_have_a_reason(address: str) -> None:
    assert header_problem(address) != ""


def test_an_address_longer_than_a_mail_path_takes_the_full_check() -> None:
    long = "a" * 64 + "@" + ".".join(["b" * 60] * 4)  # 309 characters
    assert header_problem(long) == _round_trip_problem(long)
