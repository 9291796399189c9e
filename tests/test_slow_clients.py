"""Slow clients cannot take the form down: the real gunicorn with the production options
(deploy/gunicorn.conf.py), and Caddy as deploy/Caddyfile configures it, keep answering
patients while a handful of connections from one address trickle a large body one byte
at a time or send nothing at all; the trickled bodies are refused (408) and nothing of
them is stored."""

from __future__ import annotations

import email
import http.client
import json
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from .conftest import encode_multipart, make_config_dict, open_store, write_config
from .helpers.servers import _hidden, _wait, caddyfile, gunicorn
from .keys import TestKey, gpg_decrypt
from .smtpd import free_port

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

SLOW = 16  # connections trickling a body
IDLE = 8  # connections that send nothing
DECLARED = 1_000_000  # the body size the slow clients announce
ATTACKER = "127.0.0.5"  # all slow and idle connections come from this one address
PATIENT = "127.0.0.2"
BODY_TIMEOUT = 3  # server.body_timeout_seconds: short, so the test stays short


class Trickle:
    """SLOW connections that send a POST's headers, then one byte of its body a second,
    until the server answers or closes; plus IDLE connections that send nothing."""

    def __init__(self, port: int, origin: str):
        self.port, self.origin = port, origin
        self.slow: list[socket.socket] = []
        self.idle: list[socket.socket] = []
        self.answers: dict[int, bytes] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10,
                                        source_address=(ATTACKER, 0))
        sock.setblocking(False)
        return sock

    def start(self) -> None:
        head = (f"POST /f/intake HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Origin: {self.origin}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {DECLARED}\r\n\r\nname=").encode()
        for _ in range(SLOW):
            sock = self._connect()
            sock.send(head)
            self.slow.append(sock)
            time.sleep(0.05)  # one after the other, so every worker process takes some
        for _ in range(IDLE):
            self.idle.append(self._connect())
            time.sleep(0.05)
        self.thread.start()

    def _run(self) -> None:
        end = time.monotonic() + 60  # bounded, whatever the server does
        while not self.stop.is_set() and time.monotonic() < end:
            open_ = [s for i, s in enumerate(self.slow) if i not in self.answers]
            if not open_:
                return
            for i, sock in enumerate(self.slow):
                if i in self.answers:
                    continue
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    self.answers[i] = self._read_answer(sock)
                    continue
                try:
                    sock.send(b"x")
                except OSError:  # closed without an answer
                    self.answers[i] = b""
            self.stop.wait(1.0)

    @staticmethod
    def _read_answer(sock: socket.socket) -> bytes:
        sock.settimeout(10)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(body) >= int(length[1]):
                    break
        except OSError:
            pass
        return data

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for sock in self.slow + self.idle:
            sock.close()


@contextmanager
def trickling(port: int, origin: str) -> Iterator[Trickle]:
    trickle = Trickle(port, origin)
    try:
        trickle.start()
        time.sleep(1)  # every connection accepted and waiting
        yield trickle
    finally:
        trickle.close()


def patient_submits(port: int, origin: str) -> tuple[int, int, str]:
    """A patient on another address opens the form and sends it: (GET status, POST
    status, the thank-you page). A server that does not answer within 15 s fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15,
                                      source_address=(PATIENT, 0))
    try:
        conn.request("GET", "/f/intake")
        page = conn.getresponse()
        shown = page.status
        body = urllib.parse.urlencode({**_hidden(page.read()), "name": "Anna",
                                       "complaint": "Knie", "consent": "y"})
        conn.request("POST", "/f/intake", body=body, headers={
            "Origin": origin, "Content-Type": "application/x-www-form-urlencoded"})
        answer = conn.getresponse()
        return shown, answer.status, answer.read().decode()
    except TimeoutError:
        pytest.fail(f"no answer within 15 s while {SLOW} slow and {IDLE} idle connections "
                    "were open")
    finally:
        conn.close()


def _config(tmp_path: Path, keys: dict[str, TestKey], base: str, **server: object) -> Path:
    cfg = make_config_dict(tmp_path / "data", keys, server={
        "base_url": base, "body_timeout_seconds": BODY_TIMEOUT, "rate_limit_ip": "10/minute",
        **server})
    return write_config(tmp_path / "config.toml", cfg)


def _stored(tmp_path: Path) -> list[str]:
    store = open_store(tmp_path / "data" / "formrelay.db")
    try:
        return [row["reference"] for row in store.submissions.rows()]
    finally:
        store.close()


def test_slow_and_idle_clients_do_not_starve_gunicorn(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = _config(tmp_path, keys, base)
    with gunicorn(tmp_path, config, port), trickling(port, base) as trickle:
        shown, status, page = patient_submits(port, base)
        assert shown == 200
        assert status == 200, page
        reference = re.search(r"FR-[2-9A-Z]{4}-[2-9A-Z]{4}", page)
        assert reference, page
        # the trickled bodies are refused, with a message the browser can show
        trickle.thread.join(timeout=30)
        statuses = sorted(int(a.split(b" ", 2)[1]) for a in trickle.answers.values() if a)
        # 10 within the address's rate limit, the rest over it (its page, too, is only
        # answered once their body has run out of time)
        assert statuses == [408] * 10 + [429] * (SLOW - 10), statuses
        for answer in trickle.answers.values():
            if answer.startswith(b"HTTP/1.1 408 "):
                assert "Het versturen duurde te lang" in answer.decode()
    # only the patient's submission was stored
    assert _stored(tmp_path) == [reference[0]]


def test_a_body_at_a_steady_pace_is_not_cut_off(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """A body that keeps up the minimum rate may take longer than the timeout (a phone
    on a slow link): it is stored."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = _config(tmp_path, keys, base, body_min_rate=200)
    with gunicorn(tmp_path, config, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/f/intake")
        hidden = _hidden(conn.getresponse().read())
        filler = "Knie " * 390  # ~2.3 KB in all; at 500 B/s longer than the timeout
        body = urllib.parse.urlencode({**hidden, "name": "Anna", "complaint": filler,
                                       "consent": "y"}).encode()
        conn.putrequest("POST", "/f/intake")
        for name, value in (("Origin", base), ("Accept", "application/json"),
                            ("Content-Type", "application/x-www-form-urlencoded"),
                            ("Content-Length", str(len(body)))):
            conn.putheader(name, value)
        conn.endheaders()
        for i in range(0, len(body), 250):
            conn.send(body[i:i + 250])
            time.sleep(0.5)
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()[:300]
        conn.close()
    assert len(_stored(tmp_path)) == 1


def test_slow_clients_through_caddy_do_not_starve_the_form(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """The same attack through Caddy as deploy/Caddyfile sets it up: Caddy buffers the
    request before it goes to gunicorn, and cuts off bodies slower than its read_body."""
    caddy = shutil.which("caddy")
    if not caddy:
        pytest.skip("caddy not installed (scripts/setup.sh --test installs it)")
    app_port, proxy_port = free_port(), free_port()
    base = f"http://127.0.0.1:{proxy_port}"
    config = _config(tmp_path, keys, base, trusted_proxies=1)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
           "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
           "FORMRELAY_DOMAIN": base, "FORMRELAY_UPSTREAM": f"127.0.0.1:{app_port}",
           "FORMRELAY_BODY_TIMEOUT": f"{BODY_TIMEOUT}s"}
    with ExitStack() as stack:
        log = stack.enter_context(gunicorn(tmp_path, config, app_port))
        caddy_log = stack.enter_context((tmp_path / "caddy.log").open("wb"))
        proxy = subprocess.Popen([caddy, "run", "--config",
                                  str(caddyfile(caddy, tmp_path, admin=False)),
                                  "--adapter", "caddyfile"], env=env, stdout=caddy_log,
                                 stderr=subprocess.STDOUT, cwd=tmp_path)
        stack.callback(proxy.wait, 30)
        stack.callback(proxy.terminate)
        _wait(f"{base}/healthz", proxy, tmp_path / "caddy.log")
        trickle = stack.enter_context(trickling(proxy_port, base))
        shown, status, page = patient_submits(proxy_port, base)
        assert shown == 200
        assert status == 200, page
        reference = re.search(r"FR-[2-9A-Z]{4}-[2-9A-Z]{4}", page)
        assert reference, page
        trickle.thread.join(timeout=30)
        # Caddy ends every trickled request (read_body) and none of them reaches
        # formrelay: gunicorn saw one post, the patient's
        assert len(trickle.answers) == SLOW
        assert not any(b"FR-" in a for a in trickle.answers.values())
        posts = [e for e in map(json.loads, log.read_text().splitlines())
                 if e.get("event") == "http" and e["method"] == "POST"]
        assert len(posts) == 1, posts
    assert _stored(tmp_path) == [reference[0]]


def test_gevent_worker_encrypts_a_large_upload_while_others_post(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """What runs inside a request works under gevent: gpg (a subprocess with reader
    threads) encrypts a 20 MB upload while other patients post at the same time, SQLite
    commits them all (store lock + flock), the rate limiter counts them."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fields = [{"name": "name", "type": "text", "label": "Naam"},
              {"name": "scan", "type": "file", "label": "Scan", "accept": ["pdf"],
               "max_size_mb": 21},
              {"name": "consent", "type": "consent", "label": "Akkoord"}]
    cfg = make_config_dict(tmp_path / "data", keys, fields=fields, server={
        "base_url": base, "rate_limit_ip": "100/minute"})
    config = write_config(tmp_path / "config.toml", cfg)
    scan = b"%PDF-1.7\n" + os.urandom(20 * 1024 * 1024)
    answers: dict[str, tuple[int, str]] = {}

    def patient(name: str, upload: bytes | None) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("GET", "/f/intake")
            data: dict[str, object] = {**_hidden(conn.getresponse().read()), "name": name,
                                       "consent": "y"}
            if upload:
                data["scan"] = (upload, "scan.pdf", "application/pdf")
            conn.request("POST", "/f/intake", body=encode_multipart(data), headers={
                "Origin": base, "Accept": "application/json",
                "Content-Type": "multipart/form-data; boundary=frtestboundary"})
            answer = conn.getresponse()
            answers[name] = (answer.status, answer.read().decode())
        finally:
            conn.close()

    with gunicorn(tmp_path, config, port):
        patients = [threading.Thread(target=patient, args=("Groot", scan))]
        patients += [threading.Thread(target=patient, args=(f"Klein {i}", None))
                     for i in range(6)]
        for t in patients:
            t.start()
        for t in patients:
            t.join(timeout=180)
    assert {name: status for name, (status, _) in answers.items()} == {
        "Groot": 200, **{f"Klein {i}": 200 for i in range(6)}}, answers
    refs = {name: json.loads(text)["reference"] for name, (_, text) in answers.items()}
    assert sorted(_stored(tmp_path)) == sorted(refs.values())
    store = open_store(tmp_path / "data" / "formrelay.db")
    try:
        plain = gpg_decrypt(keys["alice"], store.submissions.ciphertext(refs["Groot"]))
    finally:
        store.close()
    parts = {p.get_filename(): p.get_payload(decode=True)
             for p in email.message_from_bytes(plain).walk() if p.get_filename()}
    assert parts["scan.pdf"] == scan
