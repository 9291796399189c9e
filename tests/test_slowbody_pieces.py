"""The body deadline's piece size (web/slowbody.py): a fast upload is read in large
pieces, and a client that goes silent or trickles is still cut off close to its
deadline. A client on a clock of its own: each byte arrives at a set time, and a read
that would wait past the socket timeout the deadline set fails the way a socket does."""

from __future__ import annotations

import io

import pytest
from werkzeug.exceptions import RequestTimeout

from formrelay.web.slowbody import LATE_SHARE, MAX_PIECE, DeadlineInput

TIMEOUT, MIN_RATE = 20, 500  # the defaults of server.body_timeout_seconds / body_min_rate
SMALLEST = max(1024, MIN_RATE)


class Client:
    """`total` bytes sent at `rate` bytes a second from time 0, then nothing; or the
    whole body if it is `complete` (a read past its end gets what is left)."""

    def __init__(self, rate: float, total: int, complete: bool = False):
        self.rate, self.total, self.complete = rate, total, complete
        self.now = 0.0
        self.pos = 0
        self.timeout: float | None = None  # what the deadline set on the socket
        self.pieces: list[tuple[int, float, float]] = []  # (size, time in hand, timer)

    def clock(self) -> float:
        return self.now

    # the socket's side
    def gettimeout(self) -> float | None:
        return None

    def settimeout(self, value: float | None) -> None:
        self.timeout = value

    # the stream's side: a blocking read of `size` bytes
    def read(self, size: int) -> bytes:
        assert self.timeout is not None
        left = TIMEOUT + self.pos / MIN_RATE - self.now
        self.pieces.append((size, left, self.timeout))
        end = self.pos + size
        if self.complete:
            end = min(end, self.total)
        arrives = end / self.rate if end <= self.total else float("inf")
        if max(arrives, self.now) - self.now > self.timeout:
            self.now += self.timeout
            raise TimeoutError("timed out")
        self.now = max(arrives, self.now)
        data = b"x" * (end - self.pos)
        self.pos = end
        return data


def body(client: Client) -> DeadlineInput:
    return DeadlineInput(io.BytesIO(), None, timeout=TIMEOUT, min_rate=MIN_RATE,
                         clock=client.clock)


def reader(client: Client) -> DeadlineInput:
    stream = body(client)
    stream._stream = client  # type: ignore[assignment]  # reads from the client
    stream._sock = client  # type: ignore[assignment]  # its timeout is the client's
    stream._green = False
    return stream


def test_a_fast_upload_is_read_in_large_pieces() -> None:
    client = Client(rate=20_000_000, total=4 << 20)
    stream = reader(client)
    for _ in range(4):
        assert len(stream.read(1 << 20)) == 1 << 20
    sizes = [size for size, _, _ in client.pieces]
    assert max(sizes) == MAX_PIECE
    # 4 MB in about a hundred timed reads, not four thousand 1 KB ones
    assert len(sizes) < 120, len(sizes)
    # no piece's timer ends more than an eighth of the time in hand after the deadline
    for _size, left, timer in client.pieces:
        assert timer - left <= max(SMALLEST / MIN_RATE, left / LATE_SHARE) + 1e-9


def _deadline(client: Client) -> float:
    """When the client runs out of time: TIMEOUT plus what its bytes earned."""
    if client.rate < MIN_RATE:  # falls behind while still sending
        return TIMEOUT / (1 - client.rate / MIN_RATE)
    return TIMEOUT + client.total / MIN_RATE


@pytest.mark.parametrize(("rate", "total", "late"), [
    # sends 1 MB fast, then nothing: ~2100 s in hand, cut off within 64 KB / min_rate
    (20_000_000, 1 << 20, MAX_PIECE / MIN_RATE),
    # sends 2 KB, then nothing: near its deadline, read in 1 KB pieces as before
    (20_000_000, 2048, SMALLEST / MIN_RATE),
    # trickles at a fifth of the minimum rate: small pieces at the end, cut off within 2 s
    (100, 1 << 20, SMALLEST / MIN_RATE),
])
def test_a_silent_or_trickling_client_is_cut_off_close_to_its_deadline(
        rate: int, total: int, late: float) -> None:
    client = Client(rate=rate, total=total)
    stream = reader(client)
    with pytest.raises(RequestTimeout):
        while stream.read(1 << 20):
            pass
    assert stream.timed_out
    deadline = _deadline(client)
    assert deadline - 0.01 <= client.now <= deadline + late + 0.01, (client.now, deadline)
    # nothing past what was sent was handed on
    assert client.pos <= total


def test_a_client_at_the_minimum_rate_is_not_cut_off() -> None:
    """The promise kept for a slow phone: a long body at exactly the minimum rate."""
    client = Client(rate=MIN_RATE, total=200_000, complete=True)  # 400 s, twenty times the timeout
    stream = reader(client)
    assert len(stream.read()) == 200_000
    assert not stream.timed_out
