"""PostgreSQL under contention (issue 16.5): several practices, two app instances and two
delivery workers at once. No deadlock on the audit heads, a transaction PostgreSQL gives
up in a deadlock is run again instead of answering 503, and a mail the relay accepted is
never sent again when the bookkeeping after it is rolled back.

Real PostgreSQL (tests/pg.py), real gunicorn (`formrelay serve`), real `formrelay worker`
processes and a real SMTP server on loopback (tests/smtpd.py).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask

from formrelay import services
from formrelay.mail import outbox
from formrelay.ops.audit import verify
from formrelay.store import OutboxMail, Store, StoreContended, StoreNotWritable
from formrelay.store.base import CONTENDED_TRIES

from .conftest import make_config_dict, write_config
from .helpers.mail import Clock, mail_app, store_of, submit
from .helpers.practices import FIELDS, noord, valid_answers
from .helpers.processes import _http, _process, _wait_for, _wait_up
from .keys import TestKey
from .smtpd import TlsFiles, free_port, smtp_config, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

LOAD_SECONDS = 20  # bounded: the 60 s, shorter
CLIENTS = 16


def three_practices(tmp_path: Path, keys: dict[str, TestKey], smtp: dict[str, Any],
                    server: dict[str, Any]) -> dict[str, Any]:
    """The default practice (intake), noord (noord-intake) and zuid (zuid-intake), every
    form delivered by mail: a delivery pass marks mails of several practices sent."""
    cfg = make_config_dict(tmp_path / "data", keys, fields=FIELDS, delivery="email",
                           server=server, smtp=smtp)
    zuid = noord(keys, delivery="email")
    zuid["recipients"] = {"dr-b": zuid["recipients"]["bob"]}  # ids are unique across practices
    zuid["forms"] = {"zuid-intake": {**zuid["forms"]["noord-intake"], "title": "Zuid",
                                     "recipients": ["dr-b"]}}
    zuid.update(name="Praktijk Zuid", from_address="formulieren@zuid.test",
                operator_email="beheer@zuid.test")
    cfg["practices"] = {"noord": noord(keys, delivery="email"), "zuid": zuid}
    return cfg


def test_two_instances_and_two_workers_under_load_no_deadlock_no_503_no_duplicate(
        tmp_path: Path, keys: dict[str, TestKey], tls: TlsFiles, pg_url: str,
        postgres: Any) -> None:
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    forms = ("intake", "noord-intake", "zuid-intake")
    pg_log = postgres.root / "log"
    log_start = pg_log.stat().st_size
    with smtp_server(tls) as (smtp, smtp_port):
        cfg = three_practices(tmp_path, keys, smtp_config(tls, smtp_port), {
            "base_url": bases[0], "database_url": pg_url, "rate_limit_ip": "100000/minute",
            "rate_limit_form": "100000/hour"})
        path = write_config(tmp_path / "config.toml", cfg)
        conf = ["--config", str(path)]
        statuses: Counter[int] = Counter()
        references: list[str] = []
        lock = threading.Lock()
        end = time.monotonic() + LOAD_SECONDS

        def client(i: int) -> None:
            n = 0
            while time.monotonic() < end:
                base, form_id = bases[i % 2], forms[(i + n) % 3]
                n += 1
                page = _http("GET", f"{base}/f/{form_id}")[1].decode()
                hidden = dict(re.findall(r'name="(_[a-z]+)" value="([^"]*)"', page))
                status, body = _http("POST", f"{base}/f/{form_id}", urlencode(
                    {**hidden, **valid_answers(f"{i}-{n}")}), {
                    "Origin": bases[0], "Accept": "application/json",
                    "Content-Type": "application/x-www-form-urlencoded"})
                found = re.search(rb'"reference":\s*"([^"]+)"', body)
                with lock:
                    statuses[status] += 1
                    if status == 200 and found:
                        references.append(found.group(1).decode())

        with _process([*conf, "serve", "--bind", f"127.0.0.1:{ports[0]}", "--workers", "2"],
                      tmp_path / "a.log") as a, \
                _process([*conf, "serve", "--bind", f"127.0.0.1:{ports[1]}", "--workers", "2"],
                         tmp_path / "b.log") as b:
            _wait_up(bases[0], a, tmp_path / "a.log")
            _wait_up(bases[1], b, tmp_path / "b.log")
            with _process([*conf, "worker", "--interval", "0.1"], tmp_path / "w1.log"), \
                    _process([*conf, "worker", "--interval", "0.1"], tmp_path / "w2.log"):
                end = time.monotonic() + LOAD_SECONDS
                with ThreadPoolExecutor(CLIENTS) as pool:
                    list(pool.map(client, range(CLIENTS)))
                assert _wait_for(lambda: len(smtp.messages) >= len(references), 120)
                time.sleep(1.0)  # more passes of both workers: nothing is sent again
        by_id = smtp.by_message_id()
    deadlocks = pg_log.read_bytes()[log_start:].count(b"deadlock detected")
    print(f"\n{sum(statuses.values())} posts in {LOAD_SECONDS} s by {CLIENTS} clients: "
          f"{dict(statuses)}; {len(smtp.messages)} mails accepted, {len(by_id)} distinct "
          f"Message-IDs; {deadlocks} deadlocks in the PostgreSQL log")
    assert statuses[503] == 0 and set(statuses) == {200}, dict(statuses)
    assert len(references) >= CLIENTS  # the load did happen
    assert deadlocks == 0
    assert len(smtp.messages) == len(by_id) == len(references)  # each once, none twice
    store = Store(tmp_path / "unused.db", url=pg_url)
    try:
        assert {r["status"] for r in store.submissions.rows()} == {"sent"}
        assert store.outbox.rows(("queued", "failed")) == []
        for practice in ("default", "noord", "zuid"):
            result = verify(store, practice=practice)
            assert result.ok, result.problems
    finally:
        store.close()


def urlencode(data: dict[str, str]) -> bytes:
    from urllib.parse import urlencode as encode
    return encode(data).encode()


# -- the deadlock path, forced ----------------------------------------------------------
def test_a_transaction_given_up_in_a_deadlock_is_run_again(pg_url: str,
                                                           tmp_path: Path) -> None:
    """Two transactions take two locks in opposite order: PostgreSQL breaks the deadlock
    by rolling one back; `retried` runs that one again, so both end up committed, each
    audited once (the rolled-back attempt's audit row is gone with it)."""
    stores = [Store(tmp_path / "unused.db", url=pg_url) for _ in range(2)]
    both_hold_one = threading.Barrier(2, timeout=30)
    runs: Counter[str] = Counter()

    def work(name: str, first: str, second: str) -> Callable[[], str]:
        store = stores[name == "b"]

        def once() -> str:
            runs[name] += 1
            with store.transaction():
                store.audit.append("login", actor=f"user:{name}", detail=f"attempt {runs[name]}")
                store.lock(first)
                if runs[name] == 1:
                    both_hold_one.wait()  # each holds its first lock: now cross over
                store.lock(second)
            return name
        return lambda: store.retried(once)

    with ThreadPoolExecutor(2) as pool:
        done = [pool.submit(work("a", "x", "y")), pool.submit(work("b", "y", "x"))]
        assert sorted(f.result(timeout=60) for f in done) == ["a", "b"]
    assert sorted(runs.values()) == [1, 2]  # one was the deadlock's victim, run again
    rows = stores[0].audit.rows(practice="default")
    assert sorted(r["actor"] for r in rows) == ["user:a", "user:b"]
    victim = next(n for n, c in runs.items() if c == 2)
    assert next(r["detail"] for r in rows if r["actor"] == f"user:{victim}") == "attempt 2"
    assert verify(stores[0]).ok
    for s in stores:
        s.close()


def test_retries_that_run_out_answer_unavailable_and_write_nothing(pg_url: str,
                                                                   tmp_path: Path) -> None:
    """A conflict every time: after CONTENDED_TRIES runs the caller gets the store's
    "cannot be written" error (the form's 503), and none of the attempts left a row."""
    store = Store(tmp_path / "unused.db", url=pg_url)
    runs = 0

    def always_a_victim() -> None:
        nonlocal runs
        runs += 1
        with store.transaction() as conn:
            store.audit.append("login", actor="user:x")
            conn.execute("INSERT INTO rate_limits (key, count, expires_at) VALUES (?, 1, ?)",
                         (f"k{runs}", time.time() + 600))
            raise psycopg.errors.DeadlockDetected("deadlock detected")

    with pytest.raises(StoreNotWritable, match="conflict with another") as caught:
        store.retried(always_a_victim)
    assert isinstance(caught.value, StoreContended) and runs == CONTENDED_TRIES
    assert store.audit.rows() == [] and store.protection.counter("k1")[0] == 0
    store.close()


# -- a retried delivery never sends an accepted mail again ------------------------------
def test_mail_accepted_before_its_bookkeeping_failed_is_not_sent_again(
        make_app: Callable[..., Flask], tls: TlsFiles) -> None:
    clock = Clock()
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port, clock=clock)
        ref = submit(app)
        settings, store = app.extensions["formrelay"].settings, store_of(app)
        kinds = services.mail_kinds()

        def lost(mail: OutboxMail, store: Store) -> None:
            raise StoreNotWritable("database cannot be written (connection lost)")

        broken = {**kinds, "submission": dataclasses.replace(kinds["submission"], on_sent=lost)}
        with pytest.raises(StoreNotWritable):
            outbox.deliver_pending(settings, store, kinds=broken, owner="worker-a")
        assert len(server.messages) == 1  # the relay has it ...
        assert store.submissions.get(ref)["status"] == "queued"  # ... its bookkeeping was lost
        clock.advance(seconds=settings.smtp.lease_seconds + 1)  # worker-a's lease is over
        result = outbox.deliver_pending(settings, store, kinds=kinds, owner="worker-b")
        assert result.sent == 0 and len(server.messages) == 1  # not sent a second time
    assert store.submissions.get(ref)["status"] == "sent"
    assert store.outbox.rows(("queued", "failed")) == []
    sent = [r for r in store.audit.rows(ref) if r["action"] == "sent"]
    assert len(sent) == 1 and "accepted by" in sent[0]["detail"]
