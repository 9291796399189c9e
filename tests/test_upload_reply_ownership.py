"""Upload links and answers belong to the practice their submission was stored for, as
recorded then: after zuid's practice file is removed and its form id b-hold reused by
noord (the attack of tests/test_ownership.py), noord's clinician cannot list, download,
ask documents for or answer zuid's submission, and zuid's patient cannot be sent a link
that would encrypt their documents to noord's key."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from formrelay.uploads.links import UploadLinks

from .area import Browser, Clock, add_user, cheap_hashing, totp_at
from .conftest import ORIGIN, encode_multipart, post_form, write_config
from .helpers.ownership import FIELDS, make, practice_file, reload, two_practice_files
from .keys import TestKey, gpg_decrypt

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

EXTRA = {"upload_link": True, "replies": True}


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def b_hold(keys: dict[str, TestKey], which: str, recipient: str) -> dict[str, Any]:
    return practice_file(keys, which, **{"b-hold": {
        "title": f"Intake {which}", "recipients": [recipient], "delivery": "hold",
        "fields": FIELDS, **EXTRA}})


def test_a_reused_form_id_hands_over_no_uploads_links_or_answers(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    clock = Clock()
    config = two_practice_files(tmp_path, keys)
    write_config(tmp_path / "practices" / "zuid.toml", b_hold(keys, "zuid", "dr-b"))
    app = make(config, clock)
    add_user(tmp_path, "alice", "--practice", "noord", "--recipient", "dr-a")
    client = app.test_client()
    thanks = post_form(client, {"name": "Zuid patiënt", "complaint": "rug"},
                       form_id="b-hold").get_data(as_text=True)
    theirs = re.search(r'id="reference">([^<]+)<', thanks).group(1)  # type: ignore[union-attr]
    offer = re.search(r'name="offer" value="([^"]+)"', thanks).group(1)  # type: ignore[union-attr]
    # zuid's patient sends a document through a link zuid's practice made
    s = app.extensions["formrelay"]
    made = UploadLinks(s.settings, s.store, s.clock).for_submission(
        theirs, "zuid@example.nl", "nl", actor="user:bea")
    token = made.link.rsplit("/u/", 1)[1]
    sent = client.post(f"/u/{token}", data=encode_multipart(
        {"files": [(io.BytesIO(b"%PDF-1.4 uitslag"), "uitslag.pdf", "application/pdf")]}),
        content_type="multipart/form-data; boundary=frtestboundary")
    assert sent.status_code == 200, sent.get_data(as_text=True)
    file_id = s.store.uploads.files_of(practice="zuid")[0]["id"]

    # the attack: zuid's file removed, b-hold reused by noord for dr-a
    (tmp_path / "practices" / "zuid.toml").unlink()
    write_config(tmp_path / "practices" / "noord.toml", b_hold(keys, "noord", "dr-a"))
    services = reload(app)
    assert services.settings.forms["b-hold"].practice == "noord"
    store = services.store
    b = Browser(app, ip="192.0.2.10")
    b.enrol("alice", totp_at(clock))

    assert theirs not in b.get("/clinician/uploads/").get_data(as_text=True)
    assert b.get(f"/clinician/uploads/{file_id}").status_code == 404
    assert b.get(f"/clinician/answer/{theirs}").status_code == 404
    assert b.post(f"/clinician/answer/{theirs}", {"answer": "Hallo"}).status_code == 404
    asked = b.post("/clinician/uploads/invite", {"reference": theirs,
                                                 "email": "alice@example.nl"})
    assert asked.status_code == 400, asked.status_code
    # zuid's patient, still on the thank-you page, asks for a link: none to noord's key
    r = client.post("/u/ask", data={"offer": offer, "email": "zuid@example.nl"},
                    headers={"Origin": ORIGIN})
    assert r.status_code == 404, r.get_data(as_text=True)
    links = store.uploads.links_of(theirs)
    assert [(lk["practice"], lk["asked_by"]) for lk in links] == [("zuid", "user:bea")]
    assert store.replies.get(theirs)["answer"] is None  # type: ignore[index]


def test_a_patients_reply_goes_to_the_practice_that_answered_or_nowhere(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """zuid answers; then b-hold is reused by noord. The patient's reply to zuid's
    answer must not be delivered to noord's recipients (as a new b-hold submission)."""
    clock = Clock()
    config = two_practice_files(tmp_path, keys)
    write_config(tmp_path / "practices" / "zuid.toml", b_hold(keys, "zuid", "dr-b"))
    app = make(config, clock)
    add_user(tmp_path, "bea", "--practice", "zuid", "--recipient", "dr-b")
    client = app.test_client()
    thanks = post_form(client, {"name": "Zuid patiënt", "complaint": "rug"},
                       form_id="b-hold").get_data(as_text=True)
    theirs = re.search(r'id="reference">([^<]+)<', thanks).group(1)  # type: ignore[union-attr]
    code = re.search(r'id="reply-code">([^<]+)<', thanks).group(1)  # type: ignore[union-attr]
    z = Browser(app, ip="192.0.2.20")
    z.enrol("bea", totp_at(clock))
    assert z.post(f"/clinician/answer/{theirs}", {"answer": "Rust houden."}).status_code == 302

    (tmp_path / "practices" / "zuid.toml").unlink()
    write_config(tmp_path / "practices" / "noord.toml", b_hold(keys, "noord", "dr-a"))
    store = reload(app).store
    before = {r["reference"] for r in store.submissions.rows(status="held", practice="noord")}
    read = client.post("/r/?lang=en", data={"reference": theirs, "code": code},
                       headers={"Origin": ORIGIN})
    assert "Rust houden." in read.get_data(as_text=True)  # the answer is still theirs
    r = client.post("/r/reply?lang=en", data={"reference": theirs, "code": code,
                                              "reply": "Mijn rug is nog stijf."},
                    headers={"Origin": ORIGIN})
    assert r.status_code == 410, r.status_code
    assert "call the practice" in r.get_data(as_text=True)
    after = {r["reference"] for r in store.submissions.rows(status="held", practice="noord")}
    assert after == before  # nothing delivered to noord
    assert store.replies.get(theirs)["replied_at"] is None  # type: ignore[index]


def test_a_rotated_key_hides_no_received_document_and_no_open_question(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """noord rotates dr-a's key (a new key file and fingerprint, as the README says to):
    the documents received before, encrypted to the old key, and the questions waiting
    for an answer stay dr-a's clinician's to download and answer."""
    clock = Clock()
    config = two_practice_files(tmp_path, keys)
    noord = tmp_path / "practices" / "noord.toml"
    table = practice_file(keys, "noord", **{"a-hold": {
        "title": "Intake noord", "recipients": ["dr-a"], "delivery": "hold",
        "fields": FIELDS, **EXTRA}})
    write_config(noord, table)
    app = make(config, clock)
    add_user(tmp_path, "alice", "--practice", "noord", "--recipient", "dr-a")
    client = app.test_client()
    thanks = post_form(client, {"name": "Noord patiënt", "complaint": "knie"},
                       form_id="a-hold").get_data(as_text=True)
    ref = re.search(r'id="reference">([^<]+)<', thanks).group(1)  # type: ignore[union-attr]
    s = app.extensions["formrelay"]
    made = UploadLinks(s.settings, s.store, s.clock).for_submission(
        ref, "noord@example.nl", "nl", actor="user:alice")
    sent = client.post(f"/u/{made.link.rsplit('/u/', 1)[1]}", data=encode_multipart(
        {"files": [(io.BytesIO(b"%PDF-1.4 uitslag"), "uitslag.pdf", "application/pdf")]}),
        content_type="multipart/form-data; boundary=frtestboundary")
    assert sent.status_code == 200
    file_id = s.store.uploads.files_of(practice="noord")[0]["id"]

    table["recipients"]["dr-a"].update(key_file=str(keys["soon"].public),
                                       fingerprint=keys["soon"].fingerprint)
    write_config(noord, table)
    settings = reload(app).settings
    assert settings.recipients["dr-a"].fingerprint == keys["soon"].fingerprint

    b = Browser(app, ip="192.0.2.10")
    b.enrol("alice", totp_at(clock))
    assert ref in b.get("/clinician/uploads/").get_data(as_text=True)
    got = b.get(f"/clinician/uploads/{file_id}")
    assert got.status_code == 200 and gpg_decrypt(keys["alice"], got.data) == \
        b"%PDF-1.4 uitslag"
    assert b.get(f"/clinician/answer/{ref}").status_code == 200
