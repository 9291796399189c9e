"""A secure answer from the practice (issue 19, part 3): reply code on the thank-you
page, the clinician's answer encrypted to the patient's reply key, a content-free mail,
the answer read on /r/ with reference and code; five wrong codes lock it; expiry
deletes it; a stolen database (and data folder) does not open it."""

from __future__ import annotations

import re
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from formrelay.crypto.packets import encryption_packet
from formrelay.replies import letter, secret

from .area import Browser, Clock, add_user, audit, cheap_hashing, totp_at
from .canary import leaks, start_clock
from .conftest import ON_POSTGRES, canary, post_form
from .helpers.copies import smtp_cfg
from .helpers.replies import FIELDS, read, send_form, write_answer
from .helpers.uploads import deliver
from .smtpd import TlsFiles, smtp_server


def test_answer_reaches_only_the_code(make_app: Any, tls: TlsFiles, tmp_path: Path,
                                      monkeypatch: Any, logs: Any) -> None:
    cheap_hashing(monkeypatch)
    since = start_clock()
    mark = canary()
    clock = Clock()
    with smtp_server(tls) as (smtp, port):
        app = make_app(fields=FIELDS, replies=True, smtp=smtp_cfg(tls, port), clock=clock)
        client = app.test_client()
        reference, code = send_form(client)
        assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}", code)
        # before the answer: the code is right, but there is nothing to read yet
        assert "not answered yet" in read(client, reference, code).get_data(as_text=True)
        add_user(tmp_path, "anna", "--recipient", "alice")
        b = Browser(app)
        b.enrol("anna", totp_at(clock))
        write_answer(b, reference, f"U mag rustig sporten. {mark}\nGroet, dr. Jansen")
        # one answer only
        assert b.get(f"/clinician/answer/{reference}").status_code == 404
        deliver(app)
        to_patient = [m for m in smtp.messages if m.rcpt_tos == ["zoe@example.nl"]]
        all_mail = [m.data for m in smtp.messages]
    assert len(to_patient) == 1 and to_patient[0].tls
    body = to_patient[0].parsed().get_body(("plain",)).get_content()
    assert f"/r/?reference={reference}" in body and "Praktijk Test" in body
    assert code not in body and code.replace("-", "") not in body
    assert not leaks(mark, blobs=all_mail)
    shown = read(client, reference.lower(), code.lower().replace("-", " "))
    html = shown.get_data(as_text=True)
    assert shown.status_code == 200 and mark in html and "dr. Jansen" in html
    data_dir = app.extensions["formrelay"].settings.data_dir
    texts = [r.getMessage() for r in logs.records if not r.name.startswith("mail.log")]
    assert not leaks(mark, roots=[data_dir, tmp_path], texts=texts, since=since)
    assert not leaks(code.replace("-", ""), roots=[data_dir], texts=texts, since=since)
    for action in ("reply code issued", "answer written", "answer mail sent", "answer opened"):
        assert audit(app, action), action


def test_five_wrong_codes_lock_and_unknown_references_learn_nothing(
        make_app: Any, tmp_path: Path, monkeypatch: Any) -> None:
    app = make_app(fields=FIELDS, replies=True)
    client = app.test_client()
    reference, code = send_form(client)
    unknown = read(client, "FR-AAAA-AAAA", code)
    assert unknown.status_code == 404
    nothing = unknown.get_data(as_text=True)
    assert "No answer can be shown" in nothing
    for left in (4, 3, 2, 1):
        r = read(client, reference, "AAAA-AAAA-AAAA")
        assert r.status_code == 403 and f"Tries left before the answer is locked: {left}" in \
            r.get_data(as_text=True)
    r = read(client, reference, "BBBB-BBBB-BBBB")
    assert r.status_code == 403 and "deleted to protect it" in r.get_data(as_text=True)
    # now even the right code opens nothing, and looks like an unknown reference
    r = read(client, reference, code)
    assert r.status_code == 404 and "No answer can be shown" in r.get_data(as_text=True)
    row = app.extensions["formrelay"].store.replies.get(reference)
    assert row["state"] == "locked" and row["wrapped_key"] is None and row["answer"] is None
    assert len(audit(app, "answer wrong code", "refused")) == 5
    assert audit(app, "answer locked", "refused")


def test_answer_expires_and_is_deleted(make_app: Any, tmp_path: Path,
                                       monkeypatch: Any) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock, server={"reply_expiry_days": 30})
    client = app.test_client()
    reference, code = send_form(client, email="")
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    write_answer(b, reference, "Tot ziens")
    assert "Tot ziens" in read(client, reference, code).get_data(as_text=True)
    clock.now += timedelta(days=30)
    r = read(client, reference, code)
    assert r.status_code == 404
    row = app.extensions["formrelay"].store.replies.get(reference)
    assert row["state"] == "expired" and row["answer"] is None and row["wrapped_key"] is None
    assert audit(app, "answer expired")


@pytest.mark.skipif(ON_POSTGRES, reason="copies the SQLite file")
def test_stolen_database_does_not_open_the_answer(make_app: Any, tmp_path: Path,
                                                  monkeypatch: Any) -> None:
    """With the database and the data folder, but not FORMRELAY_SECRET_KEY: even the
    right code does not unwrap the key; without the code the server's secret does not
    either; and nothing in the files holds the answer in clear."""
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock)
    client = app.test_client()
    reference, code = send_form(client, email="")
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    mark = canary()
    write_answer(b, reference, f"Vertrouwelijk {mark}")
    settings = app.extensions["formrelay"].settings
    app.extensions["formrelay"].store.close()
    stolen = tmp_path / "stolen"
    shutil.copytree(settings.data_dir, stolen)
    assert not leaks(mark, roots=[stolen])
    db = sqlite3.connect(stolen / "formrelay.db")
    salt, wrapped, answer = db.execute("SELECT salt, wrapped_key, answer FROM replies WHERE "
                                       "reference = ?", (reference,)).fetchone()
    db.close()
    assert encryption_packet(bytes(answer)) == "SEIPD v1"  # an OpenPGP message
    for server_secret, tried in (("a guessed secret " + "x" * 32, code),
                                 (settings.secret_key, "AAAA-AAAA-AAAA")):
        with pytest.raises(InvalidTag):
            secret.unwrap(secret.wrap_key(tried, salt, server_secret, reference), wrapped,
                          reference)
    # the right pair opens it: the test can fail
    private = secret.unwrap(secret.wrap_key(code, salt, settings.secret_key, reference),
                            wrapped, reference)
    assert mark in letter.open_letter(private, answer).text


def test_patient_replies_once_delivered_like_a_new_submission(
        make_app: Any, tmp_path: Path, monkeypatch: Any, keys: dict[str, Any]) -> None:
    from .keys import gpg_decrypt

    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock)
    client = app.test_client()
    reference, code = send_form(client, email="")
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    write_answer(b, reference, "Kunt u een foto sturen?")
    page = read(client, reference, code).get_data(as_text=True)
    assert 'action="/r/reply' in page
    mark = canary()
    r = client.post("/r/reply?lang=en", data={"reference": reference, "code": code,
                                              "reply": f"Ja, morgen. {mark}"})
    html = r.get_data(as_text=True)
    assert r.status_code == 200, html
    new = re.search(r"under reference (FR-[A-Z0-9-]+)", html)
    assert new and new.group(1) != reference
    store = app.extensions["formrelay"].store
    row = store.submissions.get(new.group(1))
    assert row["form_id"] == "intake" and row["status"] == "held"  # like a new submission
    plain = gpg_decrypt(keys["alice"], store.submissions.ciphertext(new.group(1))).decode()
    assert mark in plain and reference in plain
    # once only; a wrong code counts as a wrong code
    again = client.post("/r/reply?lang=en", data={"reference": reference, "code": code,
                                                  "reply": "nog iets"})
    assert again.status_code == 409 and "already replied" in again.get_data(as_text=True)
    wrong = client.post("/r/reply?lang=en", data={"reference": reference,
                                                  "code": "AAAA-AAAA-AAAA", "reply": "x"})
    assert wrong.status_code == 403
    assert 'action="/r/reply' not in read(client, reference, code).get_data(as_text=True)
    assert audit(app, "patient replied")


def busy_hashing(monkeypatch: Any) -> None:
    """Every hashing slot of this worker stays taken (a flood of posts or code checks)."""
    from contextlib import contextmanager

    from formrelay.clinician import hashing

    @contextmanager
    def taken() -> Any:
        raise hashing.Busy
        yield

    monkeypatch.setattr(hashing, "slot", taken)


def test_no_reply_code_when_hashing_is_busy_but_the_form_is_received(
        make_app: Any, monkeypatch: Any) -> None:
    app = make_app(fields=FIELDS, replies=True)
    busy_hashing(monkeypatch)
    r = post_form(app.test_client(), {"name": "Zoë", "email": "", "question": "?"},
                  query="?lang=en")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="reply-unavailable"' in html
    assert 'id="reply-code"' not in html
    ref = re.search(r'id="reference">([^<]+)<', html)
    assert ref and app.extensions["formrelay"].store.submissions.get(ref.group(1))
    assert app.extensions["formrelay"].store.replies.get(ref.group(1)) is None


def test_a_reply_key_that_cannot_be_stored_stores_no_submission_either(
        make_app: Any, monkeypatch: Any) -> None:
    """The reply key is stored in the submission's transaction: the code printed in the
    copy and shown on the page always opens something."""
    from formrelay.store import StoreNotWritable
    from formrelay.store.replies import Replies

    app = make_app(fields=FIELDS, replies=True)
    cheap_hashing(monkeypatch)

    def full(self: Any, row: Any) -> None:  # a full disk cannot be made here
        raise StoreNotWritable("disk full")

    monkeypatch.setattr(Replies, "add", full)
    r = post_form(app.test_client(), {"name": "Zoë", "email": "", "question": "?"},
                  query="?lang=en")
    html = r.get_data(as_text=True)
    assert r.status_code == 503 and 'id="reference"' not in html, html
    assert 'id="reply-code"' not in html
    s = app.extensions["formrelay"]
    assert s.store.conn.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 0
    assert s.store.conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 0


def test_copy_pdf_prints_the_reply_code_that_opens_the_answer(
        make_app: Any, monkeypatch: Any) -> None:
    """The code exists before the copy is made (the reply step runs before the copy's);
    when the relay draws a new reference (two collided), the PDF, the page and the key
    all follow the reference as stored."""
    from formrelay.intake import relay as relay_module

    from .helpers.copies import pdf_text, pick, thanks

    cheap_hashing(monkeypatch)
    app = make_app(fields=FIELDS, replies=True, patient_copy=True)
    client = app.test_client()
    drawn = iter(["FR-AAAA-BBBB", "FR-AAAA-BBBB", "FR-CCCC-DDDD"])
    monkeypatch.setattr(relay_module, "new_reference", lambda: next(drawn))
    for expected in ("FR-AAAA-BBBB", "FR-CCCC-DDDD"):  # the second collides once
        r = post_form(client, {"name": "Zoë", "email": "zoe@example.nl",
                               "question": "Mag ik sporten?", "_copy": "1"},
                      query="?lang=en")
        page = thanks(r)
        code = re.search(r'id="reply-code">([^<]+)<', page["html"])
        assert code and page["reference"] == expected, page["html"]
        pdf = pick(client, page["url"], page["key"], page["code"], page["grant"])
        assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
        text = pdf_text(pdf.data)
        # the PDF is in the form's language (Dutch)
        assert f"Referentie: {expected}" in text and f"Antwoordcode: {code.group(1)}" in \
            text, text
        assert "opent hij het antwoord van de praktijk" in text
        assert "not answered yet" in read(client, expected, code.group(1)).get_data(
            as_text=True)


def test_copy_pdf_without_replies_or_without_a_code_prints_none(
        make_app: Any, monkeypatch: Any) -> None:
    from .helpers.copies import pdf_text, pick, thanks

    for replies in (False, True):
        app = make_app(fields=FIELDS, replies=replies, patient_copy=True)
        if replies:
            busy_hashing(monkeypatch)
        r = post_form(app.test_client(), {"name": "Zoë", "email": "zoe@example.nl",
                                          "question": "?", "_copy": "1"}, query="?lang=en")
        page = thanks(r)
        pdf = pick(app.test_client(), page["url"], page["key"], page["code"], page["grant"])
        assert pdf.status_code == 200
        text = pdf_text(pdf.data)
        assert page["reference"] in text and "Antwoordcode" not in text, text


def test_inbox_row_links_to_its_documents_and_the_answer(
        make_app: Any, tmp_path: Path, keys: dict[str, Any], monkeypatch: Any) -> None:
    from formrelay.uploads.links import UploadLinks

    from .helpers.uploads import encrypt_binary, send_file

    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock)
    client = app.test_client()
    with_docs, _ = send_form(client)
    without, _ = send_form(client, email="")
    s = app.extensions["formrelay"]
    made = UploadLinks(s.settings, s.store, s.clock).for_submission(
        with_docs, "zoe@example.nl", "nl", actor="operator")
    token = made.link.rsplit("/u/", 1)[1]
    for size in (1000, 2000):
        send_file(client, token, encrypt_binary(app, b"%PDF-1.7\n" + b"x" * size,
                                                [keys["alice"].fingerprint]))
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))

    def more(reference: str) -> str:
        page = b.get("/clinician/").get_data(as_text=True)
        found = re.search(rf'<span class="more" id="more-{reference}">(.*?)</span>', page,
                          re.S)
        assert found, page
        return found.group(1)

    row = more(with_docs)
    assert f'href="/clinician/uploads/?reference={with_docs}"' in row and "2 documenten" in row
    assert f'href="/clinician/answer/{with_docs}"' in row
    # no documents: only the way to ask for them, and the answer
    row = more(without)
    assert "document" not in row.replace("Om documenten vragen", "")
    assert f'href="/clinician/answer/{without}"' in row
    # the documents link shows that submission's documents, and asks for more for it
    page = b.get(f"/clinician/uploads/?reference={with_docs}").get_data(as_text=True)
    assert page.count('<tr id="upload-') == 2 and f'value="{with_docs}"' in page
    assert b.get(f"/clinician/uploads/?reference={without}").get_data(
        as_text=True).count('<tr id="upload-') == 0
    # once answered, the row no longer offers it
    write_answer(b, with_docs, "U mag sporten.")
    assert "/clinician/answer/" not in more(with_docs)


def test_inbox_offers_no_answer_where_the_form_gives_no_reply_code(
        make_app: Any, tmp_path: Path, monkeypatch: Any) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, clock=clock)
    r = post_form(app.test_client(), {"name": "Zoë", "email": "zoe@example.nl",
                                      "question": "Mag ik sporten?"})
    reference = re.search(r'id="reference">([^<]+)<', r.get_data(as_text=True))
    assert reference
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    page = b.get("/clinician/").get_data(as_text=True)
    assert f'id="more-{reference.group(1)}"' in page and "/clinician/answer/" not in page
    # and a forged answer link is refused
    assert b.get(f"/clinician/answer/{reference.group(1)}").status_code == 404


def test_json_answer_carries_the_reply_code_once(make_app: Any, monkeypatch: Any) -> None:
    app = make_app(fields=FIELDS, replies=True)
    client = app.test_client()
    r = post_form(client, {"name": "Zoë", "email": "", "question": "Mag ik sporten?"},
                  json_answer=True)
    body = r.get_json()
    assert r.status_code == 200 and body["ok"] is True, body
    code = body["reply_code"]
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}", code)
    # the code opens the reference's (empty, for now) answer; another code does not
    assert "not answered yet" in read(client, body["reference"], code).get_data(as_text=True)
    assert read(client, body["reference"], "AAAA-AAAA-AAAA").status_code == 403
    # a form without replies has no such key
    plain = make_app(fields=FIELDS)
    r = post_form(plain.test_client(), {"name": "Zoë", "question": "?"}, json_answer=True)
    assert r.status_code == 200 and "reply_code" not in r.get_json()


def test_json_answer_says_null_when_no_code_could_be_made(make_app: Any,
                                                          monkeypatch: Any) -> None:
    app = make_app(fields=FIELDS, replies=True)
    busy_hashing(monkeypatch)
    r = post_form(app.test_client(), {"name": "Zoë", "question": "?"}, json_answer=True)
    body = r.get_json()
    assert r.status_code == 200 and body["ok"] is True and body["reply_code"] is None
    assert app.extensions["formrelay"].store.submissions.get(body["reference"])
    assert app.extensions["formrelay"].store.replies.get(body["reference"]) is None
