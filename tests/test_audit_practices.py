"""Each audit event lands in its practice's chain: a submission's events in its form's
practice, a clinician's in their account's, the operator's and the system's in
`default`. A practice's export holds only its own events, each chain verifies on its
own, and tampering with one practice's rows fails only that practice's verification."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from formrelay import services
from formrelay.mail import outbox, reminders
from formrelay.store import Store

from .area import Browser, Clock, cheap_hashing, cli_run, totp_at
from .conftest import ENV, open_store, post_form
from .helpers.practices import make, practices_with_clinicians, two_practices, valid_answers
from .keys import TestKey

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def busy_practices(tmp_path: Path, keys: dict[str, TestKey]) -> tuple[Flask, str, str]:
    """Two practices (default: form intake, anna; noord: form noord-intake, bram), each
    with a submission, its clinician's login and download; anna also tries noord's."""
    clock = Clock()
    app, mine, theirs = practices_with_clinicians(tmp_path, keys, clock, delivery="hold")
    for name, ref, ip in (("anna", mine, "192.0.2.1"), ("bram", theirs, "192.0.2.2")):
        b = Browser(app, ip=ip)
        b.enrol(name, totp_at(clock))
        assert b.get(f"/clinician/s/{ref}/asc").status_code == 200
        if name == "anna":
            assert b.get(f"/clinician/s/{theirs}/asc").status_code == 404
        b.post("/clinician/logout")
    return app, mine, theirs


def chain(store: Store, practice: str) -> list[dict[str, Any]]:
    return list(store.audit.iter(practice=practice))


def test_every_event_lands_in_its_practices_chain(tmp_path: Path,
                                                  keys: dict[str, TestKey]) -> None:
    app, mine, theirs = busy_practices(tmp_path, keys)
    store = app.extensions["formrelay"].store
    default, noord = chain(store, "default"), chain(store, "noord")
    for rows, ref, user, form, other_ref in (
            (default, mine, "user:anna", "intake", theirs),
            (noord, theirs, "user:bram", "noord-intake", mine)):
        seen = {(r["action"], r["outcome"], r["actor"], r["reference"]) for r in rows}
        assert ("received", "ok", "patient", ref) in seen
        assert ("downloaded", "ok", user, ref) in seen
        assert {("login", "ok"), ("logout", "ok")} <= {(a, o) for a, o, who, _ in seen
                                                       if who == user}
        assert ("user created", "ok", "operator", "") in seen
        assert other_ref not in {r["reference"] for r in rows}
        assert all(r["form_id"] in ("", form) for r in rows)
        assert [r["id"] for r in rows] == list(range(1, len(rows) + 1))  # its own ids
    assert "user:bram" not in {r["actor"] for r in default}
    # anna's attempt on noord's submission: in noord's chain with its reference (whose
    # record it is), in hers without it
    assert [r["reference"] for r in noord if r["actor"] == "user:anna"] == [theirs]
    [attempt] = [r for r in default if r["outcome"] == "refused"]
    assert (attempt["actor"], attempt["reference"], attempt["form_id"]) == ("user:anna", "", "")
    assert attempt["detail"] == "another practice's submission"


def test_export_and_verify_one_practice(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    app, mine, theirs = busy_practices(tmp_path, keys)
    out = cli_run(tmp_path, "audit", "export", "--practice", "noord")
    assert out.exit_code == 0, out.output
    assert theirs in out.output and "user:bram" in out.output
    assert mine not in out.output and "\tintake\t" not in out.output
    assert "event(s) of practice noord. Audit chain: verified, unchanged." in out.output
    own = cli_run(tmp_path, "audit", "export", "--practice", "default")
    assert mine in own.output and theirs not in own.output and "user:bram" not in own.output
    one = cli_run(tmp_path, "audit", "export", "--reference", theirs, "--practice", "default")
    assert "No events recorded" in one.output
    for practice in ("default", "noord"):
        ok = cli_run(tmp_path, "audit", "verify", "--practice", practice)
        assert ok.exit_code == 0 and "ok: the audit log is intact" in ok.output, ok.output


def test_export_needs_a_reference_or_a_known_practice(tmp_path: Path,
                                                      keys: dict[str, TestKey]) -> None:
    make(tmp_path, two_practices(tmp_path, keys))
    neither = cli_run(tmp_path, "audit", "export")
    assert neither.exit_code == 2
    assert "(--reference FR-...) or a practice (--practice ID)" in neither.output
    unknown = cli_run(tmp_path, "audit", "export", "--practice", "west")
    assert unknown.exit_code == 2
    assert "no audit chain for practice 'west'" in unknown.output


@pytest.mark.sqlite_only  # tampers with the SQLite file; see test_postgres.py
def test_tampering_with_one_practice_fails_only_its_chain(tmp_path: Path,
                                                          keys: dict[str, TestKey]) -> None:
    app, _, theirs = busy_practices(tmp_path, keys)
    store = app.extensions["formrelay"].store
    con = sqlite3.connect(store.path, isolation_level=None)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("UPDATE audit SET outcome = 'ok' WHERE practice = 'noord' AND outcome = "
                "'refused'")  # hide anna's attempt on noord's record
    con.close()
    bad = cli_run(tmp_path, "audit", "verify", "--practice", "noord")
    assert bad.exit_code == 2 and "was changed" in bad.output, bad.output
    good = cli_run(tmp_path, "audit", "verify", "--practice", "default")
    assert good.exit_code == 0, good.output
    export = cli_run(tmp_path, "audit", "export", "--practice", "noord")
    assert "PROBLEMS FOUND - run `formrelay audit verify --practice noord`" in export.output
    both = cli_run(tmp_path, "audit", "verify")
    assert both.exit_code == 2 and "PROBLEM practice noord" in both.output
    assert "PROBLEM practice default" not in both.output and "PROBLEM row" not in both.output


def test_a_practices_key_reminder_is_in_its_chain(tmp_path: Path,
                                                 keys: dict[str, TestKey]) -> None:
    cfg = two_practices(tmp_path, keys)
    cfg["practices"]["noord"]["recipients"]["soon"] = {
        "email": "soon@noord.test", "key_file": str(keys["soon"].public),
        "fingerprint": keys["soon"].fingerprint}
    built = make(tmp_path, cfg).extensions["formrelay"]
    statuses = built.relay.sync_keys()
    assert reminders.check_key_expiry(built.settings, built.store, statuses,
                                   statuses["soon"].expires) == ["soon"]
    outbox.deliver_pending(built.settings, built.store, kinds=services.mail_kinds())
    noord = [(r["action"], r["detail"].split(",")[0]) for r in chain(built.store, "noord")]
    assert ("queued", "operator mail to 1 recipient(s)") in noord
    assert ("sent", "operator mail") in noord
    assert "operator" not in {r["detail"].split(" ")[0] for r in chain(built.store, "default")}


def test_the_rule_for_events_that_name_no_practice(tmp_path: Path) -> None:
    store = open_store(tmp_path / "formrelay.db")
    store.clinicians.add("olga", "x", email="", recipients=[], forms=["oost-intake"],
                         practice="oost")
    # the caller that knows the form names its practice (Settings.practice_of)
    store.audit.append("received", actor="patient", reference="FR-AAAA-AAAA",
                       form_id="oost-intake", practice="oost")
    # oost-intake since removed from the config: the store follows the record
    store.audit.append("deleted", reference="FR-AAAA-AAAA", form_id="oost-intake")  # its chain
    store.audit.append("login", actor="user:olga")  # the account's practice
    store.audit.append("login", "failed", actor="unknown")  # nobody's: default
    store.audit.append("login", actor="user:gone")  # no such account: default
    store.audit.append("deleted", reference="FR-BBBB-BBBB", form_id="never-seen")  # default
    store.audit.append("queued", form_id="intake", practice="oost")  # named explicitly
    oost = [(r["action"], r["actor"]) for r in chain(store, "oost")]
    assert oost == [("received", "patient"), ("deleted", "system"), ("login", "user:olga"),
                    ("queued", "system")]
    assert [r["actor"] for r in chain(store, "default")] == ["unknown", "user:gone", "system"]


def test_a_practice_added_by_reload_gets_its_own_chain(tmp_path: Path,
                                                      keys: dict[str, TestKey]) -> None:
    from formrelay import create_app

    from .helpers.practices import noord
    from .helpers.reload import _config

    config = _config(tmp_path, keys)
    app = create_app(config, environ=ENV)
    app.testing = True
    client = app.test_client()
    _config(tmp_path, keys, noord=noord(keys))
    app.extensions["formrelay.live"].ask()  # as SIGHUP does
    ref = post_form(client, valid_answers(), form_id="noord-intake",
                    json_answer=True).get_json()["reference"]
    store = app.extensions["formrelay"].store
    assert ("received", ref) in {(r["action"], r["reference"]) for r in chain(store, "noord")}
    assert ref not in {r["reference"] for r in chain(store, "default")}
    # a bad file keeps the rule in force: noord's form still goes to noord's chain
    config.write_text(config.read_text() + "\n[forms.intake\n")
    app.extensions["formrelay.live"].ask()
    again = post_form(client, valid_answers(), form_id="noord-intake",
                      json_answer=True).get_json()["reference"]
    assert again in {r["reference"] for r in chain(store, "noord")}
