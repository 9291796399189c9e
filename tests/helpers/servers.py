"""Real servers on loopback: gunicorn with deploy/gunicorn.conf.py, `formrelay serve`,
the Caddyfile as the installed Caddy reads it, free ports and bounded waits."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..conftest import ENV

ROOT = Path(__file__).parents[2]


DEPLOY = ROOT / "deploy"


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
          ) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - loopback
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()}")


@contextmanager
def gunicorn(tmp_path: Path, config: Path, port: int) -> Iterator[Path]:
    """deploy/gunicorn.conf.py running the app on 127.0.0.1:port; yields its log file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMRELAY_")}
    env.update(ENV, FORMRELAY_CONFIG=str(config), FORMRELAY_BIND=f"127.0.0.1:{port}",
               FORMRELAY_WORKERS="2", FORMRELAY_CONNECTIONS="50")
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config",
                                 str(DEPLOY / "gunicorn.conf.py")], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _hidden(page: bytes) -> dict[str, str]:
    return dict(re.findall(r'name="(_[a-z]+)"[^>]*value="([^"]*)"', page.decode()))


def caddyfile(caddy: str, tmp_path: Path, *, admin: bool = True) -> Path:
    """deploy/Caddyfile as the installed Caddy reads it: Debian 12's Caddy 2.6 spells
    request buffering `buffer_requests` (deploy/README.md says so); `admin=False` turns
    the admin endpoint off, for a Caddy that a test runs beside others."""
    text = (DEPLOY / "Caddyfile").read_text()
    version = subprocess.run([caddy, "version"], capture_output=True, text=True, timeout=30)
    if re.match(r"v?2\.[0-6]\.", version.stdout):
        assert "request_buffers 32MB" in text
        text = text.replace("request_buffers 32MB", "buffer_requests")
    if not admin:
        assert "\n{\n" in text, "deploy/Caddyfile has no global options block"
        text = text.replace("\n{\n", "\n{\n\tadmin off\n", 1)
    path = tmp_path / "Caddyfile"
    path.write_text(text)
    return path


CHROMIUM = "/usr/bin/chromium"


ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--test-third-party-cookie-phaseout"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "formrelay", "--config", str(path), "serve", "--bind",
             f"127.0.0.1:{port}", "--workers", "1", "--connections", "20"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
            start_new_session=True)
    for _ in range(300):  # bounded wait until it answers
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
            finally:
                conn.close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(log.read_text())
