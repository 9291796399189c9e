"""PostgreSQL behind the same store: several processes on one database, chunked
ciphertext, per-practice audit chains under concurrency, and the bad-input cases
(a malformed or unreachable database_url, a backup it cannot take).

Each test gets a fresh database on the session's own server (tests/pg.py); without
PostgreSQL's binaries the module is skipped, saying so.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from formrelay import create_app
from formrelay.cli import cli
from formrelay.config import ConfigError, load_config
from formrelay.intake.ratelimit import DatabaseStorage
from formrelay.ops.audit import verify
from formrelay.settings import DATABASE_URL_ENV
from formrelay.store import CHUNK, Store, StoreConflict, StoreError

from .conftest import ENV, encode_multipart, make_config_dict, valid_answers, write_config
from .helpers.processes import _http, _process, _wait_for, _wait_up
from .keys import TestKey
from .smtpd import TlsFiles, free_port, smtp_config, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


@pytest.fixture
def store(pg_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "unused.db", url=pg_url)
    yield s
    s.close()


def test_nothing_is_written_to_the_data_folder(store: Store, tmp_path: Path) -> None:
    store.audit.append("login", actor="user:a")
    assert not list(tmp_path.iterdir())  # no SQLite file, no lock file, nothing local


# -- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "says"), [
    ("mysql://u@h/db", "must start with postgresql://"),
    ("postgresql://u@h:notaport/db", "not a valid URL"),
    ("postgresql://u@h:5432", "names no database"),
    ("postgresql://u:pw@h:5432/db", "secrets are not read from the file"),
])
def test_malformed_database_url_is_a_config_error(
        tmp_path: Path, keys: dict[str, TestKey], runner: CliRunner, url: str, says: str) -> None:
    cfg = make_config_dict(tmp_path / "data", keys, server={"database_url": url})
    path = write_config(tmp_path / "config.toml", cfg)
    with pytest.raises(ConfigError, match=f"server.database_url: .*{says}"):
        load_config(path, ENV)
    r = runner.invoke(cli, ["--config", str(path), "check", "--offline"], env=ENV)
    assert r.exit_code == 2 and "server.database_url" in r.output and says in r.output
    assert not (tmp_path / "data").exists()  # nothing half-written


def test_unreachable_database_stops_start_up_clearly(
        tmp_path: Path, keys: dict[str, TestKey], runner: CliRunner,
        postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # the pool retries a refused connection until its timeout: 1 s tells the same story
    # as the shipped 10 s, twice (the app, then `check`), without the wait
    monkeypatch.setattr("formrelay.store.engines.postgres.CONNECT_SECONDS", 1)
    port = free_port()  # nothing listens there
    url = f"postgresql://formrelay:s3cret-pw@127.0.0.1:{port}/formrelay"
    cfg = make_config_dict(tmp_path / "data", keys)
    path = write_config(tmp_path / "config.toml", cfg)
    env = {**ENV, DATABASE_URL_ENV: url}  # the password never goes in the file
    with pytest.raises(StoreError) as caught:
        create_app(path, environ=env)
    text = str(caught.value)
    assert f"cannot connect to the database postgresql://formrelay:***@127.0.0.1:{port}" in text
    assert "s3cret-pw" not in text  # the password is never printed
    r = runner.invoke(cli, ["--config", str(path), "check", "--offline"], env=env)
    assert r.exit_code == 2 and "cannot connect to the database" in r.output
    assert "s3cret-pw" not in r.output
    assert not (tmp_path / "data" / "formrelay.db").exists()
    # a database that does not exist: the server's own reason
    missing = postgres.url("no_such_database")
    with pytest.raises(StoreError, match='database "no_such_database" does not exist'):
        Store(tmp_path / "x.db", url=missing)


def test_database_url_from_the_environment(tmp_path: Path, keys: dict[str, TestKey],
                                           pg_url: str) -> None:
    cfg = make_config_dict(tmp_path / "data", keys)
    cfg["server"].pop("database_url", None)
    path = write_config(tmp_path / "config.toml", cfg)
    settings = load_config(path, {**ENV, "FORMRELAY_DATABASE_URL": pg_url})
    assert settings.server.database_url == pg_url


def test_backup_refuses_and_points_to_pg_dump(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="pg_dump"):
        store.backups.create(tmp_path / "copy.db")
    assert not list(tmp_path.glob("*copy*"))


# -- ciphertext in chunks --------------------------------------------------------------
def test_ciphertext_is_stored_and_served_in_chunks(store: Store, tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 12345)
    src = tmp_path / "ct.asc"
    src.write_bytes(data)
    store.submissions.add({"reference": "FR-AAAA-BBBB", "form_id": "intake",
                           "received_at": "2026-01-01T00:00:00.000000Z", "delivery": "hold",
                           "status": "held", "file_count": 0}, src)
    rows = store.conn.execute("SELECT n, length(data) FROM submission_chunks WHERE "
                              "reference = ? ORDER BY n", ("FR-AAAA-BBBB",)).fetchall()
    assert [r[1] for r in rows] == [CHUNK, CHUNK, CHUNK, 12345]
    assert b"".join(store.submissions.stream("FR-AAAA-BBBB")) == data
    out = io.BytesIO()
    assert store.submissions.copy_to("FR-AAAA-BBBB", out) == len(data) and out.getvalue() == data
    # a reference drawn twice is the store's own conflict, whatever the engine
    with pytest.raises(StoreConflict):
        store.submissions.add({"reference": "FR-AAAA-BBBB", "form_id": "intake",
                               "received_at": "2026-01-01T00:00:00.000000Z", "delivery": "hold",
                               "status": "held", "file_count": 0}, src)
    store.submissions.set_status("FR-AAAA-BBBB", "processed", drop_ciphertext=True)
    assert store.conn.execute("SELECT COUNT(*) FROM submission_chunks").fetchone()[0] == 0
    with pytest.raises(KeyError):
        store.submissions.ciphertext("FR-AAAA-BBBB")


# -- several processes at once ---------------------------------------------------------
def test_concurrent_appends_keep_each_practice_chain_whole(pg_url: str,
                                                           tmp_path: Path) -> None:
    stores = [Store(tmp_path / "unused.db", url=pg_url) for _ in range(4)]  # like 4 processes

    def append(i: int) -> None:
        s = stores[i % 4]
        s.audit.append("login", actor=f"user:{i}", practice=("noord", "zuid")[i % 2])
        s.audit.append("login", actor=f"user:{i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, range(60)))
    check = stores[0]
    assert check.audit.practices() == ["default", "noord", "zuid"]
    assert check.audit.head("noord")[0] == 30 and check.audit.head("default")[0] == 60
    for practice in ("default", "noord", "zuid"):
        result = verify(check, practice=practice)
        assert result.ok, result.problems
    assert verify(check).rows == 120
    for s in stores:
        s.close()


def test_workers_claim_each_mail_once(pg_url: str, tmp_path: Path) -> None:
    stores = [Store(tmp_path / "unused.db", url=pg_url) for _ in range(4)]
    for i in range(40):
        stores[0].outbox.enqueue("submission", f"FR-{i:04d}", ["a@praktijk.test"])
    claimed: list[int] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        while mails := stores[i].outbox.claim(f"worker-{i}", 60, limit=3):
            with lock:
                claimed.extend(m.id for m in mails)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 40
    for s in stores:
        s.close()


def test_rate_limit_counters_are_shared(pg_url: str, tmp_path: Path) -> None:
    one, two = (DatabaseStorage(store=Store(tmp_path / "u.db", url=pg_url)) for _ in range(2))
    assert one.check() and two.check()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: (one, two)[i % 2].incr("ip:192.0.2.1", 60), range(40)))
    assert one.get("ip:192.0.2.1") == 40 == two.get("ip:192.0.2.1")
    two.clear("ip:192.0.2.1")
    assert one.get("ip:192.0.2.1") == 0


# -- two app instances and two workers on one database ---------------------------------
def test_two_instances_and_two_workers_store_and_mail_each_submission_once(
        tmp_path: Path, keys: dict[str, TestKey], tls: TlsFiles, pg_url: str) -> None:
    posts = 24
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    with smtp_server(tls) as (smtp, smtp_port):
        cfg = make_config_dict(tmp_path / "data", keys, delivery="email", server={
            "base_url": bases[0], "database_url": pg_url, "rate_limit_ip": "1000/minute",
            "rate_limit_form": "1000/hour"}, smtp=smtp_config(tls, smtp_port))
        path = write_config(tmp_path / "config.toml", cfg)
        conf = ["--config", str(path)]
        with _process([*conf, "serve", "--bind", f"127.0.0.1:{ports[0]}", "--workers", "2"],
                      tmp_path / "a.log") as a, \
                _process([*conf, "serve", "--bind", f"127.0.0.1:{ports[1]}", "--workers", "2"],
                         tmp_path / "b.log") as b:
            _wait_up(bases[0], a, tmp_path / "a.log")
            _wait_up(bases[1], b, tmp_path / "b.log")

            def post(i: int) -> str:
                base = bases[i % 2]
                form = _http("GET", f"{base}/f/intake")[1].decode()
                hidden = dict(re.findall(r'name="(_[a-z]+)" value="([^"]*)"', form))
                status, page = _http("POST", f"{base}/f/intake", encode_multipart(
                    {**hidden, **valid_answers(f"post {i}")}), {
                    "Origin": bases[0], "Accept": "application/json",
                    "Content-Type": "multipart/form-data; boundary=frtestboundary"})
                assert status == 200, page[:500]
                return str(re.search(rb'"reference":\s*"([^"]+)"', page).group(1).decode())  # type: ignore[union-attr]

            with ThreadPoolExecutor(8) as pool:
                references = list(pool.map(post, range(posts)))
            assert len(set(references)) == posts
            with _process([*conf, "worker", "--interval", "0.2"], tmp_path / "w1.log"), \
                    _process([*conf, "worker", "--interval", "0.2"], tmp_path / "w2.log"):
                assert _wait_for(lambda: len(smtp.messages) >= posts, 90), \
                    (tmp_path / "w1.log").read_text()
                time.sleep(1.5)  # a few more passes of both workers: nothing is sent again
        by_id = smtp.by_message_id()
        assert len(smtp.messages) == posts and len(by_id) == posts
        assert all(len(copies) == 1 for copies in by_id.values())
    store = Store(tmp_path / "unused.db", url=pg_url)
    try:
        stored = store.submissions.rows()
        assert sorted(r["reference"] for r in stored) == sorted(references)
        assert {r["status"] for r in stored} == {"sent"} or all(
            r["status"] in ("sent", "deleted") for r in stored)
        assert store.outbox.rows(("queued", "failed")) == []
        result = verify(store)
        assert result.ok, result.problems
    finally:
        store.close()


def test_app_on_postgres_serves_a_held_download(make_app: Callable[..., Flask],
                                                pg_url: str) -> None:
    """The app built on PostgreSQL stores a post (its ciphertext in chunks)."""
    from .conftest import post_form

    app = make_app(server={"database_url": pg_url})
    store = app.extensions["formrelay"].store
    assert store.engine.name == "postgresql"
    r = post_form(app.test_client(), valid_answers("pg"), json_answer=True)
    assert r.status_code == 200, r.get_data(as_text=True)
    ref = r.get_json()["reference"]
    assert store.submissions.ciphertext(ref).startswith(b"-----BEGIN PGP MESSAGE-----")
    assert store.submissions.get(ref)["size"] == len(store.submissions.ciphertext(ref))  # type: ignore[index]


def test_purge_keeps_each_practice_chain_verifiable(store: Store) -> None:
    then = datetime.now(UTC) - timedelta(days=10)
    store.clock = lambda: then
    for practice in ("default", "noord"):
        for i in range(3):
            store.audit.append("login", actor=f"user:{i}", practice=practice)
    store.clock = lambda: datetime.now(UTC)
    n, _, _ = store.audit.purge(datetime.now(UTC) - timedelta(days=1))
    assert n == 6
    for practice in ("default", "noord"):
        assert verify(store, practice=practice).ok
        assert store.audit.anchor(practice)["upto_id"] == 3  # type: ignore[index]


def test_backup_command_refuses_on_postgres(tmp_path: Path, keys: dict[str, TestKey],
                                            runner: CliRunner, pg_url: str) -> None:
    cfg = make_config_dict(tmp_path / "data", keys, server={"database_url": pg_url})
    path = write_config(tmp_path / "config.toml", cfg)
    r = runner.invoke(cli, ["--config", str(path), "backup", str(tmp_path / "b")], env=ENV)
    assert r.exit_code != 0 and "pg_dump" in r.output
    assert not (tmp_path / "b").exists()


def test_check_names_the_postgres_database(tmp_path: Path, keys: dict[str, TestKey],
                                           runner: CliRunner, pg_url: str) -> None:
    cfg = make_config_dict(tmp_path / "data", keys, server={"database_url": pg_url})
    path = write_config(tmp_path / "config.toml", cfg)
    r = runner.invoke(cli, ["--config", str(path), "check", "--offline"], env=ENV)
    assert f"ok    database {pg_url} (PostgreSQL)" in r.output, r.output


def test_tampering_in_postgres_is_found_per_practice(store: Store) -> None:
    for practice in ("default", "noord"):
        for i in range(3):
            store.audit.append("login", actor=f"user:{i}", practice=practice)
    assert verify(store).ok
    # someone with the database's owner rights: the triggers are no obstacle to them
    with store.transaction() as conn:
        conn.execute("ALTER TABLE audit DISABLE TRIGGER USER")
        conn.execute("UPDATE audit SET actor = 'user:x' WHERE practice = 'noord' AND id = 2")
        conn.execute("ALTER TABLE audit ENABLE TRIGGER USER")
    problems = verify(store).problems
    assert problems == ["practice noord: row #2 was changed after it was written (its hash "
                        "does not match)"]
    with pytest.raises(Exception, match="append-only"):  # noqa: PT011 - the engine's own
        store.conn.execute("DELETE FROM audit WHERE id = 3")
