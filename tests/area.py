"""Helpers for the clinician-area tests: a browser-like client over https, the CLI, a clock."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from flask import Flask
from werkzeug.test import TestResponse

from formrelay.cli import cli
from formrelay.clinician import accounts

from .conftest import ENV

BASE = "https://localhost"  # the test client speaks http; this makes requests "secure"
COOKIE = "__Host-formrelay"
PASSWORD = "lange zin als wachtwoord"


class Clock:
    """A clock the test moves by hand (session timeouts, TOTP steps, retention)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 with its real cost takes ~0.2 s a hash: the tests of login rules use a cheap
    one (the whole-flow test keeps the real one)."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024,
                                                         parallelism=1))


def cli_run(tmp_path: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--config", str(tmp_path / "config.toml"), *args],
                              input=input, env=ENV)


def add_user(tmp_path: Path, name: str, *links: str, password: str = PASSWORD) -> Result:
    result = cli_run(tmp_path, "users", "add", name, *links, input=f"{password}\n{password}\n")
    assert result.exit_code == 0, result.output
    return result


class Browser:
    """One browser: its own cookie jar and client address; keeps the latest CSRF token."""

    def __init__(self, app: Flask, ip: str = "127.0.0.1", base: str = BASE) -> None:
        self.client = app.test_client()
        self.ip = ip
        self.base = base
        self.token = ""
        self.secret = ""
        self.recovery: list[str] = []

    def _seen(self, r: TestResponse) -> TestResponse:
        if r.mimetype == "text/html":
            m = re.search(r'name="csrf_token" value="([^"]+)"', r.get_data(as_text=True))
            if m:
                self.token = m.group(1)
        return r

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self._seen(self.client.get(path, base_url=self.base,
                                          environ_base={"REMOTE_ADDR": self.ip}, **kw))

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True,
             **kw: Any) -> TestResponse:
        body = dict(data or {})
        if csrf:
            body.setdefault("csrf_token", self.token)
        return self._seen(self.client.post(path, data=body, base_url=self.base,
                                           environ_base={"REMOTE_ADDR": self.ip}, **kw))

    def cookie(self) -> str | None:
        c = self.client.get_cookie(COOKIE, domain="localhost")
        return c.value if c else None

    def password(self, name: str, password: str = PASSWORD) -> TestResponse:
        self.get("/clinician/login")
        return self.post("/clinician/login", {"username": name, "password": password})

    def enrol(self, name: str, code: Callable[[str], str], password: str = PASSWORD,
              ) -> TestResponse:
        """First login: password, then the QR page's secret, then its first code."""
        r = self.password(name, password)
        assert r.status_code == 302 and r.headers["Location"].endswith("/clinician/enrol"), r
        page = self.get("/clinician/enrol").get_data(as_text=True)
        self.secret = re.search(r'<code id="secret">([^<]+)</code>', page).group(1)  # type: ignore[union-attr]
        self.secret = self.secret.replace(" ", "")
        r = self.post("/clinician/enrol", {"code": code(self.secret)})
        self.recovery = re.findall(r"<li><code>([a-z0-9-]{19})</code></li>",
                                   r.get_data(as_text=True))
        return r

    def login(self, name: str, code: str, password: str = PASSWORD) -> TestResponse:
        r = self.password(name, password)
        assert r.status_code == 302 and r.headers["Location"].endswith("/clinician/login/code")
        self.get("/clinician/login/code")
        return self.post("/clinician/login/code", {"code": code})


def totp_at(clock: Clock) -> Callable[[str], str]:
    return lambda secret: pyotp.TOTP(secret).at(clock.now)


def answers(plaintext: bytes) -> dict[str, Any]:
    """The answers.json inside a decrypted submission."""
    msg = message_from_bytes(plaintext, policy=policy.default)
    part = next(p for p in msg.walk() if p.get_filename() == "answers.json")
    data: dict[str, Any] = json.loads(part.get_payload(decode=True))
    return data


def audit(app: Flask, action: str, outcome: str | None = None) -> list[dict[str, Any]]:
    rows = app.extensions["formrelay"].store.audit.rows()
    return [r for r in rows if r["action"] == action and (outcome is None or
                                                          r["outcome"] == outcome)]
