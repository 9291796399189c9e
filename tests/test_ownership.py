"""Ownership is recorded, not derived: every stored row names the practice it was written
for, and who may see it, whose audit chain its events go to and whose name its queued
mail carries follow that record, never the configuration of the day. The attack: a
practice file removed and its form id reused by another practice, then reloaded."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from formrelay.config import load_config
from formrelay.mail import notify, outbox
from formrelay.ops import retention
from formrelay.services import Services, form_owner
from formrelay.store import Store, base

from .area import Browser, Clock, add_user, cheap_hashing, cli_run, totp_at
from .conftest import ENV, ON_POSTGRES, open_store, post_form, write_config
from .helpers.copies import pick, thanks
from .helpers.ownership import (
    FIELDS,
    INSTANCE_OPERATOR,
    NOORD_NAME,
    NOORD_PHONE,
    ZUID_FROM,
    ZUID_NAME,
    ZUID_PHONE,
    make,
    practice_file,
    reload,
    two_practice_files,
)
from .keys import TestKey, gpg_decrypt
from .pg import PgServer
from .smtpd import TlsFiles, smtp_config, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

API = "/clinician/api/submissions"


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def take_over_b_hold(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """The attack: zuid's file removed, its form id b-hold reused by noord (for dr-a)."""
    (tmp_path / "practices" / "zuid.toml").unlink()
    b_hold = {"title": "Overgenomen", "recipients": ["dr-a"], "delivery": "hold",
              "fields": FIELDS}
    write_config(tmp_path / "practices" / "noord.toml",
                 practice_file(keys, "noord", **{"b-hold": b_hold}))


def restore_zuid(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    for which in ("noord", "zuid"):
        write_config(tmp_path / "practices" / f"{which}.toml", practice_file(keys, which))


def api_token(b: Browser) -> str:
    b.get("/clinician/account/")
    page = b.post("/clinician/account/tokens", {"name": "his"}).get_data(as_text=True)
    return re.search(r'<code id="new-token">(fr_[^<]+)</code>', page).group(1)  # type: ignore[union-attr]


def chain(store: Store, practice: str) -> list[dict[str, Any]]:
    return list(store.audit.iter(practice=practice))


# -- 16.3: access ------------------------------------------------------------------------------
def test_a_reused_form_id_does_not_hand_over_another_practices_submissions(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    clock = Clock()
    config = two_practice_files(tmp_path, keys)
    app = make(config, clock)
    add_user(tmp_path, "alice", "--practice", "noord", "--recipient", "dr-a")
    add_user(tmp_path, "bea", "--practice", "zuid", "--recipient", "dr-b")
    client = app.test_client()
    theirs = post_form(client, {"name": "Zuid patiënt", "complaint": "rug"}, form_id="b-hold",
                       json_answer=True).get_json()["reference"]
    mine = post_form(client, {"name": "Noord patiënt", "complaint": "knie"}, form_id="a-hold",
                     json_answer=True).get_json()["reference"]
    b = Browser(app, ip="192.0.2.10")
    b.enrol("alice", totp_at(clock))
    token = api_token(b)

    take_over_b_hold(tmp_path, keys)
    services = reload(app)
    assert services.settings.forms["b-hold"].practice == "noord"  # the form id reused
    store = services.store

    inbox = b.get("/clinician/").get_data(as_text=True)
    assert mine in inbox and theirs not in inbox
    unknown = "FR-2222-2222"
    for path in ("/clinician/s/REF/asc", "/clinician/s/REF/eml", "/clinician/s/REF/processed"):
        seen = [b.get(path.replace("REF", ref)) for ref in (theirs, unknown)]
        assert [r.status_code for r in seen] == [404, 404], path
        assert seen[0].get_data(as_text=True) == seen[1].get_data(as_text=True)
    deleted = [b.post(f"/clinician/s/{ref}/processed") for ref in (theirs, unknown)]
    assert [r.status_code for r in deleted] == [404, 404]
    assert deleted[0].get_data(as_text=True) == deleted[1].get_data(as_text=True)
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    listed = api.get(API, headers=auth, base_url="https://localhost").get_json()
    assert [s["reference"] for s in listed["submissions"]] == [mine]
    fetched = [api.get(f"{API}/{ref}", headers=auth, base_url="https://localhost")
               for ref in (theirs, unknown)]
    assert [r.status_code for r in fetched] == [404, 404]
    assert fetched[0].get_json() == fetched[1].get_json()

    # nothing was handed out or deleted; every refusal is audited: in zuid's chain with
    # the reference, in alice's (noord's) without it
    assert store.submissions.get(theirs)["status"] == "held"
    zuid = [r for r in chain(store, "zuid") if r["actor"] == "user:alice"]
    assert {(r["action"], r["outcome"]) for r in zuid} == {("downloaded", "refused"),
                                                          ("deleted", "refused")}
    assert len(zuid) == 5 and {r["reference"] for r in zuid} == {theirs}
    assert all(r["detail"] == "another practice's submission" for r in zuid)
    noord = chain(store, "noord")
    assert theirs not in {r["reference"] for r in noord}
    assert not [r for r in store.audit.rows(theirs) if r["outcome"] == "ok"
                and r["action"] in ("downloaded", "deleted")]

    # zuid comes back: its clinician sees it and decrypts it with zuid's key
    restore_zuid(tmp_path, keys)
    reload(app)
    z = Browser(app, ip="192.0.2.20")
    z.enrol("bea", totp_at(clock))
    assert theirs in z.get("/clinician/").get_data(as_text=True)
    got = z.get(f"/clinician/s/{theirs}/asc")
    assert got.status_code == 200
    assert f"Subject: Intake zuid - {theirs}" in gpg_decrypt(keys["bob"], got.data).decode()
    assert ("downloaded", "ok", "user:bea") in {(r["action"], r["outcome"], r["actor"])
                                               for r in chain(store, "zuid")}
    for practice in ("noord", "zuid"):
        ok = cli_run(tmp_path, "audit", "verify", "--practice", practice)
        assert ok.exit_code == 0 and "ok: the audit log is intact" in ok.output, ok.output


def test_a_reused_form_id_changes_neither_retention_nor_the_chain_of_the_purge(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    clock = Clock()
    app = make(two_practice_files(tmp_path, keys), clock)
    ref = post_form(app.test_client(), {"name": "Z", "complaint": "c"}, form_id="b-hold",
                    json_answer=True).get_json()["reference"]
    take_over_b_hold(tmp_path, keys)
    (tmp_path / "practices" / "noord.toml").write_text(
        (tmp_path / "practices" / "noord.toml").read_text().replace(
            'title = "Overgenomen"', 'title = "Overgenomen"\nretention_days = 1'))
    services = reload(app)
    assert services.settings.forms["b-hold"].retention_days == 1
    clock.advance(days=2)
    report = retention.purge(services.settings, services.store, clock.now,
                             purgers=services.purgers)
    assert report.held == [] and services.store.submissions.get(ref)["status"] == "held"
    clock.advance(days=29)  # its own 30 days
    report = retention.purge(services.settings, services.store, clock.now,
                             purgers=services.purgers)
    assert report.held == [ref]
    [gone] = [r for r in services.store.audit.rows(ref) if r["action"] == "deleted"]
    assert gone["practice"] == "zuid" and "30 days" in gone["detail"]


# -- 16.3: the migration -----------------------------------------------------------------------
def _old_store(tmp_path: Path, request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch) -> Store:
    """A database as the version before the ownership record made it (every migration
    up to 0080), on this run's engine."""
    before = [m for m in base.MIGRATIONS if m[0] < "0080"]
    with monkeypatch.context() as m:
        m.setattr(base, "MIGRATIONS", before)  # where Store.migrate reads them
        if not ON_POSTGRES:
            return open_store(tmp_path / "old.db")
        server: PgServer = request.getfixturevalue("postgres")
        name = f"old{id(tmp_path) % 100000}"
        server.admin(f"CREATE DATABASE {name}")  # empty: not from the migrated template
        request.addfinalizer(lambda: server.drop(server.url(name)))
        return Store(tmp_path / "unused.db", url=server.url(name))


def test_the_migration_fills_the_record_from_the_chain_or_the_form(
        tmp_path: Path, keys: dict[str, TestKey], request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    old = _old_store(tmp_path, request, monkeypatch)
    rows = [("FR-AAAA-AAAA", "b-hold", "zuid"),  # received in zuid's chain
            ("FR-BBBB-BBBB", "b-hold", None),  # its "received" row purged long ago
            ("FR-CCCC-CCCC", "gone", None)]  # a form no longer configured
    with old.transaction() as conn:
        for ref, form, chain_ in rows:
            conn.execute("INSERT INTO submissions (reference, form_id, received_at, delivery, "
                         "status, size, file_count, ciphertext) VALUES (?, ?, "
                         "'2026-01-01T00:00:00.000000Z', 'hold', 'held', 1, 0, ?)",
                         (ref, form, b"x"))
            if chain_:
                old.audit.append("received", actor="patient", reference=ref, form_id=form,
                                 practice=chain_)
            conn.execute("INSERT INTO outbox (kind, reference, form_id, recipients, "
                         "message_id, created_at, next_attempt_at) VALUES ('held-notice', ?, "
                         "?, '[]', ?, 'x', 'x')", (ref, form, f"m.{ref}"))
        conn.execute("INSERT INTO outbox (kind, form_id, recipients, message_id, created_at, "
                     "next_attempt_at, practice) VALUES ('operator', '', '[]', 'op', 'x', "
                     "'x', 'zuid')")
        conn.execute("INSERT INTO copies (id, reference, form_id, lang, check_hash, code_mac, "
                     "quick_hash, quick_until, created_at, expires_at, max_downloads) VALUES "
                     "('c1', 'FR-AAAA-AAAA', 'b-hold', 'nl', '', '', '', '', '', '', 3)")
    old.close()
    store = open_store(tmp_path / "old.db") if not ON_POSTGRES else \
        Store(tmp_path / "unused.db", url=old.url)
    # the configuration at migration time: b-hold is noord's now (dr-a), zuid is gone
    config = two_practice_files(tmp_path, keys)
    take_over_b_hold(tmp_path, keys)
    settings = load_config(config, ENV)
    assert store.submissions.fill_ownership(form_owner(settings)) == 3
    got = {r["reference"]: r for r in store.submissions.rows()}
    assert got["FR-AAAA-AAAA"]["practice"] == "zuid"  # the chain its "received" is in
    assert got["FR-BBBB-BBBB"]["practice"] == "noord"  # the form's practice then
    assert got["FR-BBBB-BBBB"]["recipients"] == '["dr-a"]'
    assert keys["alice"].fingerprint in got["FR-BBBB-BBBB"]["fingerprints"]
    assert got["FR-CCCC-CCCC"]["practice"] == "default"
    assert all(r["keep_days"] == 30 for r in got.values())
    outbox = {r["message_id"]: r["practice"] for r in store.conn.execute(
        "SELECT message_id, practice FROM outbox")}
    assert outbox == {"m.FR-AAAA-AAAA": "zuid", "m.FR-BBBB-BBBB": "noord",
                      "m.FR-CCCC-CCCC": "default", "op": "zuid"}
    assert store.copies.get("c1")["practice"] == "zuid"
    assert store.submissions.fill_ownership(form_owner(settings)) == 0  # once
    store.close()


# -- 16.4: queued mail keeps the name it was queued under -----------------------------------
def deliver(app: Flask) -> Any:
    services: Services = app.extensions["formrelay.live"].current
    return outbox.deliver_pending(services.settings, services.store, kinds=services.kinds)


def test_a_removed_practices_queued_mail_keeps_its_own_name(
        tmp_path: Path, keys: dict[str, TestKey], tls: TlsFiles) -> None:
    clock = Clock()
    with smtp_server(tls) as (server, port):
        server.mail_reply = "451 4.3.0 try again later"  # the relay is having a bad day
        config = two_practice_files(tmp_path, keys, smtp=smtp_config(tls, port))
        app = make(config, clock)
        client = app.test_client()
        copy = post_form(client, {"name": "Z", "complaint": "rug", "email": "zoe@example.nl",
                                  "_copy": "1"}, form_id="b-mail")
        assert 'id="pickup-code"' in copy.get_data(as_text=True)
        held = post_form(client, {"name": "Z", "complaint": "knie"}, form_id="b-hold",
                         json_answer=True).get_json()["reference"]
        first = deliver(app)
        assert (first.sent, first.deferred) == (0, 3)  # mail, copy link, held notice

        (tmp_path / "practices" / "zuid.toml").unlink()  # zuid leaves meanwhile
        assert "b-mail" not in reload(app).settings.forms
        server.mail_reply = "530 5.7.0 Authentication required"  # then refuses formrelay
        clock.advance(hours=1)
        assert deliver(app).sent == 0
        server.mail_reply = ""  # the relay is back
        clock.advance(hours=2)
        assert deliver(app).sent == 4 and server.messages

    by_to = {tuple(m.rcpt_tos): m for m in server.messages}
    link = by_to[("zoe@example.nl",)]
    text = link.parsed().get_content()
    assert link.mail_from == ZUID_FROM and str(link.parsed()["From"]) == ZUID_FROM
    assert ZUID_NAME in str(link.parsed()["Subject"])
    assert ZUID_NAME in text and ZUID_PHONE in text
    assert NOORD_NAME not in text and NOORD_PHONE not in text
    notices = [m for m in server.messages if m.rcpt_tos == ["dr-b@zuid.test"]]
    assert len(notices) == 2  # the encrypted submission and the held notice
    [notice] = [m for m in notices if m.parsed().get_content_type() == "text/plain"]
    assert held in notice.parsed().get_content()
    assert ZUID_NAME in str(notice.parsed()["Subject"]) and notice.mail_from == ZUID_FROM
    assert NOORD_NAME not in notice.parsed().get_content()
    assert all(m.mail_from == ZUID_FROM for m in notices)
    # the relay refusing formrelay is every practice's business: the instance's operator
    [relay] = [m for m in server.messages if "relay refuses" in str(m.parsed()["Subject"])]
    assert relay.rcpt_tos == [INSTANCE_OPERATOR]
    assert "beheer@noord.test" not in {r for m in server.messages for r in m.rcpt_tos}


def test_mail_queued_without_a_record_waits_for_its_practice(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """A mail an older version queued (no recorded sender) of a practice that is gone is
    neither sent in another's name nor failed: it waits, the instance's operator is told
    once, and it goes when the practice is back."""
    clock = Clock()
    app = make(two_practice_files(tmp_path, keys), clock)
    store = app.extensions["formrelay"].store
    payload = json.dumps({"form_id": "b-hold", "items": [
        {"reference": "FR-AAAA-AAAA", "received_at": "2026-12-01T10:00:00.000000Z"}]})
    store.outbox.enqueue("held-notice", "FR-AAAA-AAAA", ["dr-b@zuid.test"], payload.encode(),
                         "b-hold", practice="zuid")  # as the version before wrote it
    take_over_b_hold(tmp_path, keys)
    reload(app)
    sent_now = []
    for _ in range(4):
        result = deliver(app)
        sent_now.append(result.sent)
        assert result.failed == 0 and result.deferred == 1
        clock.advance(days=4)  # longer than smtp.give_up_days in all: still waiting
    assert sum(sent_now) == 1  # the operator's notice, once
    sink = tmp_path / "mail"
    sent = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sink.glob("*")]
    assert [str(m["To"]) for m in sent] == [INSTANCE_OPERATOR]
    assert "removed practice zuid" in str(sent[0]["Subject"])
    [waiting] = store.outbox.rows(("queued",))
    assert waiting["error_class"] == "practice no longer configured"
    restore_zuid(tmp_path, keys)
    reload(app)
    clock.advance(days=1)
    assert deliver(app).sent == 1
    notice = next(m for m in (message_from_bytes(p.read_bytes(), policy=policy.default)
                              for p in sink.glob("*")) if str(m["To"]) == "dr-b@zuid.test")
    assert ZUID_NAME in str(notice["Subject"]) and str(notice["From"]) == ZUID_FROM


def test_batched_held_notices_wait_for_the_practice_they_were_recorded_for(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    clock = Clock()
    config = two_practice_files(tmp_path, keys)
    zuid = practice_file(keys, "zuid")
    zuid["forms"]["b-hold"]["notify_batch_minutes"] = 60
    write_config(tmp_path / "practices" / "zuid.toml", zuid)
    app = make(config, clock)
    ref = post_form(app.test_client(), {"name": "Z", "complaint": "c"}, form_id="b-hold",
                    json_answer=True).get_json()["reference"]
    take_over_b_hold(tmp_path, keys)  # before the batch went out
    services = reload(app)
    clock.advance(hours=2)
    assert notify.flush(services.settings, services.store, clock.now) == 0
    assert services.store.outbox.rows(("queued",)) == []  # dr-a is told nothing
    write_config(tmp_path / "practices" / "noord.toml", practice_file(keys, "noord"))
    write_config(tmp_path / "practices" / "zuid.toml", zuid)
    services = reload(app)
    assert notify.flush(services.settings, services.store, clock.now) == 1
    assert deliver(app).sent == 1
    [mail] = [message_from_bytes(p.read_bytes(), policy=policy.default)
              for p in (tmp_path / "mail").glob("*")]
    assert str(mail["To"]) == "dr-b@zuid.test" and ZUID_NAME in str(mail["Subject"])
    assert ref in mail.get_content()


def test_the_copy_page_names_the_practice_the_copy_was_made_for(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    app = make(two_practice_files(tmp_path, keys))
    client = app.test_client()
    got = thanks(post_form(client, {"name": "Z", "complaint": "c", "email": "zoe@example.nl",
                                    "_copy": "1"}, form_id="b-mail"))
    # zuid stays, but its form id b-mail now belongs to noord
    zuid = practice_file(keys, "zuid")
    del zuid["forms"]["b-mail"]
    write_config(tmp_path / "practices" / "zuid.toml", zuid)
    b_mail = {"title": "Vraag", "recipients": ["dr-a"], "delivery": "email", "fields": FIELDS}
    write_config(tmp_path / "practices" / "noord.toml",
                 practice_file(keys, "noord", **{"b-mail": b_mail}))
    assert reload(app).settings.forms["b-mail"].practice == "noord"
    html = client.get(got["url"]).get_data(as_text=True)
    assert ZUID_NAME in html and ZUID_PHONE in html and NOORD_NAME not in html
    for _ in range(3):  # every download, then the used-up page
        assert pick(client, got["url"], got["key"], grant=got["grant"]).status_code == 200
    gone = pick(client, got["url"], got["key"], grant=got["grant"])
    assert gone.status_code == 410
    assert ZUID_PHONE in gone.get_data(as_text=True)
    assert NOORD_NAME not in gone.get_data(as_text=True)
