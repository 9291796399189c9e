"""The readers a practice owner chose for a form reach the rest of the conversation
(issues 18.6 and 19): an upload link made after the change encrypts the patient's
documents to every reader of the form, shows them to each in the clinician area and
tells each by mail; a reply key made with a later submission lets each reader answer
the patient. A reader taken off gets neither for what comes after, and keeps what was
made while they read. Rows naming a recipient a reload removed fall back as the relay
does. Keys are made by the vendored OpenPGP.js; downloads are decrypted by gpg."""

from __future__ import annotations

import json
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from flask import Flask

from formrelay import create_app
from formrelay.mail import notify
from formrelay.uploads.links import UploadLinks

from .area import Browser, Clock, audit, cheap_hashing
from .conftest import ENV, post_form, valid_answers
from .helpers.form_readers import BASE, OTHER, change, member, practice, with_key
from .helpers.replies import read
from .helpers.uploads import encrypt_binary, links_of, send_file
from .keys import TestKey
from .reader import PASSPHRASE, gpg_with_locked_key, node_key

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


@pytest.fixture(scope="module")
def made() -> list[dict[str, str]]:
    return [node_key(), node_key(OTHER)]


def setup(tmp_path: Path, keys: dict[str, TestKey], made: list[dict[str, str]],
          monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Flask, Browser, Browser]:
    """anna, the owner, reads the form; bram has a key and reads no form yet."""
    cheap_hashing(monkeypatch)
    clock = Clock()
    path = practice(tmp_path, keys, replies=True)
    app = create_app(path, environ=ENV, clock=clock)
    app.testing = True
    anna = member(app, tmp_path, clock, "anna", "reader", "127.0.0.1")
    store = app.extensions["formrelay"].store
    store.readers.set_role(store.clinicians.get(username="anna")["id"], "owner")
    with_key(anna, made[0])
    bram = member(app, tmp_path, clock, "bram", "second", "127.0.0.8")
    with_key(bram, made[1])
    return path, app, anna, bram


def post(app: Flask, mark: str) -> tuple[str, str]:
    """A submission with the patient's address: its reference and reply code."""
    r = post_form(app.test_client(), {**valid_answers(mark), "email": "zoe@example.nl"},
                  headers={"Origin": BASE})
    html = r.get_data(as_text=True)
    ref = re.search(r'id="reference">([^<]+)<', html)
    code = re.search(r'id="reply-code">([^<]+)<', html)
    assert r.status_code == 200 and ref and code, html
    return ref.group(1), code.group(1)


def documents(app: Flask, reference: str = "", practice: str = "") -> tuple[str, bytes, str]:
    """A link for `reference` (else for a new patient of `practice`), one document sent
    through it as the upload page sends it, the session closed: (link id, the
    document's plaintext, the reference)."""
    s = app.extensions["formrelay.live"].current  # the configuration as reloaded
    links = UploadLinks(s.settings, s.store, s.clock)
    made_ = links.for_submission(reference, "zoe@example.nl", "nl", actor="operator") \
        if reference else links.for_practice(practice, "zoe@example.nl", "nl", actor="operator")
    token = made_.link.rsplit("/u/", 1)[1]
    link = links.open(token)
    data = b"%PDF-1.4 letter of the dermatologist " + secrets.token_hex(8).encode()
    client = app.test_client()
    send_file(client, token, encrypt_binary(app, data, list(link.recipients)))
    assert client.post(f"/u/{token}/done").status_code == 200
    return link.id, data, made_.reference


def file_of(app: Flask, link_id: str) -> str:
    [row] = app.extensions["formrelay"].store.uploads.files_of(link_id=link_id)
    return str(row["id"])


def download(b: Browser, file_id: str) -> Any:
    return b.get(f"/clinician/uploads/{file_id}")


def noticed(app: Flask, reference: str) -> list[str]:
    """Who the content-free notice of new documents for `reference` is queued to."""
    rows = app.extensions["formrelay"].store.conn.execute(
        "SELECT recipients FROM outbox WHERE kind = 'upload_notice' AND reference = ?",
        (reference,)).fetchall()
    return sorted(a for r in rows for a in json.loads(r["recipients"]))


def opens(ciphertext: bytes, key: dict[str, str], passphrase: str, data: bytes) -> bool:
    done = gpg_with_locked_key(key["locked_key"], passphrase, ciphertext)
    return done.returncode == 0 and done.stdout == data


def can_read(inbox: str, reference: str) -> str:
    m = re.search(rf'id="row-{reference}".*?<td class="readers"[^>]*>([^<]*)<', inbox, re.S)
    assert m, inbox
    return m.group(1)


def answer(b: Browser, reference: str, text: str) -> int:
    """The answer page and the post without JavaScript: the status of the post (302
    done; 404 this clinician may not answer it)."""
    if b.get(f"/clinician/answer/{reference}").status_code != 200:
        return 404
    return int(b.post(f"/clinician/answer/{reference}", {"answer": text}).status_code)


def test_a_reader_added_to_a_form_gets_its_later_documents_and_answers_and_loses_them_when_taken_off(  # noqa: E501
        tmp_path: Path, keys: dict[str, TestKey], made: list[dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, app, anna, bram = setup(tmp_path, keys, made, monkeypatch)
    before, before_code = post(app, "voor")
    early, early_data, _ = documents(app, before)

    assert change(anna, "add", "second")[0] == 200
    after, after_code = post(app, "na")
    link, data, _ = documents(app, after)
    row = app.extensions["formrelay"].store.uploads.link(link)
    assert row["recipient_ids"] == ["reader", "second"]
    assert row["recipients"] == [made[0]["fingerprint"], made[1]["fingerprint"]]
    # bram sees the document in his list, downloads it and his key opens it; the notice
    # of new documents goes to him too, the earlier link's only to anna
    page = bram.get("/clinician/uploads/").get_data(as_text=True)
    fid = file_of(app, link)
    assert fid in page and file_of(app, early) not in page
    got = download(bram, fid)
    assert got.status_code == 200 and opens(got.data, made[1], OTHER, data)
    assert opens(download(anna, fid).data, made[0], PASSPHRASE, data)
    assert noticed(app, after) == ["reader@praktijk.test", "second@praktijk.test"]
    assert noticed(app, before) == ["reader@praktijk.test"]
    assert download(bram, file_of(app, early)).status_code == 404
    # the inbox says who can read each one: the readers it was encrypted to
    inbox = anna.get("/clinician/").get_data(as_text=True)
    assert can_read(inbox, before) == "anna (reader)"
    assert can_read(inbox, after) == "anna (reader); bram (second)"
    # a new patient of the practice: a link to everyone who reads one of its forms
    new_link, new_data, new_ref = documents(app, practice="default")
    assert app.extensions["formrelay"].store.uploads.link(new_link)["recipient_ids"] == [
        "reader", "second"]
    assert opens(download(bram, file_of(app, new_link)).data, made[1], OTHER, new_data)
    assert noticed(app, new_ref) == ["reader@praktijk.test", "second@praktijk.test"]
    # bram answers the question of the later submission, and the patient reads it; the
    # one sent before he read the form is not his to answer
    assert answer(bram, before, "Niet mijn vraag.") == 404
    assert answer(bram, after, "Ja, rustig opbouwen.") == 302
    r = read(app.test_client(), after, after_code)
    assert r.status_code == 200 and "Ja, rustig opbouwen." in r.get_data(as_text=True)
    assert answer(anna, before, "Graag gedaan.") == 302
    assert "Graag gedaan." in read(app.test_client(), before, before_code).get_data(as_text=True)

    # bram taken off: what comes after is not his, what came while he read still is
    assert change(anna, "remove", "second")[0] == 200
    later, _ = post(app, "later")
    gone, gone_data, _ = documents(app, later)
    fid_gone = file_of(app, gone)
    assert fid_gone not in bram.get("/clinician/uploads/").get_data(as_text=True)
    refused = download(bram, fid_gone)
    assert refused.status_code == 404 and gone_data not in refused.data
    assert audit(app, "upload downloaded", "refused")[-1]["actor"] == "user:bram"
    ciphertext = b"".join(app.extensions["formrelay"].store.uploads.chunks(fid_gone))
    assert not opens(ciphertext, made[1], OTHER, gone_data)
    assert opens(ciphertext, made[0], PASSPHRASE, gone_data)
    assert noticed(app, later) == ["reader@praktijk.test"]
    assert answer(bram, later, "Toch ik?") == 404
    assert answer(anna, later, "Nee, anna.") == 302
    _, _, other_ref = documents(app, practice="default")
    assert noticed(app, other_ref) == ["reader@praktijk.test"]
    assert download(bram, fid).status_code == 200  # recorded when he read the form


def test_a_batched_notice_goes_to_the_readers_the_owner_chose(
        tmp_path: Path, keys: dict[str, TestKey], made: list[dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    path = practice(tmp_path, keys, notify_batch_minutes=10)
    app = create_app(path, environ=ENV, clock=clock)
    app.testing = True
    anna = member(app, tmp_path, clock, "anna", "reader", "127.0.0.1")
    s = app.extensions["formrelay"]
    s.store.readers.set_role(s.store.clinicians.get(username="anna")["id"], "owner")
    with_key(anna, made[0])
    bram = member(app, tmp_path, clock, "bram", "second", "127.0.0.8")
    with_key(bram, made[1])

    def batch(mark: str) -> list[str]:
        r = post_form(app.test_client(), valid_answers(mark), headers={"Origin": BASE})
        ref = re.search(r'id="reference">([^<]+)<', r.get_data(as_text=True))
        assert r.status_code == 200 and ref
        clock.advance(minutes=11)
        assert notify.flush(s.settings, s.store, clock()) == 1
        [row] = s.store.conn.execute("SELECT recipients FROM outbox WHERE kind = "
                                     "'held-notice' AND reference = ?",
                                     (ref.group(1),)).fetchall()
        return sorted(json.loads(row["recipients"]))

    assert change(anna, "add", "second")[0] == 200
    assert batch("samen") == ["reader@praktijk.test", "second@praktijk.test"]
    assert change(anna, "remove", "reader")[0] == 200
    assert batch("alleen bram") == ["second@praktijk.test"]


def test_owner_rows_naming_a_recipient_a_reload_removed_fall_back_as_the_relay_does(
        tmp_path: Path, keys: dict[str, TestKey], made: list[dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, app, anna, bram = setup(tmp_path, keys, made, monkeypatch)
    # bram reads instead of anna: the owner's rows are "add second" and "remove reader"
    assert change(anna, "add", "second")[0] == 200
    assert change(anna, "remove", "reader")[0] == 200
    ref, _ = post(app, "alleen bram")
    link, _, _ = documents(app, ref)
    waiting = links_of(app).for_submission(ref, "zoe@example.nl", "nl", actor="operator")
    store = app.extensions["formrelay"].store
    assert store.uploads.link(link)["recipient_ids"] == ["second"]
    assert store.replies.get(ref)["recipient_ids"] == ["second"]
    # a reload removes bram's recipient: its row has no effect, and with no reader left
    # the configuration's recipients read, for links and answers as for submissions
    cfg = tomllib.loads(path.read_text())
    del cfg["recipients"]["second"]
    path.write_text(tomli_w.dumps(cfg))
    app.extensions["formrelay.live"].ask()
    ref2, _ = post(app, "na herladen")
    assert json.loads(store.submissions.get(ref2)["recipients"]) == ["reader"]
    link2, data2, _ = documents(app, ref2)
    row = store.uploads.link(link2)
    assert row["recipient_ids"] == ["reader"] and row["recipients"] == [made[0]["fingerprint"]]
    assert store.replies.get(ref2)["recipient_ids"] == ["reader"]
    assert store.replies.get(ref2)["recipients"] == [made[0]["fingerprint"]]
    assert opens(download(anna, file_of(app, link2)).data, made[0], PASSPHRASE, data2)
    assert answer(anna, ref2, "Anna antwoordt.") == 302
    assert download(bram, file_of(app, link2)).status_code == 404
    assert answer(bram, ref2, "Bram?") == 404
    # a link made for bram's key before the reload: its page fails closed (no key to
    # encrypt to is offered), rather than encrypt to a recipient no longer configured
    page = app.test_client().get(waiting.link.removeprefix(BASE))
    assert page.status_code == 503, page.status_code
    assert "BEGIN PGP PUBLIC KEY" not in page.get_data(as_text=True)
