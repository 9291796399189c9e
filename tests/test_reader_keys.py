"""The server's side of keys made in the browser (issue 18.2, 18.7): the page's scripts
carry Subresource Integrity under the strict CSP; an uploaded key is refused unless its
private copies are locked and are the same key as the public one; activation pins it
for the account's browser recipient (the form is closed until then); a key change
retires the old key at once and keeps it. Keys are made by the vendored OpenPGP.js."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from formrelay import create_app, services
from formrelay.mail import outbox

from .area import Browser, Clock, add_user, answers, audit, cheap_hashing, totp_at
from .conftest import ENV, post_form, valid_answers
from .keys import TestKey
from .reader import (
    PASSPHRASE,
    gpg_with_locked_key,
    node_key,
    reader_config,
    rnp_with_locked_key,
)

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

BASE = "https://localhost"


@pytest.fixture(scope="module")
def made() -> list[dict[str, str]]:
    return [node_key(), node_key("een andere leeswachtzin")]


@pytest.fixture
def reader_app(tmp_path: Path, keys: dict[str, TestKey],
               monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    cheap_hashing(monkeypatch)

    def build(**form: Any) -> Flask:
        clock = form.pop("clock", None)
        app = create_app(reader_config(tmp_path, keys, BASE, **form), environ=ENV, clock=clock)
        app.testing = True
        return app

    return build


def logged_in(app: Flask, tmp_path: Path, clock: Clock, *links: str) -> Browser:
    add_user(tmp_path, "anna", *(links or ("--recipient", "reader")))
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    return b


def upload(b: Browser, key: dict[str, str], **override: str) -> Any:
    b.get("/clinician/key/")
    fields = {k: key[k] for k in ("fingerprint", "public_key", "locked_key",
                                  "recovery_locked_key")}
    return b.post("/clinician/key/", {**fields, **override})


def submit(app: Flask) -> Any:
    return post_form(app.test_client(), valid_answers("sleutel"), json_answer=True,
                     headers={"Origin": BASE})


def test_key_page_scripts_carry_integrity_under_the_strict_csp(
        reader_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = reader_app(clock=clock)
    b = logged_in(app, tmp_path, clock)
    r = b.get("/clinician/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/clinician/key/")
    r = b.get("/clinician/key/")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = r.get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert len(scripts) == 4  # frame.js, OpenPGP.js, the reader's key.js and recover.js
    for attrs, inline in scripts:
        assert inline.strip() == "", "no inline script"
        src = re.search(r'src="([^"]+)"', attrs).group(1)  # type: ignore[union-attr]
        want = re.search(r'integrity="([^"]+)"', attrs).group(1)  # type: ignore[union-attr]
        resp = b.get(src)
        served = resp.get_data()
        resp.close()
        assert want == "sha384-" + base64.b64encode(hashlib.sha384(served).digest()).decode()
    assert "openpgp-6." in html and "reader/key.js" in html


def test_made_key_is_pinned_only_when_activated_and_opens_with_the_passphrase(
        reader_app: Callable[..., Flask], tmp_path: Path, made: list[dict[str, str]]) -> None:
    clock = Clock()
    app = reader_app(clock=clock)
    b = logged_in(app, tmp_path, clock)
    assert submit(app).status_code == 503  # no key: fail closed
    r = upload(b, made[0])
    assert r.status_code == 200 and r.get_json()["ok"], r.get_data(as_text=True)
    assert submit(app).status_code == 503  # pending until the recovery sheet is confirmed
    r = b.post(r.get_json()["activate"])
    assert r.status_code == 302 and r.headers["Location"].endswith("/clinician/")
    sent = submit(app)
    assert sent.status_code == 200
    store = app.extensions["formrelay"].store
    ciphertext = b"".join(store.submissions.stream(sent.get_json()["reference"]))
    opened = gpg_with_locked_key(made[0]["locked_key"], PASSPHRASE, ciphertext)
    assert answers(opened.stdout)["answers"]["name"] == "Jeroen Brünhilde sleutel"
    assert [a["outcome"] for a in audit(app, "key created")] == ["ok"]
    assert len(audit(app, "key pinned")) == 1
    # `formrelay keys list` and the operator see the pinned key
    keyring_status = app.extensions["formrelay"].relay.sync_keys()["reader"]
    assert keyring_status.usable and keyring_status.fingerprint == made[0]["fingerprint"]


def test_key_change_retires_the_old_key_at_once_and_keeps_it(
        reader_app: Callable[..., Flask], tmp_path: Path, made: list[dict[str, str]]) -> None:
    clock = Clock()
    app = reader_app(clock=clock)
    b = logged_in(app, tmp_path, clock)
    b.post(upload(b, made[0]).get_json()["activate"])
    store = app.extensions["formrelay"].store
    before = submit(app).get_json()["reference"]
    b.post(upload(b, made[1]).get_json()["activate"])
    after = submit(app).get_json()["reference"]
    old, new = made[0]["locked_key"], made[1]["locked_key"]
    first = b"".join(store.submissions.stream(before))
    second = b"".join(store.submissions.stream(after))
    assert gpg_with_locked_key(old, PASSPHRASE, first).returncode == 0
    assert gpg_with_locked_key(old, PASSPHRASE, second).returncode != 0  # not to the old key
    assert gpg_with_locked_key(new, "een andere leeswachtzin", second).returncode == 0
    states = {r["fingerprint"]: r["state"] for r in store.readers.keys(
        store.clinicians.get(username="anna")["id"])}
    assert states == {made[0]["fingerprint"]: "retired", made[1]["fingerprint"]: "active"}
    [changed] = audit(app, "key changed")
    assert made[0]["fingerprint"] in changed["detail"] and "retired" in changed["detail"]


@pytest.mark.parametrize(("case", "why"), [
    ("open", "passphrase copy is not locked"),
    ("open-spare", "recovery copy is not locked"),
    ("other-key", "passphrase copy is another key"),
    ("secret-as-public", "not an armoured public key"),
    ("fingerprint", "fingerprint mismatch"),
    ("claimed", "passphrase copy is another key"),
    ("garbage", "passphrase copy cannot be read"),
])
def test_a_key_that_is_not_locked_or_not_one_key_is_refused(
        reader_app: Callable[..., Flask], tmp_path: Path, made: list[dict[str, str]],
        case: str, why: str) -> None:
    clock = Clock()
    app = reader_app(clock=clock)
    b = logged_in(app, tmp_path, clock)
    key, other = made
    override = {
        "open": {"locked_key": key["open_key"]},
        "open-spare": {"recovery_locked_key": key["open_key"]},
        "other-key": {"locked_key": other["locked_key"]},
        "secret-as-public": {"public_key": key["open_key"]},
        "fingerprint": {"public_key": other["public_key"]},
        "claimed": {"fingerprint": other["fingerprint"]},
        "garbage": {"locked_key": "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n"
                                  "-----END PGP PRIVATE KEY BLOCK-----\n"},
    }[case]
    r = upload(b, key, **override)
    assert r.status_code == 400 and not r.get_json()["ok"]
    assert "kan niet worden gebruikt" in r.get_json()["error"]
    store = app.extensions["formrelay"].store
    assert store.readers.keys(store.clinicians.get(username="anna")["id"]) == []
    [refused] = audit(app, "key created", "refused")
    assert why in refused["detail"], refused["detail"]
    assert submit(app).status_code == 503


def test_an_account_of_a_key_file_recipient_cannot_upload(
        reader_app: Callable[..., Flask], tmp_path: Path, keys: dict[str, TestKey],
        made: list[dict[str, str]]) -> None:
    clock = Clock()
    cfg_app = reader_app(clock=clock)
    del cfg_app
    # the same config with a key-file recipient next to the browser one
    import tomllib

    import tomli_w

    path = tmp_path / "config.toml"
    cfg = tomllib.loads(path.read_text())
    cfg["recipients"]["alice"] = {"email": "alice@praktijk.test",
                                  "key_file": str(keys["alice"].public),
                                  "fingerprint": keys["alice"].fingerprint}
    path.write_text(tomli_w.dumps(cfg))
    app = create_app(path, environ=ENV, clock=clock)
    app.testing = True
    b = logged_in(app, tmp_path, clock, "--form", "intake")
    assert b.get("/clinician/").status_code == 200  # no browser recipient: no key page
    r = upload(b, made[0])
    assert r.status_code == 400 and "sleutelbestand" in r.get_json()["error"]


def test_exported_key_opens_a_submission_in_gpg_and_rnp_with_the_passphrase(
        reader_app: Callable[..., Flask], tmp_path: Path, made: list[dict[str, str]]) -> None:
    clock = Clock()
    app = reader_app(clock=clock)
    b = logged_in(app, tmp_path, clock)
    b.post(upload(b, made[0]).get_json()["activate"])
    ref = submit(app).get_json()["reference"]
    ciphertext = b"".join(app.extensions["formrelay"].store.submissions.stream(ref))
    page = b.get("/clinician/key/").get_data(as_text=True)
    href = re.search(r'href="(/clinician/key/\d+\.asc)"', page).group(1)  # type: ignore[union-attr]
    r = b.get(href)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert "attachment" in r.headers["Content-Disposition"]
    exported = r.get_data(as_text=True)
    assert exported.startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    for tool in (gpg_with_locked_key, rnp_with_locked_key):
        opened = tool(exported, PASSPHRASE, ciphertext)
        assert opened.returncode == 0, (tool, opened.stderr)
        assert answers(opened.stdout)["answers"]["name"] == "Jeroen Brünhilde sleutel"
        assert tool(exported, "niet de leeswachtzin", ciphertext).returncode != 0
    [exported_row] = audit(app, "key exported")
    assert made[0]["fingerprint"] in exported_row["detail"]
    # another account's key is not there for the asking
    other = Browser(app, ip="127.0.0.7")
    add_user(tmp_path, "bram", "--recipient", "reader")
    other.enrol("bram", totp_at(clock))
    assert other.get(href).status_code == 404


def test_recovery_attempts_pause_like_logins_and_a_relock_must_stay_locked(
        reader_app: Callable[..., Flask], tmp_path: Path, made: list[dict[str, str]]) -> None:
    clock = Clock()
    app = reader_app(clock=clock)
    b = logged_in(app, tmp_path, clock)
    b.post(upload(b, made[0]).get_json()["activate"])
    b.get("/clinician/key/")
    copies = b.post("/clinician/key/recovery").get_json()
    [copy] = copies["keys"]
    assert copy["recovery_locked_key"] == made[0]["recovery_locked_key"]
    # an unlocked key sent back as the "new passphrase" copy: refused, nothing changed
    r = b.post(copy["relock"], {"locked_key": made[0]["open_key"]})
    assert r.status_code == 400
    store = app.extensions["formrelay"].store
    [row] = store.readers.keys(store.clinicians.get(username="anna")["id"])
    assert row["locked_key"] == made[0]["locked_key"]
    assert audit(app, "key recovered", "refused")
    for _ in range(4):  # five attempts in all: the login limit
        assert b.post("/clinician/key/recovery").status_code == 200
    r = b.post("/clinician/key/recovery")
    assert r.status_code == 429 and "Wacht 15 minuten" in r.get_json()["error"]
    assert "paused" in audit(app, "key recovered", "refused")[-1]["detail"]
    for _ in range(2):  # 16 minutes later (the session kept alive): attempts allowed again
        clock.advance(minutes=8)
        b.get("/clinician/key/")
    assert b.post("/clinician/key/recovery").status_code == 200


def test_two_readers_of_one_form_each_open_every_submission(
        tmp_path: Path, keys: dict[str, TestKey], monkeypatch: pytest.MonkeyPatch,
        made: list[dict[str, str]]) -> None:
    """Two browser recipients on one form: each submission is encrypted to both keys,
    so one lost key loses nothing; the inbox names both readers."""
    import tomllib

    import tomli_w

    cheap_hashing(monkeypatch)
    clock = Clock()
    path = reader_config(tmp_path, keys, BASE)
    cfg = tomllib.loads(path.read_text())
    cfg["recipients"]["second"] = {"email": "second@praktijk.test", "key_source": "browser"}
    cfg["forms"]["intake"]["recipients"] = ["reader", "second"]
    path.write_text(tomli_w.dumps(cfg))
    app = create_app(path, environ=ENV, clock=clock)
    app.testing = True
    anna = logged_in(app, tmp_path, clock)
    anna.post(upload(anna, made[0]).get_json()["activate"])
    assert submit(app).status_code == 503  # the second reader has no key yet: closed
    add_user(tmp_path, "bram", "--recipient", "second")
    bram = Browser(app, ip="127.0.0.8")
    bram.enrol("bram", totp_at(clock))
    bram.post(upload(bram, made[1]).get_json()["activate"])
    ref = submit(app).get_json()["reference"]
    ciphertext = b"".join(app.extensions["formrelay"].store.submissions.stream(ref))
    for key, passphrase in ((made[0], PASSPHRASE), (made[1], "een andere leeswachtzin")):
        opened = gpg_with_locked_key(key["locked_key"], passphrase, ciphertext)
        assert answers(opened.stdout)["answers"]["name"] == "Jeroen Brünhilde sleutel"
    row = anna.get("/clinician/").get_data(as_text=True)
    assert "anna (reader); bram (second)" in row


def test_operator_is_told_the_new_keys_fingerprint_and_nothing_else(
        reader_app: Callable[..., Flask], tmp_path: Path, made: list[dict[str, str]]) -> None:
    clock = Clock()
    app = reader_app(clock=clock, server={"base_url": BASE,
                                          "operator_email": "beheer@praktijk.test"},
                     smtp={"from_address": "forms@praktijk.test",
                           "sink_dir": str(tmp_path / "mail")})
    b = logged_in(app, tmp_path, clock)
    b.post(upload(b, made[0]).get_json()["activate"])
    store = app.extensions["formrelay"].store
    [mail] = [m for m in store.conn.execute("SELECT kind, recipients, payload FROM outbox")]
    assert mail["kind"] == "operator" and "beheer@praktijk.test" in mail["recipients"]
    body = bytes(mail["payload"]).decode()
    grouped = " ".join(made[0]["fingerprint"][i:i + 4] for i in range(0, 40, 4))
    assert grouped in body and "anna" in body and "reader" in body
    assert "PRIVATE KEY" not in body and "PUBLIC KEY" not in body


def test_one_browser_recipient_reads_with_one_account_s_key(
        reader_app: Callable[..., Flask], tmp_path: Path, made: list[dict[str, str]]) -> None:
    """A second account tied to the same browser recipient cannot pin its key over the
    first one's (that would silently take the first reader's new submissions)."""
    clock = Clock()
    app = reader_app(clock=clock)
    anna = logged_in(app, tmp_path, clock)
    anna.post(upload(anna, made[0]).get_json()["activate"])
    add_user(tmp_path, "bram", "--recipient", "reader")
    bram = Browser(app, ip="127.0.0.8")
    bram.enrol("bram", totp_at(clock))
    r = bram.post(upload(bram, made[1]).get_json()["activate"])
    assert r.status_code == 302 and r.headers["Location"].endswith("/clinician/key/")
    assert "leest al met de sleutel van anna" in bram.get("/clinician/key/").get_data(
        as_text=True)
    status = app.extensions["formrelay"].relay.sync_keys()["reader"]
    assert status.fingerprint == made[0]["fingerprint"]
    assert audit(app, "key pinned")[0]["actor"] == "user:anna"
    assert len(audit(app, "key pinned")) == 1


def test_a_browser_made_key_also_reads_e_mail_delivery(
        reader_app: Callable[..., Flask], tmp_path: Path, made: list[dict[str, str]]) -> None:
    """The same key, exported to a mail client: a form switched to delivery = "email"
    mails PGP/MIME that the exported key and its passphrase open."""
    clock = Clock()
    app = reader_app(clock=clock, delivery="email",
                     smtp={"from_address": "forms@praktijk.test",
                           "sink_dir": str(tmp_path / "mail")})
    b = logged_in(app, tmp_path, clock)
    b.post(upload(b, made[0]).get_json()["activate"])
    assert submit(app).status_code == 200
    relay = app.extensions["formrelay"]
    assert outbox.deliver_pending(relay.settings, relay.store,
                                  kinds=services.mail_kinds()).sent == 1
    [eml] = list((tmp_path / "mail").glob("*.eml"))
    mail = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert mail["To"] == "reader@praktijk.test"
    encrypted = next(p for p in mail.walk()
                     if p.get_content_type() == "application/octet-stream")
    opened = gpg_with_locked_key(made[0]["locked_key"], PASSPHRASE,
                                 encrypted.get_payload(decode=True))
    assert answers(opened.stdout)["answers"]["name"] == "Jeroen Brünhilde sleutel"
