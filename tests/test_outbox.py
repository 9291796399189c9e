"""The durable outbox: nothing lost, nothing sent twice at once, across outages and kill -9.

Workers run as real processes (`python -m formrelay worker`) against the same SQLite
file the app writes, and a real aiosmtpd server on 127.0.0.1 (tests/smtpd.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from formrelay import services
from formrelay.cli import cli
from formrelay.localtime import iso
from formrelay.mail.kinds import OPERATOR, sealed_recipient
from formrelay.ops import retention
from formrelay.ops.audit import verify
from formrelay.ops.worker import start_background
from formrelay.patient_copy import link_mail
from formrelay.store import Store

from .conftest import ENV, canary, open_store, post_form
from .helpers.copies import ENCODED, answers, thanks
from .helpers.copies import FIELDS as COPY_FIELDS
from .helpers.mail import Clock, attachment, deliver, mail_app, store_of, submit
from .keys import TestKey, gpg_decrypt
from .smtpd import TlsFiles, free_port, smtp_config, smtp_server

ROOT = Path(__file__).parent.parent


def worker(config: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """`formrelay worker` as its own process."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "formrelay", "--config", str(config),
                                 "worker", *args], cwd=ROOT, env={**os.environ, **ENV},
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll until `condition` holds (a wait with a generous ceiling, not a timing test)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


def all_sent(store: Store, refs: list[str]) -> bool:
    return all(store.submissions.get(r)["status"] == "sent" for r in refs)


def test_relay_down_then_up_delivers_each_exactly_once(make_app: Callable[..., Flask],
                                                       tls: TlsFiles) -> None:
    clock = Clock()
    port = free_port()
    app = mail_app(make_app, tls, port, clock=clock)
    refs = [submit(app, f"n{i}") for i in range(3)]  # the patient is told "received"
    store = store_of(app)
    result = deliver(app)
    assert (result.sent, result.deferred) == (0, 3)  # one try, then all deferred
    assert result.errors == ["relay unreachable"] * 3
    assert [store.submissions.get(r)["status"] for r in refs] == ["queued"] * 3
    clock.advance(minutes=1)
    deliver(app)
    with smtp_server(tls, port=port) as (server, _):
        clock.advance(minutes=10)
        assert deliver(app).sent == 3
        clock.advance(days=1)
        assert deliver(app).sent == 0
    assert sorted(m.parsed()["Message-ID"] for m in server.messages) == \
        sorted(f"<{r.lower()}@localhost>" for r in refs)
    assert all_sent(store, refs)


def test_several_worker_processes_never_send_one_mail_twice(
        make_app: Callable[..., Flask], tls: TlsFiles, tmp_path: Path) -> None:
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port)
        refs = [submit(app, f"n{i}") for i in range(12)]
        config = tmp_path / "config.toml"
        procs = [worker(config, "--once", log=tmp_path / f"worker{i}.log") for i in range(3)]
        codes = [p.wait(timeout=120) for p in procs]
    logs = "".join((tmp_path / f"worker{i}.log").read_text() for i in range(3))
    assert codes == [0, 0, 0], logs
    ids = [m.parsed()["Message-ID"] for m in server.messages]
    assert sorted(ids) == sorted(f"<{r.lower()}@localhost>" for r in refs)  # once each
    assert all_sent(store_of(app), refs)


def test_lease_keeps_a_mail_to_one_sender_until_it_expires(make_app: Callable[..., Flask],
                                                           tls: TlsFiles) -> None:
    clock = Clock()
    app = mail_app(make_app, tls, 1, clock=clock)
    ref = submit(app)
    settings = app.extensions["formrelay"].settings
    one = store_of(app)
    other = open_store(one.path, clock)  # a second process on the same database
    [mail] = one.outbox.claim("worker-a", settings.smtp.lease_seconds, 10)
    assert mail.reference == ref and mail.attempts == 1
    assert other.outbox.claim("worker-b", 300, 10) == []
    clock.advance(seconds=settings.smtp.lease_seconds - 5)
    assert one.outbox.renew_leases("worker-a", settings.smtp.lease_seconds) == 1
    clock.advance(seconds=10)
    assert other.outbox.claim("worker-b", 300, 10) == []  # renewed: still a's
    assert other.outbox.renew_leases("worker-b", 300) == 0
    clock.advance(seconds=settings.smtp.lease_seconds)
    [again] = other.outbox.claim("worker-b", 300, 10)  # a died: b sends it, same id
    assert again.message_id == mail.message_id and again.attempts == 2


def test_kill_9_mid_send_then_restart_delivers_everything(
        make_app: Callable[..., Flask], tls: TlsFiles, tmp_path: Path) -> None:
    release = threading.Event()
    with smtp_server(tls) as (server, port):
        server.stall = release  # the first DATA is received, then never answered
        app = mail_app(make_app, tls, port, smtp=smtp_config(
            tls, port, timeout_seconds=2, lease_seconds=3))
        refs = [submit(app, f"n{i}") for i in range(3)]
        config, log = tmp_path / "config.toml", tmp_path / "worker.log"
        first = worker(config, "--interval", "0.2", log=log)
        assert server.data_started.wait(60), log.read_text()
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
        release.set()
        store = store_of(app)
        assert not all_sent(store, refs)
        second = worker(config, "--interval", "0.2", log=log)
        wait_for(lambda: all_sent(store, refs), "delivery after the restart")
        second.send_signal(signal.SIGTERM)  # graceful stop
        assert second.wait(timeout=30) == 0, log.read_text()
    by_id = server.by_message_id()
    assert sorted(by_id) == sorted(f"<{r.lower()}@localhost>" for r in refs)
    resent = [copies for copies in by_id.values() if len(copies) > 1]
    assert len(resent) == 1  # the one in flight at the kill, re-sent with its Message-ID
    assert len({c.data for c in resent[0]}) == 1  # byte for byte the same message
    assert "delivery worker" in log.read_text() and "stopped" in log.read_text()


def vm_hwm_kb(pid: int) -> int:
    """The peak resident set of a running process since its exec (from /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


def test_20_mb_attachment_is_streamed_with_bounded_memory(
        make_app: Callable[..., Flask], tls: TlsFiles, tmp_path: Path,
        keys: dict[str, TestKey]) -> None:
    fields: list[dict[str, Any]] = [
        {"name": "volledige_naam", "type": "text", "label": "Naam", "required": True},
        {"name": "klachtomschrijving", "type": "textarea", "label": "Klacht"},
        {"name": "verwijsbrief", "type": "file", "label": "Scan", "accept": ["pdf"],
         "max_size_mb": 25}]
    scan = b"%PDF-1.7\n" + os.urandom(20 * 1024 * 1024)
    config, log = tmp_path / "config.toml", tmp_path / "worker.log"
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port, fields=fields, server={"max_request_mb": 30},
                       smtp=smtp_config(tls, port, max_message_mb=40))
        store = store_of(app)
        proc = worker(config, "--interval", "0.1", log=log)
        try:
            warm = submit(app, verwijsbrief=(b"%PDF-1.7\n" + os.urandom(50_000), "a.pdf"))
            wait_for(lambda: all_sent(store, [warm]), "the warm-up mail")
            idle = vm_hwm_kb(proc.pid)  # every code path has run once
            ref = submit(app, verwijsbrief=(scan, "scan.pdf"))
            size = store.submissions.get(ref)["size"]
            wait_for(lambda: all_sent(store, [ref]), "the 20 MB mail", timeout=120)
            sending = vm_hwm_kb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    got = server.messages[-1]
    assert len(got.data) > size > 27 * 1024 * 1024  # 20 MB, base64 and armour
    armour = got.parsed().get_payload()[1].get_payload(decode=True)
    assert attachment(delivery_inner(keys, armour), "scan.pdf") == scan
    grew_mb = (sending - idle) / 1024
    print(f"\nworker peak RSS: {idle / 1024:.1f} MB before, {sending / 1024:.1f} MB after "
          f"sending a {len(got.data) / 2**20:.1f} MB message (+{grew_mb:.1f} MB)")
    assert grew_mb < 16, (idle, sending)  # far less than the message: it was streamed


def delivery_inner(keys: dict[str, TestKey], armour: bytes) -> Any:
    return message_from_bytes(gpg_decrypt(keys["alice"], armour), policy=policy.default)


def test_temporary_failures_give_up_after_days_and_tell_the_operator(
        make_app: Callable[..., Flask], tls: TlsFiles) -> None:
    clock = Clock()
    port = free_port()
    app = mail_app(make_app, tls, port, clock=clock)
    ref = submit(app)
    store = store_of(app)
    while store.submissions.get(ref)["status"] == "queued":
        clock.advance(hours=6)
        deliver(app)
    [row] = store.outbox.rows(("failed",))
    assert row["error_class"] == "gave up after 5 days: relay unreachable"
    assert 5 < row["attempts"] < 40
    kinds = [r["kind"] for r in store.outbox.rows(("queued",))]
    assert kinds == [OPERATOR]  # waits for the relay like everything else
    with smtp_server(tls, port=port) as (server, _):
        clock.advance(hours=6)
        assert deliver(app).sent == 1
    assert server.messages[0].rcpt_tos == ["beheer@praktijk.test"]
    assert "gave up after 5 days" in server.messages[0].parsed().get_content()


def test_mail_queued_again_gets_a_fresh_give_up_clock(make_app: Callable[..., Flask],
                                                     tls: TlsFiles) -> None:
    """A mail that gave up after smtp.give_up_days and was queued again by the operator
    waits out the next temporary failure instead of failing at once."""
    clock = Clock()
    port = free_port()
    app = mail_app(make_app, tls, port, clock=clock)
    ref = submit(app)
    store = store_of(app)
    while store.submissions.get(ref)["status"] == "queued":  # the relay is down for days
        clock.advance(hours=6)
        deliver(app)
    assert store.submissions.get(ref)["status"] == "failed"
    # what `formrelay outbox --retry` runs, on the test's clock (the CLI has the real one)
    assert [m.reference for m in store.outbox.retry(ref)] == [ref]
    result = deliver(app)  # still down: a temporary failure, not a second give-up
    assert (result.failed, result.deferred) == (0, 2)
    assert [r["reference"] for r in store.outbox.rows(("failed",))] == []
    with smtp_server(tls, port=port) as (server, _):
        clock.advance(hours=1)
        assert deliver(app).sent == 2
    assert any(m.rcpt_tos == ["alice@praktijk.test"] for m in server.messages)


def test_worker_thread_stops_cleanly(make_app: Callable[..., Flask], tls: TlsFiles) -> None:
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port)
        relay = app.extensions["formrelay"]
        thread, stop = start_background(
            relay.settings, relay.store, kinds=services.mail_kinds(),
            purgers=services.purgers(), interval=0.05)
        ref = submit(app)
        wait_for(lambda: relay.store.submissions.get(ref)["status"] == "sent", "the thread to send")
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert len(server.messages) == 1


def test_sent_mail_keeps_no_address_and_old_mail_records_are_purged(
        make_app: Callable[..., Flask], tls: TlsFiles) -> None:
    clock = Clock()
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port, clock=clock, fields=COPY_FIELDS, patient_copy=True,
                       retention_days=30)
        ref = thanks(post_form(app.test_client(), answers(canary())))["reference"]
        assert deliver(app).sent == 2  # to the clinician, and the link to the patient
    assert sorted(m.rcpt_tos[0] for m in server.messages) == ["alice@praktijk.test",
                                                                "zoe@example.nl"]
    relay = app.extensions["formrelay"]
    store: Store = relay.store
    # after sending, the outbox keeps metadata only: not the patient's address, no payload
    rows = [dict(r) for r in store.conn.execute("SELECT * FROM outbox ORDER BY id")]
    assert [(r["kind"], r["status"], r["recipients"], r["payload"]) for r in rows] == [
        ("submission", "sent", "1 recipient", None), ("patient_copy", "sent", "1 recipient", None)]
    store.truncate_wal()  # old page versions too
    db = store.path
    for f in (db, Path(f"{db}-wal")) if store.engine.name == "sqlite" else ():
        assert b"zoe@example.nl" not in f.read_bytes()

    # a failed mail keeps its address (for `outbox --retry`) until the purge; queued
    # mail is never purged, however old
    failed = store.outbox.enqueue(OPERATOR, "", ["beheer@praktijk.test"], b"{}")
    [mail] = store.outbox.claim("test", 60)
    store.outbox.done(mail, "failed", "550 no such user", error_class="refused")
    queued = store.outbox.enqueue(OPERATOR, "", ["beheer@praktijk.test"], b"{}")
    clock.advance(days=29)
    report = retention.purge(relay.settings, store, clock.now, purgers=services.purgers())
    assert report.other["sent and failed mail records removed"] == 0
    assert len(store.outbox.rows(("sent", "failed"))) == 3
    clock.advance(days=2)  # past the form's retention_days (and the default for no form)
    report = retention.purge(relay.settings, store, clock.now, purgers=services.purgers())
    assert report.other["sent and failed mail records removed"] == 3
    assert [r["id"] for r in store.outbox.rows(("queued", "sent", "failed"))] == [queued]
    purged = [r for r in store.audit.rows() if r["action"] == "deleted"
              and r["detail"].startswith("retention: record of")]
    assert [(r["reference"], r["detail"].split()[3:6]) for r in purged] == [
        (ref, ["sent", "submission", "mail"]), (ref, ["sent", "patient_copy", "mail"]),
        ("", ["failed", "operator", "mail"])]
    assert f"#{failed} " in purged[2]["detail"] and verify(store).ok


def test_relay_refusing_the_sender_defers_everything_until_it_is_fixed(
        make_app: Callable[..., Flask], tls: TlsFiles, keys: dict[str, TestKey],
        logs: Any) -> None:
    """530 5.7.0 at MAIL FROM (the relay wants a login formrelay does not give) is the
    relay's problem, not the mails': nothing is failed, nothing is lost, the operator is
    told once, and everything goes exactly once when the relay is fixed."""
    clock = Clock()
    with smtp_server(tls) as (server, port):
        server.mail_reply = "530 5.7.0 Authentication required"
        app = mail_app(make_app, tls, port, clock=clock)
        marks = [canary() for _ in range(3)]
        refs = [submit(app, mark) for mark in marks]
        store = store_of(app)
        first = deliver(app)
        assert (first.sent, first.failed, first.deferred) == (0, 0, 3)
        for _ in range(40):  # ten days: longer than smtp.give_up_days
            clock.advance(hours=6)
            assert deliver(app).failed == 0
        assert store.outbox.rows(("failed", "sent")) == []
        queued = store.outbox.rows(("queued",))
        assert sorted(r["kind"] for r in queued) == [OPERATOR] + ["submission"] * 3
        assert {r["error_class"] for r in queued} == {
            "relay refuses formrelay's mail at MAIL FROM"}
        assert all("530 5.7.0" in r["error"] for r in queued)
        assert [store.submissions.get(r)["status"] for r in refs] == ["queued"] * 3
        assert "DATA" not in server.commands and server.messages == []
        assert any("relay refuses formrelay's mail" in r.getMessage() and
                   r.levelname == "ERROR" for r in logs.records)
        # what `formrelay check` and /healthz report: the waiting outbox and why
        state = store.outbox.state(clock.now)
        assert state["queued"] == 4 and "530 5.7.0" in state["error"]

        server.mail_reply = ""  # the operator fixed the relay
        clock.advance(hours=6)
        assert deliver(app).sent == 4
        clock.advance(days=1)
        assert deliver(app).sent == 0
    by_id = server.by_message_id()
    assert all(len(copies) == 1 for copies in by_id.values())  # exactly once each
    subs = {f"<{r.lower()}@localhost>": m for r, m in zip(refs, marks, strict=True)}
    for mid, mark in subs.items():
        armour = by_id[mid][0].parsed().get_payload()[1].get_payload(decode=True)
        assert mark in str(delivery_inner(keys, armour).get_body(("plain",)).get_content())
    [notice] = [m for m in server.messages if m.rcpt_tos == ["beheer@praktijk.test"]]
    text = notice.parsed().get_content()
    assert "530 5.7.0" in text and "No mail was marked failed" in text
    assert all_sent(store, refs)


def test_retry_failed_queues_every_failed_mail_again(make_app: Callable[..., Flask],
                                                     tls: TlsFiles, tmp_path: Path,
                                                     keys: dict[str, TestKey]) -> None:
    runner = CliRunner()
    config = ["--config", str(tmp_path / "config.toml")]
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port)
        server.rcpt_reply["alice@praktijk.test"] = "550 5.1.1 no such user"
        refs = [submit(app, f"n{i}") for i in range(2)]
        assert deliver(app).failed == 2
        store = store_of(app)
        assert [store.submissions.get(r)["status"] for r in refs] == ["failed"] * 2
        server.rcpt_reply.clear()  # the address was fixed at the relay
        out = runner.invoke(cli, [*config, "outbox", "--retry-failed"], env=ENV)
        assert out.exit_code == 0, out.output
        assert "2 failed mail(s) queued again" in out.output
        assert all(f"submission {r} queued again" in out.output for r in refs)
        retried = [r for r in store.audit.rows() if r["action"] == "queued"
                   and r["actor"] == "operator"]
        assert sorted(r["reference"] for r in retried) == sorted(refs)
        assert all("--retry-failed" in r["detail"] for r in retried)
        assert deliver(app).sent == 2
        again = runner.invoke(cli, [*config, "outbox", "--retry-failed"], env=ENV)
        assert again.exit_code == 0 and "0 failed mail(s) queued again" in again.output
        both = runner.invoke(cli, [*config, "outbox", "--retry-failed", "--retry", "1"], env=ENV)
        assert both.exit_code == 2 and "not both" in both.output
    to_alice = [m for m in server.messages if m.rcpt_tos == ["alice@praktijk.test"]]
    assert sorted(m.parsed()["Message-ID"] for m in to_alice) == \
        sorted(f"<{r.lower()}@localhost>" for r in refs)
    for m in to_alice:
        armour = m.parsed().get_payload()[1].get_payload(decode=True)
        assert "Pijn in de knie" in str(delivery_inner(keys, armour))
    assert all_sent(store, refs)
    assert verify(store).ok


@pytest.mark.parametrize("bad", ENCODED)
def test_mail_that_can_never_be_built_fails_at_once_and_the_rest_goes(
        make_app: Callable[..., Flask], tls: TlsFiles, bad: str, logs: Any) -> None:
    """A link mail to an address queued before the form refused encoded words: failed on
    the first attempt with the reason (audit, log, operator), not retried for days."""
    clock = Clock()
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port, clock=clock, fields=COPY_FIELDS,
                       patient_copy=True)
        ref = thanks(post_form(app.test_client(), answers(canary())))["reference"]
        relay = app.extensions["formrelay"]
        store: Store = relay.store
        payload = link_mail.seal(relay.settings, {"link": "https://localhost/copy/x#y",
                                                  "expires": iso(clock.now), "lang": "nl",
                                                  "downloads": 3}, ref)
        broken = store.outbox.enqueue(link_mail.LINK_KIND, ref,
                                      [sealed_recipient(relay.settings, bad, ref)],
                                      payload, "intake")
        result = deliver(app)
        assert (result.failed, result.sent, result.deferred) == (1, 3, 0)
        [failed] = store.outbox.rows(("failed",))
        assert failed["id"] == broken and failed["attempts"] == 1
        assert "encoded word" in failed["error"]
        audit = [r for r in store.audit.rows(ref) if r["action"] == "failed"]
        assert len(audit) == 1 and "encoded word" in audit[0]["detail"]
        assert any(f"mail #{broken}" in r.getMessage() and "encoded word" in r.getMessage()
                   and r.levelname == "ERROR" for r in logs.records)
        for _ in range(3):  # days later: not tried again
            clock.advance(days=2)
            assert deliver(app).handled == 0
    got = sorted(m.rcpt_tos[0] for m in server.messages)
    assert got == ["alice@praktijk.test", "beheer@praktijk.test", "zoe@example.nl"]
    [notice] = [m for m in server.messages if m.rcpt_tos == ["beheer@praktijk.test"]]
    assert "encoded word" in notice.parsed().get_content()
    assert all(bad not in m.data.decode() for m in server.messages)
    assert all(bad not in json.dumps(r) for r in store.audit.rows())
