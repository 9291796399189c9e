"""A patient posts the form; only ciphertext is stored; the clinician can decrypt it."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .conftest import ORIGIN, form_token, post_form, valid_answers
from .helpers.submit import answers_json, inner
from .keys import TestKey, gpg_decrypt, packet_tags, rnp_decrypt

post = post_form


def stored(app: Flask, reference: str) -> bytes:
    return app.extensions["formrelay"].store.submissions.ciphertext(reference)


def count_rows(app: Flask) -> int:
    return len(app.extensions["formrelay"].store.submissions.rows())


def test_form_page_renders_every_field(client: FlaskClient) -> None:
    r = client.get("/f/intake")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    for label in ("Naam", "Klacht", "BSN", "Geboortedatum", "Bijlage", "Ik ga akkoord"):
        assert label in html
    assert 'for="f-name"' in html and 'id="f-name"' in html
    assert "Praktijk Test" in html and "020 555 0101" in html


def test_submission_encrypts_accents_and_emoji(app: Flask, client: FlaskClient,
                                               keys: dict[str, TestKey]) -> None:
    r = post(client, {**valid_answers(), "symptoms": ["hoofdpijn", "koorts"],
                      "attachment": (io.BytesIO(b"%PDF-1.4 test pdf"), "verwijzing dr. Ünal.pdf")})
    assert r.status_code == 200, r.get_data(as_text=True)
    ref = re.search(r"FR-[2-9A-Z]{4}-[2-9A-Z]{4}", r.get_data(as_text=True)).group(0)
    ct = stored(app, ref)
    assert ct.startswith(b"-----BEGIN PGP MESSAGE-----")
    for decrypt in (gpg_decrypt, rnp_decrypt):
        msg = inner(decrypt(keys["alice"], ct))
        assert msg.get_param("protected-headers") == "v1"
        assert msg["Subject"] == f"Intake fysiotherapie - {ref}"
        data = answers_json(msg)
        assert data["answers"]["name"] == "Jeroen Brünhilde"
        assert data["answers"]["complaint"] == "Pijn in de knie 🦵"
        assert data["answers"]["symptoms"] == ["hoofdpijn", "koorts"]
        assert data["answers"]["consent"] is True
        text = next(p for p in msg.walk() if p.get_content_type() == "text/plain")
        assert "Pijn in de knie 🦵" in text.get_content()
        pdf = next(p for p in msg.walk() if p.get_content_type() == "application/pdf")
        assert pdf.get_payload(decode=True) == b"%PDF-1.4 test pdf"
        assert pdf.get_filename() == "verwijzing dr Ünal.pdf"


def test_ciphertext_is_seipd_v1(app: Flask, client: FlaskClient,
                                keys: dict[str, TestKey]) -> None:
    r = post(client, valid_answers(), json_answer=True)
    ct = stored(app, r.get_json()["reference"])
    tags = packet_tags(keys["alice"], ct)
    assert any("encrypted data packet" in t for t in tags), tags
    assert "mdc_method: 2" in tags
    assert not any("aead" in t.lower() for t in tags)
    assert not any("throw" in t or "keyid 0000000000000000" in t for t in tags)


def test_every_recipient_can_decrypt(make_app: Any, keys: dict[str, TestKey]) -> None:
    app = make_app(recipients=("alice", "bob"))
    client = app.test_client()
    r = post(client, valid_answers(), json_answer=True)
    assert r.status_code == 200
    ct = stored(app, r.get_json()["reference"])
    for who in ("alice", "bob"):
        for decrypt in (gpg_decrypt, rnp_decrypt):
            data = answers_json(inner(decrypt(keys[who], ct)))
            assert data["answers"]["name"] == "Jeroen Brünhilde"


def test_json_answer_and_stored_row_holds_metadata_only(app: Flask,
                                                        client: FlaskClient) -> None:
    r = post(client, valid_answers("zeldzaam"), json_answer=True)
    assert r.status_code == 200
    body = r.get_json()
    assert body["ok"] is True and re.fullmatch(r"FR-\w{4}-\w{4}", body["reference"])
    store = app.extensions["formrelay"].store
    row = store.submissions.get(body["reference"])
    assert row["form_id"] == "intake" and row["status"] == "held" and row["size"] > 0
    cols = list(dict(store.conn.execute("SELECT * FROM submissions").fetchone()))
    assert "name" not in cols and "answers" not in cols


BAD_INPUT = [
    ({"name": ""}, "name", "Dit veld is vereist"),
    ({"name": "x" * 201}, "name", "niet langer zijn dan 200"),
    ({"insurer": "Onbekend"}, "insurer", "Ongeldige keuze"),
    ({"email": "geen-adres"}, "email", "e-mail"),
    ({"bsn": "123456789"}, "bsn", "burgerservicenummer"),
    ({"born": "2999-01-01"}, "born", "toekomst"),
    ({"consent": ""}, "consent", "Vink dit vakje aan"),
    ({"age": "200"}, "age", "130"),
    ({"phone": "bel me"}, "phone", "telefoonnummer"),
]


@pytest.mark.parametrize(("change", "field", "message"), BAD_INPUT)
def test_bad_input_is_refused_and_nothing_stored(app: Flask, client: FlaskClient,
                                                 change: dict[str, str], field: str,
                                                 message: str) -> None:
    data = {**valid_answers(), **change}
    r = post(client, data)
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert f'id="e-{field}"' in html and f'href="#f-{field}"' in html
    assert message.lower() in html.lower(), html[html.find("error-summary"):][:800]
    jr = post(client, data, json_answer=True)
    assert jr.status_code == 400
    assert jr.get_json()["ok"] is False and field in jr.get_json()["errors"]
    assert count_rows(app) == 0


def test_bad_input_keeps_what_was_typed(client: FlaskClient) -> None:
    r = post(client, {**valid_answers(), "consent": ""})
    assert "Pijn in de knie" in r.get_data(as_text=True)


def test_english_messages(client: FlaskClient) -> None:
    r = post(client, {**valid_answers(), "name": "", "_lang": "en"})
    assert "This field is required" in r.get_data(as_text=True)


def test_unknown_field_refused(app: Flask, client: FlaskClient) -> None:
    r = post(client, {**valid_answers(), "evil": "x"}, json_answer=True)
    assert r.status_code == 400 and "evil" in r.get_json()["errors"]["_form"][0]
    assert count_rows(app) == 0


def test_unknown_form_is_404(client: FlaskClient) -> None:
    assert client.get("/f/nope").status_code == 404
    r = client.post("/f/nope", data={"a": "b"},
                    headers={"Accept": "application/json", "Origin": ORIGIN})
    assert r.status_code == 404 and r.get_json()["ok"] is False


def test_body_over_limit_is_413(make_app: Any) -> None:
    app = make_app(server={"max_request_mb": 1})
    client = app.test_client()
    big = io.BytesIO(b"%PDF-" + b"0" * (2 * 1024 * 1024))
    r = post(client, {**valid_answers(), "attachment": (big, "a.pdf")})
    assert r.status_code == 413
    assert "te groot" in r.get_data(as_text=True)
    assert count_rows(app) == 0


def multipart(fields: list[tuple[str, bytes]]) -> bytes:
    out = b"".join(b'--xyz\r\nContent-Disposition: form-data; name="' + k.encode() +
                   b'"\r\n\r\n' + v + b"\r\n" for k, v in fields)
    return out + b"--xyz--\r\n"


def test_five_thousand_fields(app: Flask, client: FlaskClient) -> None:
    fields = [(k, v.encode()) for k, v in {**form_token(client), **valid_answers()}.items()]
    body = multipart(fields + [(f"f{i}", b"x") for i in range(5000)])
    r = client.post("/f/intake", data=body, content_type="multipart/form-data; boundary=xyz",
                    headers={"Accept": "application/json", "Origin": ORIGIN})
    assert r.status_code == 400  # not a 413 "make attachments smaller"
    assert r.get_json()["ok"] is False and "te veel velden" in r.get_json()["error"]
    urlencoded = "&".join(f"f{i}=x" for i in range(5000)) + "&name=Jan&complaint=a&consent=y"
    urlencoded += "".join(f"&{k}={v}" for k, v in form_token(client).items())
    r = client.post("/f/intake", data=urlencoded, content_type="application/x-www-form-urlencoded",
                    headers={"Accept": "application/json", "Origin": ORIGIN})
    assert r.status_code == 400 and "te veel velden" in r.get_json()["error"]
    assert count_rows(app) == 0


def test_malformed_multipart(app: Flask, client: FlaskClient) -> None:
    body = b"--xyz\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nJan\r\n--xy"
    r = client.post("/f/intake", data=body, content_type="multipart/form-data; boundary=xyz",
                    headers={"Accept": "application/json", "Origin": ORIGIN})
    assert r.status_code == 400 and r.get_json()["ok"] is False
    assert count_rows(app) == 0


def test_invalid_utf8(app: Flask, client: FlaskClient) -> None:
    fields = [(k, v.encode()) for k, v in form_token(client).items()]
    body = multipart([*fields, ("name", b"Jan \xff\xfe"), ("complaint", b"pijn"),
                      ("consent", b"y")])
    r = client.post("/f/intake", data=body, content_type="multipart/form-data; boundary=xyz",
                    headers={"Accept": "application/json", "Origin": ORIGIN})
    assert r.status_code == 400 and "name" in r.get_json()["errors"]
    assert count_rows(app) == 0


@pytest.mark.parametrize(("filename", "content", "message"), [
    ("script.exe", b"MZ\x90\x00", "niet toegestaan"),
    ("fake.pdf", b"MZ\x90\x00 not a pdf", "geen echt PDF"),
    ("fake.png", b"%PDF-1.4", "geen echt PNG"),
])
def test_forbidden_or_faked_upload(app: Flask, client: FlaskClient, filename: str,
                                   content: bytes, message: str) -> None:
    r = post(client, {**valid_answers(), "attachment": (io.BytesIO(content), filename)})
    assert r.status_code == 400
    assert message in r.get_data(as_text=True)
    assert count_rows(app) == 0


def test_no_temp_files_for_uploads(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    big = b"%PDF-1.7\n" + b"Q" * (3 * 1024 * 1024)
    r = post(client, {**valid_answers(), "attachment": (io.BytesIO(big), "scan.pdf")},
             json_answer=True)
    assert r.status_code == 200
    data = app.extensions["formrelay"].settings.data_dir
    assert list((data / "tmp").iterdir()) == []


@pytest.mark.parametrize(("content", "message"), [
    (b"", "leeg"),
    (b"%PDF-1.7\n" + b"0" * (1024 * 1024), "groter dan 1 MB"),
])
def test_empty_or_too_large_file_is_refused(make_app: Any, content: bytes,
                                            message: str) -> None:
    fields = [{"name": "name", "type": "text", "label": "Naam", "required": True},
              {"name": "scan", "type": "file", "label": "Scan", "accept": ["pdf"],
               "max_size_mb": 1}]
    app = make_app(fields=fields)
    r = post(app.test_client(), {"name": "Jan", "scan": (io.BytesIO(content), "scan.pdf")})
    assert r.status_code == 400 and message in r.get_data(as_text=True)
    assert count_rows(app) == 0


def test_upload_gets_a_server_made_name_and_type(app: Flask, client: FlaskClient,
                                                 keys: dict[str, TestKey]) -> None:
    r = post(client, {**valid_answers(), "attachment": (
        io.BytesIO(b"gewoon tekst\n"), "..\\..//etc/<script>pass wd\x07.TXT",
        "application/x-msdownload")}, json_answer=True)
    assert r.status_code == 200, r.get_data(as_text=True)
    msg = inner(gpg_decrypt(keys["alice"], stored(app, r.get_json()["reference"])))
    [part] = [p for p in msg.walk() if p.get_filename() not in (None, "answers.json")]
    assert part.get_filename() == "scriptpass wd.txt"  # no path, no markup, its own type
    assert part.get_content_type() == "text/plain"
    assert part.get_payload(decode=True) == b"gewoon tekst\n"
