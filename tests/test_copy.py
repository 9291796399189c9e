"""The patient's copy: a link by mail plus a pickup code, never the answers in a mail.

Everything goes through the real path: the form is posted over HTTP, the link mail is
delivered by the outbox worker to a real SMTP server on 127.0.0.1 (STARTTLS), the copy
is picked up over HTTP and its PDF read back with pypdf."""

from __future__ import annotations

import re
import sqlite3
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask

from formrelay import services
from formrelay.config import ConfigError
from formrelay.mail import outbox
from formrelay.patient_copy.copies import Copies
from formrelay.patient_copy.secret import b64d, b64e

from .canary import leaks, start_clock
from .conftest import canary, post_form
from .helpers.copies import ENCODED, FIELDS, Clock, answers, pdf_text, pick, smtp_cfg, thanks
from .smtpd import TlsFiles, smtp_server

NO_EMAIL = [f for f in FIELDS if f["type"] != "email"]


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def db_files(app: Flask) -> list[Path]:
    db = app.extensions["formrelay"].store.path
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


# -- the whole flow ------------------------------------------------------------------------
def test_full_flow_link_mail_code_pdf_then_gone(make_app: Any, tls: TlsFiles,
                                                tmp_path: Path, logs: Any) -> None:
    since = start_clock()
    mark = canary()
    with smtp_server(tls) as (smtp, port):
        app = make_app(fields=FIELDS, patient_copy=True, smtp=smtp_cfg(tls, port))
        client = app.test_client()
        form = client.get("/f/intake").get_data(as_text=True)
        assert 'name="_copy"' in form and "7" in form and "3" in form
        page = thanks(post_form(client, answers(mark)))
        assert len(page["code"]) >= 6 and page["code"].isalnum()
        assert "zoe@example.nl" in page["html"]
        settings = app.extensions["formrelay"].settings
        store = app.extensions["formrelay"].store
        outbox.deliver_pending(settings, store, kinds=services.mail_kinds())
        to_patient = [m for m in smtp.messages if "zoe@example.nl" in m.rcpt_tos]
        assert len(to_patient) == 1
        got = to_patient[0]
        all_mail = [m.data for m in smtp.messages]
    assert got.tls and got.rcpt_tos == ["zoe@example.nl"]
    mail = got.parsed()
    assert not list(mail.iter_attachments())
    body = mail.get_body(("plain",)).get_content()
    assert "Praktijk Test" in body and "020 555 0101" in body
    assert "Intake" not in str(mail["Subject"]) and "Intake" not in body  # no form title
    assert page["code"] not in got.data.decode()  # the code is never mailed
    assert not leaks(mark, blobs=all_mail)
    link = re.search(r"(http://localhost/copy/\S+)#(\S+)", body)
    assert link, body
    url, key = link.group(1).removeprefix("http://localhost"), link.group(2)
    assert url == page["url"] and key == page["key"]
    assert len(b64d(key)) * 8 >= 128

    shown = client.get(url)
    assert shown.status_code == 200
    html = shown.get_data(as_text=True)
    assert 'name="code"' in html and "copy.js" in html and key not in html
    assert shown.headers["Referrer-Policy"] == "no-referrer"

    wrong = pick(client, url, key, code="AAAAAA" if page["code"] != "AAAAAA" else "BBBBBB")
    assert wrong.status_code == 403
    said = wrong.get_data(as_text=True)
    # said once, next to the field (not again in a box above it), with the tries left
    assert said.count("Deze ophaalcode klopt niet") == 1, said
    assert re.search(r'id="e-code" role="alert">.*nog 4 keer proberen', said)
    assert wrong.mimetype == "text/html"

    ok = pick(client, url, key, code=page["code"].lower()[:3] + " " + page["code"][3:])
    assert ok.status_code == 200 and ok.mimetype == "application/pdf"
    assert ok.headers["Content-Disposition"].startswith("attachment;")
    assert ok.headers["Cache-Control"] == "no-store"
    assert ok.headers["Referrer-Policy"] == "no-referrer"
    text = pdf_text(ok.data)
    a = answers(mark)
    for expected in (a["name"], flat(a["complaint"]), "hoofdpijn, koorts", "zoe@example.nl",
                     "verwijzing huisarts.pdf", page["reference"], "Praktijk Test",
                     "020 555 0101", "Intake fysiotherapie", "Naam", "Klacht"):
        assert expected in text, expected
    for _ in range(2):
        assert pick(client, url, key, code=page["code"]).mimetype == "application/pdf"
    gone = pick(client, url, key, code=page["code"])
    assert gone.status_code == 410
    assert "020 555 0101" in gone.get_data(as_text=True)
    assert client.get(url).status_code == 410

    row = store.copies.get(b64d_id(url))
    assert row["state"] == "used_up"
    with nullcontext(store.conn) as conn:
        assert conn.execute("SELECT ciphertext FROM copies").fetchone()[0] is None
        rows = conn.execute("SELECT payload FROM outbox WHERE kind = 'patient_copy'")
        assert rows.fetchone()[0] is None  # sent: the sealed link is gone too
    actions = [r["action"] for r in store.audit.rows(page["reference"])]
    for action in ("copy issued", "copy mail sent", "copy wrong code", "copy opened",
                   "copy deleted"):
        assert action in actions, actions
    assert actions.count("copy opened") == 3
    # nothing on disk, in the logs or in the mail holds the answers
    data_dir = app.extensions["formrelay"].settings.data_dir
    # (aiosmtpd's own debug log, "mail.log", echoes the test server's traffic)
    texts = [r.getMessage() for r in logs.records if not r.name.startswith("mail.log")]
    assert not leaks(mark, roots=[data_dir, tmp_path], texts=texts, since=since)
    assert not leaks(key, roots=[data_dir], texts=texts, since=since)


def b64d_id(url: str) -> str:
    return url.removeprefix("/copy/").split(".")[0]


def test_download_now_for_15_minutes_without_code(make_app: Any) -> None:
    clock = Clock()
    app = make_app(fields=FIELDS, patient_copy=True, clock=clock)
    client = app.test_client()
    page = thanks(post_form(client, answers(canary())))
    r = pick(client, page["url"], page["key"], grant=page["grant"])
    assert r.mimetype == "application/pdf"
    assert "Zoë" in pdf_text(r.data)
    # a made-up grant does not open it
    r = pick(client, page["url"], page["key"], grant=b64e(b"x" * 16))
    assert r.status_code == 403 and "15" in r.get_data(as_text=True)
    clock.now += timedelta(minutes=15, seconds=1)
    r = pick(client, page["url"], page["key"], grant=page["grant"])
    assert r.status_code == 403 and "15" in r.get_data(as_text=True)
    # with the code it still works, and the quick download counted as one of three
    assert pick(client, page["url"], page["key"], code=page["code"]).mimetype == \
        "application/pdf"
    assert pick(client, page["url"], page["key"], code=page["code"]).mimetype == \
        "application/pdf"
    assert pick(client, page["url"], page["key"], code=page["code"]).status_code == 410


# -- the database alone --------------------------------------------------------------------
@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_database_alone_cannot_open_or_test_codes(make_app: Any) -> None:
    mark = canary()
    app = make_app(fields=FIELDS, patient_copy=True)
    client = app.test_client()
    page = thanks(post_form(client, answers(mark)))
    for f in db_files(app):
        raw = f.read_bytes()
        assert b"%PDF" not in raw and mark.encode() not in raw
        for secret in (page["key"], page["code"], page["grant"]):
            assert secret.encode() not in raw
        assert b64d(page["key"]) not in raw
    with sqlite3.connect(db_files(app)[0]) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM copies").fetchone())
    blob: bytes = row["ciphertext"]
    # every value the row holds, tried as the AES key: none opens the copy
    candidates = [bytes.fromhex(row[k]) for k in ("check_hash", "code_mac", "quick_hash")]
    candidates += [row["id"].encode().ljust(32, b"\0")[:32]]
    for k in candidates:
        with pytest.raises(InvalidTag):
            AESGCM(k).decrypt(blob[:12], blob[12:], row["id"].encode())
    # the code cannot be tried against the row without the link secret: its check is keyed
    copies: Copies = app.extensions["formrelay"].copies
    assert row["code_mac"] != __import__("hashlib").sha256(page["code"].encode()).hexdigest()
    # with the link secret the copy opens (the test's own proof that the above is fair)
    from formrelay.patient_copy.secret import derive

    key = derive(b64d(page["key"]), "key", row["id"])
    assert AESGCM(key).decrypt(blob[:12], blob[12:], row["id"].encode()).startswith(b"%PDF")
    # the outbox row holds the link only sealed with a key from FORMRELAY_SECRET_KEY
    with sqlite3.connect(db_files(app)[0]) as conn:
        payload = conn.execute("SELECT payload FROM outbox WHERE kind = 'patient_copy'"
                               ).fetchone()[0]
    assert payload and page["key"].encode() not in payload
    assert copies.token(row["id"]).encode() not in payload


# -- refused links -------------------------------------------------------------------------
def test_lockout_after_five_wrong_codes(make_app: Any) -> None:
    app = make_app(fields=FIELDS, patient_copy=True)
    client = app.test_client()
    page = thanks(post_form(client, answers(canary())))
    wrong = "AAAAAA" if page["code"] != "AAAAAA" else "BBBBBB"
    for left in (4, 3, 2, 1):
        r = pick(client, page["url"], page["key"], code=wrong)
        assert r.status_code == 403 and f"nog {left} keer" in r.get_data(as_text=True)
    r = pick(client, page["url"], page["key"], code=wrong)
    assert r.status_code == 403
    html = r.get_data(as_text=True)
    assert "geblokkeerd" in html and "020 555 0101" in html
    # the right code no longer helps: the copy is deleted
    r = pick(client, page["url"], page["key"], code=page["code"])
    assert r.status_code == 403 and r.mimetype == "text/html"
    store = app.extensions["formrelay"].store
    row = store.copies.get(b64d_id(page["url"]))
    assert row["state"] == "locked" and row["failures"] == 5
    actions = [r["action"] for r in store.audit.rows(page["reference"])]
    assert actions.count("copy wrong code") == 5
    assert "copy locked" in actions and "copy deleted" in actions


def test_copy_answers_are_never_cached_send_no_referrer_and_want_a_post(
        make_app: Any) -> None:
    clock = Clock()
    app = make_app(fields=FIELDS, patient_copy=True, clock=clock)
    client = app.test_client()
    a = thanks(post_form(client, answers(canary())))
    b = thanks(post_form(client, answers(canary())))
    other_code = a["code"] if a["code"] != b["code"] else "AAAAAA"
    got = {
        "pickup page": client.get(a["url"]),
        # the code and the secret only count when POSTed
        "code in the query": client.get(f"{a['url']}?code={a['code']}&key={a['key']}"
                                        f"&grant={a['grant']}"),
        "no code": pick(client, a["url"], a["key"]),
        # a code opens only its own copy; a secret only its own link
        "another copy's code": pick(client, b["url"], b["key"], code=other_code),
        "another copy's secret": pick(client, b["url"], a["key"], code=b["code"]),
        "altered link": client.get(a["url"][:-3] + "abc"),
        "pdf": pick(client, a["url"], a["key"], code=a["code"]),
    }
    clock.now += timedelta(days=8)
    got["expired"] = client.get(b["url"])
    for name, r in got.items():
        assert r.headers["Cache-Control"] == "no-store", name
        assert r.headers["Referrer-Policy"] == "no-referrer", name
        assert r.headers["X-Content-Type-Options"] == "nosniff", name
    assert [n for n, r in got.items() if r.mimetype == "application/pdf"] == ["pdf"]
    assert got["code in the query"].status_code == 200
    assert got["another copy's code"].status_code == 403
    assert got["another copy's secret"].status_code == 400
    assert got["expired"].status_code == 410


def test_altered_links_are_refused(make_app: Any) -> None:
    app = make_app(fields=FIELDS, patient_copy=True)
    client = app.test_client()
    page = thanks(post_form(client, answers(canary())))
    url, key, code = page["url"], page["key"], page["code"]
    cid, sig = url.removeprefix("/copy/").split(".")
    other = "B" if sig[3] != "B" else "C"
    bad_sig = f"/copy/{cid}.{sig[:3]}{other}{sig[4:]}"
    assert client.get(bad_sig).status_code == 400
    r = pick(client, bad_sig, key, code=code)
    assert r.status_code == 400 and "Deze link werkt niet" in r.get_data(as_text=True)
    # a made-up id: refused before the database is asked; a signed unknown one: gone
    assert client.get(f"/copy/{'A' * 22}.{sig}").status_code == 400
    signed_unknown = app.extensions["formrelay"].copies.token("Z" * 22)
    assert client.get(f"/copy/{signed_unknown}").status_code == 404
    # an altered secret with the right code: refused, and not counted as a wrong code
    bad_key = ("A" if key[0] != "A" else "B") + key[1:]
    for k in (bad_key, "", "not base64 !", key[:-4]):
        r = pick(client, url, k, code=code)
        assert r.status_code == 400 and r.mimetype == "text/html", k
    store = app.extensions["formrelay"].store
    assert store.copies.get(cid)["failures"] == 0
    assert pick(client, url, key, code=code).mimetype == "application/pdf"
    # no stack trace anywhere
    for r in (client.get("/copy/"), client.get("/copy/x"), client.post("/copy/x.y")):
        assert r.status_code in (400, 404) and "Traceback" not in r.get_data(as_text=True)


def test_expiry_with_injected_clock(make_app: Any) -> None:
    clock = Clock()
    app = make_app(fields=FIELDS, patient_copy=True, clock=clock)
    client = app.test_client()
    page = thanks(post_form(client, answers(canary())))
    clock.now += timedelta(days=6, hours=23)
    assert client.get(page["url"]).status_code == 200
    clock.now += timedelta(hours=1)
    r = client.get(page["url"])
    assert r.status_code == 410 and "verlopen" in r.get_data(as_text=True)
    assert pick(client, page["url"], page["key"], code=page["code"]).status_code == 410
    store = app.extensions["formrelay"].store
    actions = [r["action"] for r in store.audit.rows(page["reference"])]
    assert "copy expired" in actions and "copy deleted" in actions
    with nullcontext(store.conn) as conn:
        assert conn.execute("SELECT ciphertext FROM copies").fetchone()[0] is None
    # the worker's purge forgets the row a month later
    copies: Copies = app.extensions["formrelay"].copies
    clock.now += timedelta(days=31)
    copies.purge()
    assert client.get(page["url"]).status_code == 404


def test_purge_expires_copies_nobody_opened(make_app: Any) -> None:
    clock = Clock()
    app = make_app(fields=FIELDS, patient_copy=True, clock=clock,
                   server={"copy_expiry_days": 2, "copy_downloads": 1})
    client = app.test_client()
    page = thanks(post_form(client, answers(canary())))
    assert "2" in page["html"]
    copies: Copies = app.extensions["formrelay"].copies
    assert copies.purge() == 0
    clock.now += timedelta(days=2)
    assert copies.purge() == 1
    assert client.get(page["url"]).status_code == 410


# -- asking for the copy -------------------------------------------------------------------
def test_no_tick_no_copy_and_no_mail(make_app: Any) -> None:
    app = make_app(fields=FIELDS, patient_copy=True)
    client = app.test_client()
    a = answers(canary())
    del a["_copy"]
    r = post_form(client, a)
    assert r.status_code == 200 and "pickup-code" not in r.get_data(as_text=True)
    with nullcontext(app.extensions["formrelay"].store.conn) as conn:
        assert conn.execute("SELECT count(*) FROM copies").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM outbox WHERE kind LIKE 'patient%'"
                            ).fetchone()[0] == 0


@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_queued_link_mail_keeps_the_patients_address_sealed(make_app: Any,
                                                             tmp_path: Path) -> None:
    app = make_app(fields=FIELDS, patient_copy=True)
    a = answers(canary())
    address = f"patient-{canary().lower()}@example.nl"
    thanks(post_form(app.test_client(), {**a, "email": address}))
    assert db_files(app) and not leaks(address, roots=db_files(app))
    relay = app.extensions["formrelay"]
    with sqlite3.connect(relay.store.path) as conn:
        [to] = conn.execute("SELECT recipients FROM outbox WHERE kind = 'patient_copy'"
                            ).fetchone()
    assert to.startswith('["sealed:v1:')
    # the worker opens it, in memory, to send (here into the sink folder)
    kinds = services.mail_kinds()
    assert outbox.deliver_pending(relay.settings, relay.store, kinds=kinds).sent == 2
    [eml] = [p for p in (tmp_path / "mail").iterdir() if "patient_copy" in p.name]
    assert f"To: {address}" in eml.read_text()


def test_form_without_copy_has_no_tick_and_ignores_it(make_app: Any) -> None:
    app = make_app(fields=FIELDS)
    client = app.test_client()
    assert 'name="_copy"' not in client.get("/f/intake").get_data(as_text=True)
    r = post_form(client, answers(canary()))
    assert r.status_code == 200 and "pickup-code" not in r.get_data(as_text=True)


@pytest.mark.parametrize(("fields", "email", "where"), [
    (FIELDS, "", 'id="e-email"'),
    (FIELDS, "not-an-address", 'id="e-email"'),
    (NO_EMAIL, "", 'id="e-_copy_email"'),
    (NO_EMAIL, "jan@@example", 'id="e-_copy_email"'),
])
def test_copy_needs_a_valid_address(make_app: Any, fields: list[dict[str, Any]], email: str,
                                    where: str) -> None:
    app = make_app(fields=fields, patient_copy=True)
    client = app.test_client()
    a = answers(canary())
    a.pop("email")
    if fields is FIELDS:
        a["email"] = email
    else:
        a["_copy_email"] = email
    r = post_form(client, a)
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and where in html and "e-mail" in html
    assert "checked" in html.split('name="_copy"')[1][:80]  # the tick is kept
    assert not app.extensions["formrelay"].store.submissions.rows()


@pytest.mark.parametrize("address", ENCODED)
@pytest.mark.parametrize(("fields", "where", "copy"), [
    (FIELDS, "email", True), (FIELDS, "email", False), (NO_EMAIL, "_copy_email", True)])
def test_address_with_encoded_words_is_refused_at_the_form(
        make_app: Any, address: str, fields: list[dict[str, Any]], where: str,
        copy: bool) -> None:
    app = make_app(fields=fields, patient_copy=True)
    client = app.test_client()

    def posted() -> dict[str, Any]:
        a = answers(canary())
        a.pop("email")
        a[where] = address
        if not copy:
            del a["_copy"]
        return a

    r = post_form(client, posted())
    html = r.get_data(as_text=True)
    assert r.status_code == 400, html
    error = html.split(f'id="e-{where}"')[1][:300]
    assert "Dit e-mailadres kan niet gebruikt worden" in error
    r = post_form(client, {**posted(), "_lang": "en"}, json_answer=True)
    assert r.status_code == 400
    assert r.get_json()["errors"][where] == [
        "This e-mail address cannot be used. Type it plainly, e.g. name@example.nl."]
    store = app.extensions["formrelay"].store
    assert not store.submissions.rows() and store.outbox.rows(("queued", "sent", "failed")) == []
    with nullcontext(store.conn) as conn:
        assert conn.execute("SELECT count(*) FROM copies").fetchone()[0] == 0


def test_form_without_email_field_asks_for_one(make_app: Any) -> None:
    app = make_app(fields=NO_EMAIL, patient_copy=True)
    client = app.test_client()
    assert 'name="_copy_email"' in client.get("/f/intake").get_data(as_text=True)
    a = answers(canary())
    a.pop("email")
    page = thanks(post_form(client, {**a, "_copy_email": "Jan@Example.nl"}))
    assert "Jan@example.nl" in page["html"]


def test_json_answer_and_english(make_app: Any) -> None:
    app = make_app(fields=FIELDS, patient_copy=True)
    client = app.test_client()
    form = client.get("/f/intake?lang=en").get_data(as_text=True)
    assert "Send me a copy of my answers" in form and "7 days" in form
    nl = client.get("/f/intake").get_data(as_text=True)
    assert "Stuur mij een kopie van mijn antwoorden" in nl and "7 dagen" in nl
    r = post_form(client, answers(canary()), json_answer=True)
    data = r.get_json()
    assert data["ok"] and len(data["public_copy"]["code"]) == 6
    dl = data["public_copy"]["download"]
    en = client.get(dl["url"] + "?lang=en").get_data(as_text=True)
    assert "Pickup code" in en
    assert "Ophaalcode" in client.get(dl["url"]).get_data(as_text=True)
    assert "Incorrect" not in en
    r = pick(client, dl["url"], dl["key"], code="AAAAAA" if data["public_copy"]["code"]
             != "AAAAAA" else "BBBBBB", lang="en")
    assert "This pickup code is not right" in r.get_data(as_text=True)


@pytest.mark.parametrize(("server", "problem"), [
    ({"copy_expiry_days": 31}, "copy_expiry_days"),
    ({"copy_expiry_days": 0}, "copy_expiry_days"),
    ({"copy_downloads": 11}, "copy_downloads"),
])
def test_config_caps(make_app: Any, server: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        make_app(fields=FIELDS, patient_copy=True, server=server)


def test_config_needs_mail_for_copies(make_app: Any) -> None:
    with pytest.raises(ConfigError, match="patient_copy_pgp"):
        make_app(fields=FIELDS, patient_copy_pgp=True)
    with pytest.raises(ConfigError, match="patient_copy"):
        make_app(fields=FIELDS, patient_copy=True, smtp={})
