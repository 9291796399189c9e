"""Shared fixtures: real gpg keys, a temp data folder, the app, its client and CLI runner.

Tests that use the store request the `database` fixture (make_app does, so every test
with `app`, `client` or `make_app` has it). With FORMRELAY_TEST_DATABASE=postgresql only
those tests run, each on a fresh PostgreSQL database of its own (tests/pg.py starts the
server once per session) that its configs (make_config_dict) and stores (`open_store`)
name, so the same tests check the store on both engines; scripts/test.sh runs both
passes. The rest are deselected there: they do not touch the store, or are marked
`sqlite_only` (they read the SQLite file itself, or drive a browser or proxy whose
store the first pass already checked). A test that builds a config or opens a store
without requesting `database` fails on either engine, so none drops out of the
PostgreSQL pass unnoticed; one whose config never opens a store says so with the
`no_store` mark."""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from formrelay import create_app, services
from formrelay.config import load_config
from formrelay.localtime import utcnow
from formrelay.settings import HEALTH_TOKEN_ENV, SECRET_KEY_ENV
from formrelay.store import Store

from .keys import TestKey, make_all
from .pg import TEST_DATABASE_ENV, PgServer
from .redisd import RedisServer
from .redisd import binary as redis_binary
from .smtpd import TlsFiles, make_tls_files

SECRET = "test-secret-" + "x" * 40
ORIGIN = "http://localhost"  # make_config_dict's base_url: posts from the form page itself
HEALTH_TOKEN = "test-health-" + "h" * 40  # noqa: S105 - a test value
ENV = {SECRET_KEY_ENV: SECRET, HEALTH_TOKEN_ENV: HEALTH_TOKEN}
HEALTH_AUTH = {"Authorization": f"Bearer {HEALTH_TOKEN}"}  # /healthz with the details


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TestKey]]:
    made = make_all(tmp_path_factory.mktemp("keys"))
    yield made
    for key in made.values():  # the test keys' homes needed an agent to decrypt
        subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "all"],
                       capture_output=True, timeout=30, check=False)


ON_POSTGRES = os.environ.get(TEST_DATABASE_ENV, "") == "postgresql"
# The database of the running test in PostgreSQL mode ("" = the SQLite file in data_dir).
DATABASE: dict[str, str] = {"url": ""}


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A PostgreSQL server for this session (started on first use, stopped at the end)."""
    try:
        server = PgServer()
    except FileNotFoundError as exc:
        if ON_POSTGRES:
            raise  # asked for explicitly: a missing server is an error, not a skip
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: PgServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of this test's own."""
    url = postgres.new_database()
    yield url
    postgres.drop(url)


# Whether the running test may build a config or open a store ("" between tests).
USES_STORE: dict[str, str] = {"test": ""}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PostgreSQL mode: run only the tests that use the store (see the module docstring)."""
    if not ON_POSTGRES:
        return
    keep, drop = [], []
    for item in items:
        on_postgres = ("database" in getattr(item, "fixturenames", ())
                       and not item.get_closest_marker("sqlite_only"))
        (keep if on_postgres else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _store_use(request: pytest.FixtureRequest) -> Iterator[None]:
    """Note whether this test declared its store use, for make_config_dict and open_store."""
    declared = "database" in request.fixturenames or any(
        request.node.get_closest_marker(mark) for mark in ("no_store", "sqlite_only"))
    USES_STORE["test"] = "declared" if declared else request.node.nodeid
    try:
        yield
    finally:
        USES_STORE["test"] = ""


def _store_use_declared(what: str) -> None:
    test = USES_STORE["test"]
    if test and test != "declared":
        raise AssertionError(
            f"{test} calls {what} but does not request the `database` fixture, so the "
            "PostgreSQL pass would leave it out: add `database` to its fixtures (or mark "
            "it `no_store` if its configs never open a store)")


@pytest.fixture
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The database this test's configs and stores name: "" (the SQLite file in data_dir),
    or with FORMRELAY_TEST_DATABASE=postgresql a fresh PostgreSQL database of its own."""
    if not ON_POSTGRES or request.node.get_closest_marker("sqlite_only"):
        yield ""
        return
    DATABASE["url"] = request.getfixturevalue("pg_url")
    try:
        yield DATABASE["url"]
    finally:
        DATABASE["url"] = ""


def open_store(path: Path, clock: Callable[..., Any] | None = None) -> Store:
    """A Store at `path` (SQLite), or on this test's PostgreSQL database in that mode."""
    _store_use_declared("open_store")
    return Store(path, clock or utcnow, url=DATABASE["url"])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole session (tests/redisd.py)."""
    if not redis_binary():
        pytest.skip("redis-server not installed (scripts/setup.sh --test installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied: each test starts with no counters."""
    redis_server.command("FLUSHALL")
    return redis_server.url()


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A test CA, a server certificate it signed, and an untrusted one (tests/smtpd.py)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


ALL_FIELDS: list[dict[str, Any]] = [
    {"name": "name", "type": "text", "label": "Naam", "required": True, "autocomplete": "name"},
    {"name": "complaint", "type": "textarea", "label": "Klacht", "required": True,
     "max_length": 2000, "help": "Beschrijf uw klacht."},
    {"name": "email", "type": "email", "label": "E-mail"},
    {"name": "phone", "type": "tel", "label": "Telefoon"},
    {"name": "visit", "type": "date", "label": "Datum bezoek"},
    {"name": "age", "type": "number", "label": "Leeftijd", "min": 0, "max": 130},
    {"name": "insurer", "type": "select", "label": "Verzekeraar", "choices": ["Zilveren Kruis",
                                                                            "VGZ", "Anders"]},
    {"name": "contact", "type": "radio", "label": "Contact via", "choices": ["telefoon", "mail"]},
    {"name": "symptoms", "type": "checkboxes", "label": "Klachten",
     "choices": ["hoofdpijn", "koorts", "overig"]},
    {"name": "bsn", "type": "bsn", "label": "BSN"},
    {"name": "born", "type": "birthdate", "label": "Geboortedatum"},
    {"name": "attachment", "type": "file", "label": "Bijlage", "accept": ["pdf", "png", "txt"]},
    {"name": "consent", "type": "consent", "label": "Ik ga akkoord met de verwerking."},
]


def make_config_dict(data_dir: Path, keys: dict[str, TestKey], *, recipients: tuple[str, ...]
                     = ("alice",), fields: list[dict[str, Any]] | None = None,
                     delivery: str = "hold", **form: Any) -> dict[str, Any]:
    _store_use_declared("make_config_dict")
    server = {"data_dir": str(data_dir), "practice_name": "Praktijk Test",
              "practice_phone": "020 555 0101", "min_fill_seconds": 0,
              "base_url": "http://localhost"}
    if DATABASE["url"]:
        server["database_url"] = DATABASE["url"]
    server.update(form.pop("server", {}))
    cfg: dict[str, Any] = {
        "server": server,
        "smtp": form.pop("smtp", {"from_address": "forms@praktijk.test",
                                  "sink_dir": str(data_dir.parent / "mail")}),
        "recipients": {name: {"email": f"{name}@praktijk.test", "key_file": str(keys[name].public),
                              "fingerprint": keys[name].fingerprint} for name in set(recipients)
                       | set(form.pop("extra_recipients", ()))},
        "forms": {"intake": {"title": "Intake fysiotherapie", "recipients": list(recipients),
                             "delivery": delivery, "fields": fields or ALL_FIELDS, **form}},
    }
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(cfg), encoding="utf-8")
    return path


@pytest.fixture
def make_app(tmp_path: Path, keys: dict[str, TestKey], database: str) -> Callable[..., Flask]:
    def factory(**kw: Any) -> Flask:
        clock = kw.pop("clock", None)
        extra_steps = kw.pop("extra_steps", ())
        cfg = make_config_dict(tmp_path / "data", keys, **kw)
        path = write_config(tmp_path / "config.toml", cfg)
        if extra_steps:  # the app's services with more steps in the relay's pipeline
            built = services.build(load_config(path, ENV), clock or utcnow,
                                   extra_steps=extra_steps)
            app = create_app(built)
        else:
            app = create_app(path, environ=ENV, clock=clock)
        app.testing = True
        return app

    return factory


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def form_token(client: FlaskClient, form_id: str = "intake") -> dict[str, str]:
    """The hidden control fields of a freshly shown form (token etc.), for posting."""
    html = client.get(f"/f/{form_id}").get_data(as_text=True)
    fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="(_[a-z]+)"[^>]*value="([^"]*)"',
                             html))
    fields.update(re.findall(r'<input[^>]*name="(_[a-z]+)"[^>]*type="hidden"[^>]*value="([^"]*)"',
                             html))
    return fields


def canary() -> str:
    return "CANARY-" + secrets.token_hex(8)


def valid_answers(mark: str = "") -> dict[str, Any]:
    return {"name": f"Jeroen Brünhilde {mark}".strip(), "complaint": f"Pijn in de knie 🦵 {mark}",
            "consent": "y"}


def encode_multipart(data: dict[str, Any], boundary: str = "frtestboundary") -> bytes:
    """A multipart body built in memory (werkzeug's test builder spools big bodies to
    temp files, which would muddy the no-plaintext-on-disk checks)."""
    out = bytearray()
    for key, value in data.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            out += f"--{boundary}\r\n".encode()
            if isinstance(item, tuple):
                stream, filename = item[0], item[1]
                ctype = item[2] if len(item) > 2 else "application/octet-stream"
                out += (f'Content-Disposition: form-data; name="{key}"; filename="{filename}"'
                        f"\r\nContent-Type: {ctype}\r\n\r\n").encode()
                out += stream.read() if hasattr(stream, "read") else stream
            else:
                out += f'Content-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
                out += item if isinstance(item, bytes) else str(item).encode()
            out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def post_form(client: FlaskClient, data: dict[str, Any], *, json_answer: bool = False,
              form_id: str = "intake", headers: dict[str, str] | None = None,
              query: str = "") -> Any:
    """Post like a browser would: show the form first (for its token), then send from
    formrelay's own origin (the form page's Origin; base_url is http://localhost)."""
    body = {**form_token(client, form_id), **data}
    hdrs = {"Accept": "application/json"} if json_answer else {}
    hdrs["Origin"] = ORIGIN
    hdrs.update(headers or {})
    return client.post(f"/f/{form_id}{query}", data=encode_multipart(body), headers=hdrs,
                       content_type="multipart/form-data; boundary=frtestboundary")
