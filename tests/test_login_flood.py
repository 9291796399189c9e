"""Password guessing cannot rotate past the login pause or starve the form (issue 16.6),
against a real `formrelay serve` (gunicorn, gevent workers, real argon2 parameters)
behind one trusted proxy: the client address comes from X-Forwarded-For, as Caddy or
nginx set it.

Failed logins are counted per IPv6 /64, so a client rotating through the addresses of
its /64 is paused like one address; and a flood of bad logins from everywhere cannot
make a patient's form page wait, because a hash runs off the event loop and only a few
at a time per worker (the rest are refused with 429 before hashing). The detailed
numbers are bench/bench_login.py's.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from formrelay.store import Store

from .conftest import make_config_dict, open_store, write_config
from .helpers.processes import _process, _wait_up
from .keys import TestKey
from .smtpd import free_port

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

MAX_PER_NETWORK = 5  # server.login_max_failures_ip, small so the test stays short
HOUSEHOLD = "2001:db8:7:42"  # one /64: the attacker's own addresses
PARALLEL = 32
ATTACK_SECONDS = 8


@contextmanager
def serving(tmp_path: Path, keys: dict[str, TestKey]) -> Iterator[int]:
    port = free_port()
    cfg = make_config_dict(tmp_path / "data", keys, server={
        "trusted_proxies": 1, "login_max_failures_ip": MAX_PER_NETWORK,
        "rate_limit_ip": "100000/minute", "base_url": f"http://127.0.0.1:{port}"})
    path = write_config(tmp_path / "config.toml", cfg)
    with _process(["--config", str(path), "serve", "--bind", f"127.0.0.1:{port}",
                   "--workers", "2"], tmp_path / "serve.log") as proc:
        _wait_up(f"http://127.0.0.1:{port}", proc, tmp_path / "serve.log")
        yield port


class Guesser:
    """A browser behind the proxy at `addr`: fetches the login page (session cookie and
    CSRF token) and posts a wrong password."""

    def __init__(self, port: int, addr: str):
        self.port, self.addr = port, addr
        self.cookie = self.token = self.page = ""

    def _request(self, method: str, path: str, body: str = "",
                 headers: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers={
                "X-Forwarded-For": self.addr, "X-Forwarded-Proto": "https",
                **({"Cookie": self.cookie} if self.cookie else {}), **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(), resp.headers.get_all("Set-Cookie") or []
        finally:
            conn.close()

    def guess(self, username: str) -> int:
        if not self.token:
            status, page, cookies = self._request("GET", "/clinician/login")
            assert status == 200, page[:300]
            self.cookie = "; ".join(c.split(";", 1)[0] for c in cookies)
            self.token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]  # type: ignore[index]
        status, page, _ = self._request(
            "POST", "/clinician/login",
            f"csrf_token={self.token}&username={username}&password=not-the-password",
            {"Content-Type": "application/x-www-form-urlencoded"})
        assert status in (401, 429), page[:300]
        self.page = page
        return status


def test_rotating_through_one_64_is_paused_like_one_address(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    with serving(tmp_path, keys) as port:
        guessers = [Guesser(port, f"{HOUSEHOLD}::{i + 1:x}")
                    for i in range(MAX_PER_NETWORK + 3)]
        answers = [g.guess(f"name{i}") for i, g in enumerate(guessers)]
        assert "Te veel mislukte pogingen" in guessers[-1].page  # what the pause says
        # every address new, every name new: only the /64 ties them together
        assert answers == [401] * MAX_PER_NETWORK + [429] * 3
        neighbour = Guesser(port, "2001:db8:7:43::1").guess("name0")  # the next /64
    assert neighbour == 401
    store: Store = open_store(tmp_path / "data" / "formrelay.db")
    failed = [r for r in store.audit.rows() if r["action"] == "login"]
    assert {r["outcome"] for r in failed} == {"failed"}  # nobody got in
    # the audit log keeps each full address; the pause counted them as one network, and
    # a paused network's attempts write nothing (a flood cannot fill the log)
    addresses = {r["ip"] for r in failed}
    assert {f"{HOUSEHOLD}::{i + 1:x}" for i in range(MAX_PER_NETWORK)} <= addresses
    assert not addresses & {f"{HOUSEHOLD}::{i + 1:x}"
                            for i in range(MAX_PER_NETWORK, MAX_PER_NETWORK + 3)}


def test_form_answers_fast_during_32_parallel_bad_logins(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """Every guesser on a /64 of its own (so the pause never stops them): the worst case
    for the hashing. The form page's p95 stays well under a second."""
    with serving(tmp_path, keys) as port:
        stop = threading.Event()
        answers: Counter[int] = Counter()
        lock = threading.Lock()

        busy: list[str] = []

        def guess(i: int) -> None:
            n = 0
            while not stop.is_set():
                # a new /64 every few tries: never paused
                g = Guesser(port, f"2001:db8:{i}:{n // 4}::1")
                status = g.guess(f"guess{i}x{n}")
                n += 1
                with lock:
                    answers[status] += 1
                    if status == 429:
                        busy.append(g.page)

        def form_times() -> list[float]:
            times = []
            end = time.monotonic() + ATTACK_SECONDS
            while time.monotonic() < end:
                start = time.monotonic()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("GET", "/f/intake?embed=1",
                             headers={"X-Forwarded-For": "198.51.100.7"})
                resp = conn.getresponse()
                resp.read()
                conn.close()
                assert resp.status == 200
                times.append(time.monotonic() - start)
                time.sleep(0.05)
            return times

        quiet = sorted(form_times())
        print(f"\nform GET, nobody logging in: {len(quiet)} GETs, p50 "
              f"{quiet[len(quiet) // 2] * 1000:.0f} ms, p95 "
              f"{quiet[int(len(quiet) * 0.95)] * 1000:.0f} ms")
        with ThreadPoolExecutor(PARALLEL) as pool:
            attackers = [pool.submit(guess, i) for i in range(PARALLEL)]
            time.sleep(1)  # the flood is on
            times = form_times()
            stop.set()
            for f in attackers:
                f.result(timeout=120)
    times.sort()
    p95 = times[int(len(times) * 0.95)]
    print(f"\nform GET during {PARALLEL} parallel bad logins: {len(times)} GETs, "
          f"p50 {times[len(times) // 2] * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms; "
          f"logins answered {dict(answers)}")
    assert answers[401] > 0  # the guesses were really checked ...
    # ... and the ones refused before hashing were told why
    assert all("De server is druk met veel aanmeldingen" in page for page in busy)
    assert p95 < 0.5, f"form p95 {p95:.2f} s under {PARALLEL} parallel bad logins"
