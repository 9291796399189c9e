"""Bad bytes in the new patient fields: the reply to an answer and an uploaded file's
name. A reply that cannot be read (NUL, bytes that were not UTF-8) is refused like a
form answer, with nothing delivered; a file name's extension reaches the audit log only
as a short plain extension (no bidi controls, no pages of text)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from .area import Clock, cheap_hashing
from .conftest import ORIGIN, encode_multipart, post_form
from .helpers.replies import FIELDS, send_form, write_answer
from .helpers.uploads import clinician, new_link


@pytest.mark.parametrize("bad", ["Mijn rug\x00 is stijf", "Mijn rug \ufffd is stijf"],
                         ids=["nul", "not-utf8"])
def test_an_unreadable_reply_is_refused_and_nothing_delivered(
        make_app: Any, tmp_path: Path, monkeypatch: Any, bad: str) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, clock=clock)
    client = app.test_client()
    ref, code = send_form(client)
    write_answer(clinician(app, tmp_path, clock), ref, "Rust houden.")
    store = app.extensions["formrelay"].store
    before = len(store.submissions.rows(status="held"))
    r = client.post("/r/reply?lang=en", data={"reference": ref, "code": code, "reply": bad},
                    headers={"Origin": ORIGIN})
    assert r.status_code == 400, r.status_code
    assert "could not be read" in r.get_data(as_text=True)
    assert len(store.submissions.rows(status="held")) == before
    assert store.replies.get(ref)["replied_at"] is None  # the one reply is still the patient's
    good = client.post("/r/reply?lang=en", data={"reference": ref, "code": code,
                                                 "reply": "Mijn rug is stijf"},
                       headers={"Origin": ORIGIN})
    assert good.status_code == 200 and len(store.submissions.rows(status="held")) == before + 1


def test_a_refused_files_name_reaches_the_audit_log_only_as_a_plain_extension(
        make_app: Any) -> None:
    app = make_app()
    token = new_link(app)
    client = app.test_client()
    names = ["scan.\u202efdp", "scan." + "x" * 5000, "scan.p\u00addf"]
    for name in names:
        body = encode_multipart({"files": [(io.BytesIO(b"%PDF-1.4 x"), name, "application/pdf")]})
        r = client.post(f"/u/{token}?lang=en", data=body,
                        content_type="multipart/form-data; boundary=frtestboundary")
        assert r.status_code == 415 and "pdf" in r.get_data(as_text=True)
    rows = [r for r in app.extensions["formrelay"].store.audit.rows()
            if r["action"] == "upload refused"]
    assert len(rows) == len(names)
    for row in rows:
        assert row["detail"].isascii() and len(row["detail"]) < 100, row["detail"][:120]


BAD_TEXT = ["\x00", "a@b.nl\r\nBcc: x@y.nl", "\u202ea@b.nl", "a" * 100000 + "@b.nl",
            "a@b.nl\x00"]


def test_bad_bytes_in_an_upload_links_address_reference_and_offer_send_nothing(
        make_app: Any, tmp_path: Path, monkeypatch: Any) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, upload_link=True, clock=clock)
    client = app.test_client()
    thanks = post_form(client, {"name": "Zoë", "email": "z@example.nl"}).get_data(as_text=True)
    ref = re.search(r'id="reference">([^<]+)<', thanks).group(1)  # type: ignore[union-attr]
    offer = re.search(r'name="offer" value="([^"]+)"', thanks).group(1)  # type: ignore[union-attr]
    b = clinician(app, tmp_path, clock)
    for v in BAD_TEXT:
        assert b.post("/clinician/uploads/invite",
                      {"reference": ref, "email": v}).status_code == 400
        assert b.post("/clinician/uploads/invite",
                      {"reference": v, "email": "a@b.nl"}).status_code == 400
        assert client.post("/u/ask", data={"offer": offer, "email": v},
                           headers={"Origin": ORIGIN}).status_code == 400
        assert client.post("/u/ask", data={"offer": v, "email": "a@b.nl"},
                           headers={"Origin": ORIGIN}).status_code == 404
    store = app.extensions["formrelay"].store
    assert "upload_link" not in [m["kind"] for m in store.outbox.rows()]
    assert store.uploads.links_of(ref) == []


def test_a_nul_in_a_reference_or_id_is_a_clear_refusal_on_every_engine(
        make_app: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """PostgreSQL refuses a NUL in a text parameter outright (SQLite just finds
    nothing): every lookup by a reference, code or id the client sent checks it first."""
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(fields=FIELDS, replies=True, upload_link=True, clock=clock)
    client = app.test_client()
    ref, code = send_form(client)
    token = new_link(app)
    b = clinician(app, tmp_path, clock)
    nul = "FR-\x00AAA-AAAA"
    for path, data in (("/r/", {"reference": nul, "code": code}),
                       ("/r/reply", {"reference": nul, "code": code, "reply": "x"})):
        r = client.post(path, data=data, headers={"Origin": ORIGIN})
        assert r.status_code == 404, (path, r.status_code)
    assert b.get("/clinician/answer/FR-%00AAA-AAAA").status_code in (400, 404)
    assert b.get("/clinician/uploads/abc%00def").status_code in (400, 404)
    for method in ("GET", "PATCH"):
        r = client.open(f"/u/{token}/files/abc%00def", method=method,
                        headers={"Upload-Offset": "0"}, data=b"x")
        assert r.status_code in (400, 404), (method, r.status_code)
    assert b.post("/clinician/uploads/invite",
                  {"reference": nul, "email": "a@b.nl"}).status_code == 400
    assert client.post("/r/", data={"reference": ref, "code": code},
                       headers={"Origin": ORIGIN}).status_code == 200  # the real one works
