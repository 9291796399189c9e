"""A practice owner chooses who reads which form (issue 18.6): on the members page the
owner adds a member's key to a form, and every later submission is encrypted to every
reader of it, in every process and across a reload; a reader is taken off again, but
never the last one. Each change is audited with the key's fingerprint and told to the
operator without content. Keys are made by the vendored OpenPGP.js."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import tomli_w

from formrelay import create_app

from .area import Clock, audit, cheap_hashing
from .conftest import ENV
from .helpers.form_readers import OTHER, change, member, opens, practice, submit, with_key
from .keys import TestKey
from .reader import PASSPHRASE, node_key

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


@pytest.fixture(scope="module")
def made() -> list[dict[str, str]]:
    return [node_key(), node_key(OTHER)]


def test_owner_adds_a_members_key_then_takes_a_reader_off_but_never_the_last(
        tmp_path: Path, keys: dict[str, TestKey], made: list[dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    path = practice(tmp_path, keys)
    app = create_app(path, environ=ENV, clock=clock)
    app.testing = True
    anna = member(app, tmp_path, clock, "anna", "reader", "127.0.0.1")
    store = app.extensions["formrelay"].store
    store.readers.set_role(store.clinicians.get(username="anna")["id"], "owner")
    with_key(anna, made[0])
    bram = member(app, tmp_path, clock, "bram", "second", "127.0.0.8")
    before = submit(app)
    assert opens(app, before, made[0], PASSPHRASE) and not opens(app, before, made[1], OTHER)

    # bram has no key yet: nothing to add, and the post is refused, audited
    page = anna.get("/clinician/members/").get_data(as_text=True)
    assert 'id="reader-intake-reader"' in page and 'id="add-intake"' not in page
    status, page = change(anna, "add", "second")
    assert status == 400 and "heeft nog geen actieve sleutel" in page
    with_key(bram, made[1])
    assert '<option value="second">bram (second)</option>' in anna.get(
        "/clinician/members/").get_data(as_text=True)
    assert f"row-{before}" not in bram.get("/clinician/").get_data(as_text=True)

    status, page = change(anna, "add", "second")
    assert status == 200 and 'id="readers-changed"' in page
    assert 'id="reader-intake-second"' in page and "bram (second)" in page
    after = submit(app)
    assert opens(app, after, made[0], PASSPHRASE) and opens(app, after, made[1], OTHER)
    assert json.loads(store.submissions.get(after)["recipients"]) == ["reader", "second"]
    inbox = bram.get("/clinician/").get_data(as_text=True)
    assert f"row-{after}" in inbox and f"row-{before}" not in inbox  # stored before: anna's
    assert "anna (reader); bram (second)" in anna.get("/clinician/").get_data(as_text=True)
    members = anna.get("/clinician/members/").get_data(as_text=True)
    assert re.search(r'id="member-bram">.*?<td data-label="Formulieren">intake</td>', members,
                     re.S)
    [added] = audit(app, "form readers", "ok")
    assert added["actor"] == "user:anna" and added["form_id"] == "intake"
    assert made[1]["fingerprint"] in added["detail"] and "readers now reader, second" \
        in added["detail"]
    mails = [bytes(m["payload"]).decode() for m in store.conn.execute(
        "SELECT payload FROM outbox WHERE kind = 'operator'")]
    grouped = " ".join(made[1]["fingerprint"][i:i + 4] for i in range(0, 40, 4))
    told = [m for m in mails if "readers of form intake" in m]
    assert len(told) == 1 and grouped in told[0] and "bram" in told[0]
    assert "Jeroen" not in told[0] and "PUBLIC KEY" not in told[0]

    # another process over the same data, and a reload: the same readers
    worker = create_app(path, environ=ENV, clock=clock)
    worker.testing = True
    assert opens(worker, submit(worker), made[1], OTHER)
    cfg = tomllib.loads(path.read_text())
    cfg["forms"]["intake"]["title"] = "Intake na herladen"
    path.write_text(tomli_w.dumps(cfg))
    app.extensions["formrelay.live"].ask()
    reloaded = submit(app)
    assert opens(app, reloaded, made[0], PASSPHRASE) and opens(app, reloaded, made[1], OTHER)
    assert "Intake na herladen" in anna.get("/clinician/members/").get_data(as_text=True)

    # anna's recipient (the configuration's) taken off: bram alone reads new ones
    status, page = change(anna, "remove", "reader")
    assert status == 200 and 'id="reader-intake-reader"' not in page
    alone = submit(app)
    assert opens(app, alone, made[1], OTHER) and not opens(app, alone, made[0], PASSPHRASE)
    # the last reader stays: refused with the reason, audited, nothing changed
    status, page = change(anna, "remove", "second")
    assert status == 400 and "is de enige lezer van dit formulier" in page
    assert opens(app, submit(app), made[1], OTHER)
    [refused] = [a for a in audit(app, "form readers", "refused") if "only" in a["detail"]]
    assert refused["detail"] == "second: the form's only reader"
    # back as configured: anna reads again, the owner's row is gone
    assert change(anna, "add", "reader")[0] == 200
    assert store.readers.of_forms("default") == [
        {**store.readers.of_forms("default")[0], "recipient": "second", "kind": "add"}]
    assert opens(app, submit(app), made[0], PASSPHRASE)


def test_only_the_owner_changes_readers_and_only_members_keys_of_the_practice(
        tmp_path: Path, keys: dict[str, TestKey], made: list[dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    path = practice(tmp_path, keys)
    app = create_app(path, environ=ENV, clock=clock)
    app.testing = True
    anna = member(app, tmp_path, clock, "anna", "reader", "127.0.0.1")
    with_key(anna, made[0])
    # anna is a reader, not the owner: refused, nothing changed
    status, page = change(anna, "add", "reader")
    assert status == 403 and "Alleen de eigenaar van de praktijk" in page
    store = app.extensions["formrelay"].store
    store.readers.set_role(store.clinicians.get(username="anna")["id"], "owner")
    for rid, form, why in (("alice", "intake", "heeft nog geen actieve sleutel"),
                           ("nobody", "intake", "heeft nog geen actieve sleutel"),
                           ("reader", "elders", "geen formulier met die naam")):
        status, page = change(anna, "add", rid, form)
        assert status == 400 and why in page, (rid, form)
    status, page = change(anna, "remove", "reader")
    assert status == 400 and "is de enige lezer" in page
    assert store.readers.of_forms("default") == []
    ref = submit(app)
    assert json.loads(store.submissions.get(ref)["recipients"]) == ["reader"]
    # a reader with a key file is the operator's: the owner cannot take it off
    cfg = tomllib.loads(path.read_text())
    cfg["forms"]["intake"]["recipients"] = ["reader", "alice"]
    path.write_text(tomli_w.dumps(cfg))
    app.extensions["formrelay.live"].ask()
    status, page = change(anna, "remove", "alice")
    assert status == 400 and "leest met een sleutelbestand van uw beheerder" in page
    assert store.readers.of_forms("default") == []
    assert "key file" in audit(app, "form readers", "refused")[-1]["detail"]
