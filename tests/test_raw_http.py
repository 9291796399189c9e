"""Malformed HTTP never gets a 500: a real `formrelay serve` (gunicorn, gevent workers)
is sent, over raw sockets, the requests a scanner or a broken client sends. Each gets a
clear 4xx (the product's error page, or its JSON shape when the client asks for JSON;
gunicorn answers a few itself before the app sees them), the connection is closed
cleanly, nothing is stored, no application error is logged, and the next request on a
new connection is served.

Every body carries a genuine form token and valid answers: a server that took a broken
body for a whole one would store it."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import encode_multipart, make_config_dict, open_store, write_config
from .helpers.reload import serving
from .helpers.servers import _hidden, _http
from .keys import TestKey
from .smtpd import free_port

pytestmark = pytest.mark.sqlite_only  # about HTTP parsing; the store is only looked at

BODY_TIMEOUT = 4  # server.body_timeout_seconds: a body cut short is refused after it
TWO_GB = 2 * 1024**3
BOUNDARY = "frrawboundary"
JSON = "application/json"


@dataclass
class Server:
    port: int
    log: Path
    data: Path

    def hidden(self) -> dict[str, str]:
        """A freshly shown form's control fields (its token)."""
        status, page, _ = _http(f"http://127.0.0.1:{self.port}/f/intake")
        assert status == 200
        return _hidden(page)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           keys: dict[str, TestKey]) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("raw")
    port = free_port()
    cfg = make_config_dict(tmp / "data", keys, server={
        "base_url": f"http://127.0.0.1:{port}", "body_timeout_seconds": BODY_TIMEOUT,
        "rate_limit_ip": "1000/minute", "rate_limit_form": "1000/minute"})
    config = write_config(tmp / "config.toml", cfg)
    with serving(tmp, config, port) as (_, log):
        yield Server(port, log, tmp / "data")


def answers(hidden: dict[str, str]) -> dict[str, str]:
    return {**hidden, "name": "Anna Raw", "complaint": "Knie", "consent": "y"}


def urlencoded(hidden: dict[str, str]) -> bytes:
    return urllib.parse.urlencode(answers(hidden)).encode()


@dataclass
class Answer:
    status: int
    head: str
    body: bytes
    closed: bool  # the server closed the connection after its answer
    seconds: float  # until the answer's first bytes


@dataclass
class Case:
    """`build(port, hidden)` gives the bytes to send; `status` the answer wanted and
    `says` the text the page (or the JSON error) shows, None where gunicorn answers
    before the app. `closes`: where the next request would start is unknown, so the
    server must close the connection after its answer. `shut` closes our sending side
    after the request (the client hung up mid-body)."""

    id: str
    build: Callable[[int, dict[str, str]], bytes]
    status: int
    says: str | None
    closes: bool = False
    json: bool = False
    shut: bool = False
    within: float = 2  # seconds until the answer starts


UNREADABLE = "Het verzoek kon niet worden gelezen"
TOO_SLOW = "Het versturen duurde te lang"
TOO_LARGE = "Wat u verstuurde is te groot"
CUT_OFF = "Het formulier kwam onvolledig aan, dus er is niets opgeslagen"


def head(port: int, method: str = "POST", *lines: str, path: str = "/f/intake",
         version: str = "HTTP/1.1", accept: str = "text/html") -> bytes:
    start = [f"{method} {path} {version}", f"Host: 127.0.0.1:{port}",
             f"Origin: http://127.0.0.1:{port}", f"Accept: {accept}", *lines]
    return ("\r\n".join(start) + "\r\n\r\n").encode()


def chunked(port: int, chunks: bytes, accept: str = "text/html") -> bytes:
    return head(port, "POST", "Content-Type: application/x-www-form-urlencoded",
                "Transfer-Encoding: chunked", accept=accept) + chunks


def _bad_hex(port: int, h: dict[str, str], accept: str = "text/html") -> bytes:
    body = urlencoded(h)
    return chunked(port, b"zz\r\n" + body + b"\r\n0\r\n\r\n", accept)


def _bad_second(port: int, h: dict[str, str]) -> bytes:
    body = urlencoded(h)
    return chunked(port, b"%x\r\n%s\r\nzz\r\nabc\r\n0\r\n\r\n" % (len(body), body))


def _negative(port: int, h: dict[str, str]) -> bytes:
    body = urlencoded(h)
    return chunked(port, b"-%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))


def _larger(port: int, h: dict[str, str]) -> bytes:
    body = urlencoded(h)
    return chunked(port, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) + 4096, body))


def _cut_short(port: int, h: dict[str, str]) -> bytes:
    body = urlencoded(h)
    return chunked(port, b"%x\r\n%s" % (len(body), body[: len(body) // 2]))


def _cl_and_te(port: int, h: dict[str, str]) -> bytes:
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(urlencoded(h)), urlencoded(h))
    return head(port, "POST", "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {len(body)}", "Transfer-Encoding: chunked") + body


def _two_lengths(port: int, h: dict[str, str]) -> bytes:
    body = urlencoded(h)
    return head(port, "POST", "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {len(body)}", f"Content-Length: {len(body) - 5}") + body


def _two_gb(port: int, h: dict[str, str], accept: str = "text/html") -> bytes:
    return head(port, "POST", "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {TWO_GB}", accept=accept) + urlencoded(h)


def _two_gb_multipart(port: int, h: dict[str, str]) -> bytes:
    return head(port, "POST", f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
                f"Content-Length: {TWO_GB}") + encode_multipart(answers(h), BOUNDARY)


def _long_line(port: int, h: dict[str, str]) -> bytes:
    return head(port, "GET", "Connection: close", path="/f/intake?q=" + "a" * 100_000)


def _many_headers(port: int, h: dict[str, str]) -> bytes:
    return head(port, "GET", "Connection: close",
                *(f"X-Filler-{i}: {i}" for i in range(1000)))


def _long_header(port: int, h: dict[str, str]) -> bytes:
    return head(port, "GET", "Connection: close", "X-Filler: " + "a" * 100_000)


def _http10_no_host(port: int, h: dict[str, str]) -> bytes:
    return b"GET /f/intake HTTP/1.0\r\nAccept: text/html\r\n\r\n"


def _http11_no_host(port: int, h: dict[str, str]) -> bytes:
    return b"GET /f/intake HTTP/1.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n"


def _get_body(port: int, h: dict[str, str]) -> bytes:
    body = urlencoded(h)
    return head(port, "GET", "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {len(body)}") + body


def _get_smuggled(port: int, h: dict[str, str]) -> bytes:
    # a body that is itself a request: served as one, it would be a second answer
    inner = head(port, "POST", "Content-Type: application/x-www-form-urlencoded",
                 f"Content-Length: {len(urlencoded(h))}") + urlencoded(h)
    return head(port, "GET", f"Content-Length: {len(inner)}") + inner


def _unknown_method(port: int, h: dict[str, str]) -> bytes:
    body = urlencoded(h)
    return head(port, "BREW", "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {len(body)}", "Connection: close") + body


def _unclosed(port: int, h: dict[str, str], accept: str = "text/html") -> bytes:
    whole = encode_multipart(answers(h), BOUNDARY)
    # every part complete, then one more that never ends: no closing boundary
    body = whole[: whole.rindex(b"--" + BOUNDARY.encode() + b"--")] + (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="phone"\r\n\r\n0205550101'
    ).encode()
    return head(port, "POST", f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
                f"Content-Length: {len(body)}", accept=accept) + body


CASES = [
    Case("chunk size not hex", _bad_hex, 400, UNREADABLE, closes=True),
    Case("chunk size not hex, JSON", lambda p, h: _bad_hex(p, h, JSON), 400, UNREADABLE,
         closes=True, json=True),
    Case("second chunk size not hex", _bad_second, 400, UNREADABLE, closes=True),
    Case("chunk size negative", _negative, 400, UNREADABLE, closes=True),
    Case("chunk larger than the rest", _larger, 400, UNREADABLE, closes=True, shut=True),
    Case("chunked body cut short", _cut_short, 408, TOO_SLOW, closes=True,
         within=BODY_TIMEOUT + 5),
    Case("Content-Length and Transfer-Encoding", _cl_and_te, 400, None, closes=True),
    Case("two different Content-Length", _two_lengths, 400, None, closes=True),
    Case("Content-Length 2 GB, small body", _two_gb, 413, TOO_LARGE),
    Case("Content-Length 2 GB, small body, JSON", lambda p, h: _two_gb(p, h, JSON), 413,
         TOO_LARGE, json=True),
    Case("Content-Length 2 GB, multipart", _two_gb_multipart, 413, TOO_LARGE),
    Case("request line of 100 KB", _long_line, 414, None, closes=True),
    Case("1,000 headers", _many_headers, 431, None, closes=True),
    Case("header line of 100 KB", _long_header, 431, None, closes=True),
    # HTTP/1.0 has no Host header (RFC 1945): the page, as for any other 1.0 client
    Case("HTTP/1.0 without Host", _http10_no_host, 200, "Intake fysiotherapie", closes=True),
    Case("HTTP/1.1 without Host", _http11_no_host, 400, UNREADABLE, closes=True),
    Case("body on GET", _get_body, 400, UNREADABLE),
    Case("body on GET that is a request", _get_smuggled, 400, UNREADABLE),
    Case("unknown method", _unknown_method, 405, "Deze pagina kan zo niet worden gebruikt",
         closes=True),
    Case("multipart boundary never closes", _unclosed, 400, CUT_OFF),
    Case("multipart boundary never closes, JSON", lambda p, h: _unclosed(p, h, JSON), 400,
         CUT_OFF, json=True),
]


def _complete(data: bytes) -> bool:
    head_, sep, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head_)
    return bool(sep and length and len(body) >= int(length[1]))


def send(port: int, data: bytes, *, shut: bool = False, wait: float = 30) -> Answer:
    """Send `data`, read the answer, then wait a moment: the server may close the
    connection or keep it for a next request, but must send nothing more (a second answer
    would be taken for the answer to the client's next request)."""
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    received, first, closed = b"", 0.0, False
    try:
        try:
            sock.sendall(data)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before it took everything
            pass
        try:
            while not _complete(received):
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                first = first or time.monotonic() - start
                received += chunk
            if not closed:
                sock.settimeout(1.5)
                more = sock.recv(65536)
                assert not more, f"more than one answer: {more[:300]!r}"
                closed = True
        except TimeoutError:
            pass  # kept open for a next request
        except ConnectionResetError:  # closed with our bytes unread, after its answer
            closed = True
    finally:
        sock.close()
    head_, _, body = received.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head_)
    assert match, f"no HTTP answer: {received[:300]!r}"
    return Answer(int(match[1]), head_.decode("latin-1"), body, closed, first)


def stored(server: Server) -> int:
    store = open_store(server.data / "formrelay.db")
    try:
        return len(store.submissions.rows())
    finally:
        store.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_request_gets_a_clear_answer(server: Server, case: Case) -> None:
    before = stored(server)
    logged = server.log.stat().st_size
    answer = send(server.port, case.build(server.port, server.hidden()), shut=case.shut)

    assert answer.status == case.status, (answer.head, answer.body[:500])
    assert answer.seconds < case.within, f"answered after {answer.seconds:.1f} s"
    if case.closes:
        assert answer.closed, "the connection stayed open after a request it could not frame"
    if case.json:
        assert "application/json" in answer.head, answer.head
        reply = json.loads(answer.body)
        assert reply["ok"] is False and case.says in reply["error"], reply
    elif case.says is not None:  # the product's own page, in the form's language
        page = answer.body.decode()
        assert "text/html" in answer.head and '<html lang="nl"' in page, page[:500]
        assert case.says in page and "Praktijk Test" in page, page

    assert stored(server) == before
    log = server.log.read_bytes()[logged:].decode("utf-8", "replace")
    assert "Traceback" not in log and "unhandled error" not in log, log
    assert '"level": "error"' not in log and "Error handling request" not in log, log
    # the worker keeps serving
    status, page, _ = _http(f"http://127.0.0.1:{server.port}/f/intake")
    assert status == 200 and b"Praktijk Test" in page
