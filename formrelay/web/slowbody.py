"""A deadline for reading a request's body, so a slow client cannot hold a connection
(and the part of a post it sent so far) for ever.

The body must arrive within `timeout` seconds plus one second for every `min_rate` bytes
received (the rule of Apache's mod_reqtimeout, "body=20,MinRate=500"): a phone uploading
a large file over a slow link keeps going, a client trickling a byte every few seconds is
cut off. A body that falls behind raises 408 while the form is being read, so the view
never gets a form: nothing of it is validated, encrypted or stored.

A read that blocks is interrupted at the deadline, not only checked between reads: under
gunicorn's gevent worker (the production server, formrelay/server.py) by a
gevent.Timeout, under a threaded gunicorn by the socket's own timeout (each wait for
data). The demo's development server only checks between reads.

The body is read in pieces, each under its own timer, and the size of a piece follows
the time the client has in hand (`left`, what it earned by sending faster than the
minimum rate): what a client at the minimum rate would send in an eighth of that time,
at least max(1 KB, min_rate) bytes and at most 64 KB (or min_rate bytes, if larger). A
fast upload is read in 64 KB pieces, a timer per piece costs it little; a client near
its deadline is read in small pieces again. A piece's timer allows the bytes it asks
for (they earn `size / min_rate` seconds once there), so a client that goes silent or
trickles is cut off at most max(max(1 KB, min_rate) / min_rate seconds, an eighth of
the time it had in hand) after its deadline: two seconds at the default 500 B/s when it
is close to it, and never more than 64 KB / min_rate seconds.

A body the server cannot read at all (a chunk size that is not a number, a chunked body
that ends before its last chunk, a client gone mid-body) is refused here too, as the
400 of `request.unreadable_body`: whatever the server's own exception for it (gunicorn
and werkzeug's development server each have theirs), the error page never becomes a 500,
and every later read meets the same refusal instead of a body that looks complete.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from werkzeug.exceptions import RequestTimeout

from .request import BadForm, unreadable_body

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MAX_PIECE = 64 * 1024  # enough that a timer per piece costs a fast upload little
LATE_SHARE = 8  # a piece's timer ends at most 1/8 of the time in hand after the deadline


class _TooSlow(Exception):
    """Raised into a greenlet that waits for body data when the body's time is up.
    Internal (outside the errors.py tree): it is turned into werkzeug's 408 at once."""


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


class DeadlineInput:
    """`wsgi.input` that refuses (408) a body arriving slower than allowed."""

    def __init__(self, stream: IO[bytes], sock: socket.socket | None, *, timeout: float,
                 min_rate: int, clock: Callable[[], float] = time.monotonic):
        self._stream, self._clock = stream, clock
        self._timeout, self._min_rate = timeout, min_rate
        self._start = clock()
        self._received = 0
        # the smallest piece: one to two seconds' worth of the minimum rate (see _size)
        self._chunk = max(1024, min_rate)
        self.timed_out = False
        self.broken: BadForm | None = None
        self._green = _gevent_patched()
        # a thread's socket: its timeout is lowered while reading, and restored after
        self._sock = None if self._green else sock
        self._sock_timeout = self._sock.gettimeout() if self._sock is not None else None

    def _left(self) -> float:
        return (self._start + self._timeout + self._received / self._min_rate
                - self._clock())

    def _size(self, want: int) -> int:
        """The next piece: what a client at the minimum rate sends in 1/LATE_SHARE of
        the time it has in hand, between `_chunk` and MAX_PIECE bytes (module
        docstring)."""
        earned = int(max(self._left(), 0) * self._min_rate / LATE_SHARE)
        return min(want, max(self._chunk, min(MAX_PIECE, earned)))

    def _refuse(self) -> RequestTimeout:
        self.timed_out = True
        return RequestTimeout("the request body arrived too slowly")

    def _piece(self, fn: Callable[[int], bytes], size: int) -> bytes:
        """At most `_size` bytes, so the time allowed can grow with what arrives: the
        bytes asked for earn `size / min_rate` seconds once they are there, and a client
        that never sends them is cut off at most that much after its deadline."""
        if self.broken is not None:
            raise self.broken
        left = self._left()
        if self.timed_out or left <= 0:
            raise self._refuse()
        allowed = left + size / self._min_rate
        try:
            if self._green:
                import gevent

                with gevent.Timeout(allowed, _TooSlow):
                    data = fn(size)
            else:
                if self._sock is not None:
                    self._sock.settimeout(allowed)
                data = fn(size)
        except (_TooSlow, TimeoutError):
            raise self._refuse() from None
        except Exception as exc:  # noqa: BLE001 - each server raises its own for a bad body
            self.broken = unreadable_body(type(exc).__name__)
            raise self.broken from None
        self._received += len(data)
        if self._left() < 0:  # a read that could not be interrupted
            raise self._refuse()
        return data

    def _pieces(self, fn: Callable[[int], bytes], size: int | None, line: bool) -> bytes:
        want = sys.maxsize if size is None or size < 0 else size
        out = bytearray()
        while len(out) < want:
            data = self._piece(fn, self._size(want - len(out)))
            out += data
            if not data or (line and data.endswith(b"\n")):
                break
        return bytes(out)

    def read(self, size: int | None = -1) -> bytes:
        return self._pieces(self._stream.read, size, line=False)

    def readline(self, size: int | None = -1) -> bytes:
        return self._pieces(self._stream.readline, size, line=True)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def release(self) -> None:
        """Give the socket its own timeout back before the answer is written."""
        if self._sock is not None:
            try:
                self._sock.settimeout(self._sock_timeout)
            except OSError:
                pass  # already closed


class BodyDeadline:
    """WSGI middleware: every request's body is read under a `DeadlineInput`."""

    def __init__(self, app: WsgiApp, *, timeout: float, min_rate: int):
        self.app, self.timeout, self.min_rate = app, timeout, min_rate

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = DeadlineInput(environ["wsgi.input"], environ.get("gunicorn.socket"),
                               timeout=self.timeout, min_rate=self.min_rate)
        environ["wsgi.input"] = stream
        try:
            return self.app(environ, start_response)
        finally:
            stream.release()
