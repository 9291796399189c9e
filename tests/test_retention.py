"""Retention with an injected clock: held submissions past their form's retention_days are
deleted (and that is audited), the audit rows stay; the worker runs it on schedule and
`formrelay purge` on demand. Also: batched notification mails."""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pyotp
import pytest
from flask import Flask

from formrelay import services
from formrelay.mail import notify, outbox
from formrelay.ops import retention
from formrelay.ops.audit import verify

from .area import Browser, Clock, add_user, audit, cheap_hashing, cli_run, totp_at
from .conftest import post_form, valid_answers


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def submit(app: Flask, mark: str = "") -> str:
    r = post_form(app.test_client(), valid_answers(mark), json_answer=True)
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["reference"])


def test_held_items_past_their_date_are_purged_audit_rows_stay(
        make_app: Callable[..., Flask], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    app = make_app(clock=clock, retention_days=30)
    relay = app.extensions["formrelay"]
    store = relay.store
    add_user(tmp_path, "anna", "--recipient", "alice")
    old = submit(app, "oud")
    clock.advance(days=20)
    new = submit(app, "nieuw")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    assert old in b.get("/clinician/").get_data(as_text=True)
    audit_before = len(store.audit.rows())

    clock.advance(days=10, hours=1)  # `old` is now 30 days and an hour old
    monkeypatch.setattr(retention, "_last_purge", 0.0)
    # what the worker runs
    retention.periodic(relay.settings, store, clock.now, purgers=services.purgers())
    assert store.submissions.get(old)["status"] == "deleted"
    with pytest.raises(KeyError):
        store.submissions.ciphertext(old)
    assert store.submissions.get(new)["status"] == "held" and store.submissions.ciphertext(new)
    b.login("anna", pyotp.TOTP(b.secret).at(clock.now))  # the session expired meanwhile
    inbox = b.get("/clinician/").get_data(as_text=True)
    assert old not in inbox and new in inbox
    assert b.get(f"/clinician/s/{old}/asc").status_code == 404

    rows = store.audit.rows()
    assert len(rows) > audit_before  # nothing removed, the deletion added
    [deleted] = [r for r in store.audit.rows(old) if r["action"] == "deleted"]
    assert deleted["actor"] == "system" and "30 days" in deleted["detail"]
    assert [r["action"] for r in store.audit.rows(old)][0] == "received"
    assert verify(store).ok

    again = retention.purge(relay.settings, store, clock.now, purgers=services.purgers())
    assert again.held == [] and again.audit_rows == 0
    result = cli_run(tmp_path, "purge")  # on demand (real time: nothing more is due)
    assert result.exit_code == 0 and "held submissions deleted: 0" in result.output


def test_batched_notifications(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock, notify_batch_minutes=10)
    relay = app.extensions["formrelay"]
    store = relay.store
    first = submit(app)
    assert store.outbox.rows() == []  # waits for the batch
    assert notify.flush(relay.settings, store, clock.now) == 1  # a quiet form: at once
    second, third = submit(app), submit(app)
    clock.advance(minutes=5)
    assert notify.flush(relay.settings, store, clock.now) == 0
    clock.advance(minutes=5)
    assert notify.flush(relay.settings, store, clock.now) == 1
    assert notify.flush(relay.settings, store, clock.now) == 0
    assert outbox.deliver_pending(relay.settings, store, kinds=services.mail_kinds()).sent == 2
    mails: list[Any] = [message_from_bytes(p.read_bytes(), policy=policy.default)
                        for p in sorted((tmp_path / "mail").iterdir())]
    bodies = {m["Subject"]: m.get_content() for m in mails}
    assert set(bodies) == {"Praktijk Test: nieuw formulier om te downloaden",
                           "Praktijk Test: 2 nieuwe formulieren om te downloaden"}
    one = bodies["Praktijk Test: nieuw formulier om te downloaden"]
    two = bodies["Praktijk Test: 2 nieuwe formulieren om te downloaden"]
    assert first in one and second not in one
    assert second in two and third in two and "http://localhost/clinician/" in two


def test_no_mail_relay_means_no_notification_but_the_item_is_held(
        make_app: Callable[..., Flask], logs: pytest.LogCaptureFixture) -> None:
    app = make_app(smtp={})
    ref = submit(app)
    store = app.extensions["formrelay"].store
    assert store.submissions.get(ref)["status"] == "held" and store.outbox.rows() == []
    assert any("no notification sent" in r.getMessage() for r in logs.records)
    assert audit(app, "received")
