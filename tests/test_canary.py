"""Design non-negotiable 1: the plaintext exists only in the request's memory.

One flow through everything the product does with a submission: unique canaries in
every field type (typed text, the patient's own e-mail address, phone, dates, number,
BSN, the chosen options and the consent text, an uploaded file's content and name) go
to a form with `delivery = "email"` and `patient_copy = true` and to a held form; a
rejected post carries them too. The delivery worker sends everything to a real
STARTTLS SMTP server, the patient opens the copy with the link and the pickup code, a
clinician logs in (TOTP) and downloads the held one. Then the database file, its WAL,
the whole data folder, the temp folder, every captured log line (as text and as the
JSON the service writes), every request line an access log could write and every mail
received are searched: no canary anywhere in plaintext. Only the clinician's decrypted
view and the patient's own PDF hold them (and the patient's address is of course on
the one mail sent to it).
"""

from __future__ import annotations

import io
import random
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from formrelay import create_app, services
from formrelay.intake.forms import bsn_is_valid
from formrelay.logs import JsonFormatter
from formrelay.mail import outbox
from formrelay.store import Store

from .area import Browser, Clock, add_user, cheap_hashing, totp_at
from .canary import found_in, leaks_of, start_clock, temp_root
from .conftest import ENV, canary, make_config_dict, post_form, write_config
from .keys import TestKey, gpg_decrypt
from .smtpd import TlsFiles, smtp_config, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def random_bsn() -> str:
    rng = random.Random()  # noqa: S311 - test data
    while True:
        n = f"{rng.randrange(10**8, 10**9):09d}"
        if bsn_is_valid(n):
            return n


def test_canary_helper_catches_plain_and_base64() -> None:
    import base64

    secret = canary()
    assert found_in(f"x {secret} y".encode(), secret)
    for pad in range(3):
        assert found_in(base64.encodebytes(b"ab"[:pad] + f"--{secret}--".encode()), secret)
    assert not found_in(b"nothing here", secret)


class RequestLines:
    """WSGI middleware keeping each request line (with its query) and Referer: what any
    access log - gunicorn's, the TLS proxy's - could write, redacted or not."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.lines: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        query = environ.get("QUERY_STRING", "")
        self.lines.append(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}"
                          f"{'?' + query if query else ''} {environ.get('HTTP_REFERER', '-')}")
        return self.app(environ, start_response)


def fields(option: str) -> list[dict[str, Any]]:
    """Every field type; the options and the consent text (from the config) carry a
    canary too, since the patient's choice among them is an answer."""
    return [
        {"name": "name", "type": "text", "label": "Naam", "required": True},
        {"name": "complaint", "type": "textarea", "label": "Klacht", "required": True},
        {"name": "email", "type": "email", "label": "E-mail"},
        {"name": "phone", "type": "tel", "label": "Telefoon"},
        {"name": "visit", "type": "date", "label": "Datum bezoek"},
        {"name": "weight", "type": "number", "label": "Gewicht", "min": 0},
        {"name": "insurer", "type": "select", "label": "Verzekeraar",
         "choices": ["VGZ", f"Zorgverzekeraar {option}"]},
        {"name": "contact", "type": "radio", "label": "Contact via",
         "choices": ["telefoon", f"Brief {option}"]},
        {"name": "symptoms", "type": "checkboxes", "label": "Klachten",
         "choices": ["koorts", f"Anders {option}"]},
        {"name": "bsn", "type": "bsn", "label": "BSN"},
        {"name": "born", "type": "birthdate", "label": "Geboortedatum"},
        {"name": "attachment", "type": "file", "label": "Bijlage", "accept": ["pdf", "txt"]},
        {"name": "consent", "type": "consent", "label": f"Ik ga akkoord {option}"},
    ]


def kept_out(found: dict[str, list[str]], allowed: Iterable[str]) -> dict[str, list[str]]:
    """Findings outside the places a canary may be (the test's own config and keys)."""
    allowed = tuple(allowed)
    out = {s: [p for p in places if not any(a in p for a in allowed)]
           for s, places in found.items()}
    return {s: p for s, p in out.items() if p}


def database_rows(store: Store) -> bytes:
    """Every value in every table of a PostgreSQL database, as bytes to search."""
    tables = [r[0] for r in store.conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    out = bytearray()
    for table in tables:
        for row in store.conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - catalog names
            for value in row:
                out += value if isinstance(value, bytes) else str(value).encode()
                out += b"\n"
    return bytes(out)


def test_canary_is_nowhere_but_in_the_ciphertext(
        keys: dict[str, TestKey], tls: TlsFiles, tmp_path: Path,
        logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)
    since = start_clock()
    rng = random.Random()  # noqa: S311 - test data
    typed, option = canary(), canary()
    address = f"canary-{secrets.token_hex(8)}@example.nl"
    phone = f"06 {rng.randrange(10**7, 10**8)}"
    bsn = random_bsn()
    visit = f"{rng.randrange(2101, 2199)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    born = f"{rng.randrange(1901, 1930)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    weight = f"{rng.randrange(10**8, 10**9)}.{rng.randrange(10, 100)}"
    everything = [typed, option, phone, bsn, visit, born, weight]

    def answers(copy: bool) -> dict[str, Any]:
        return {"name": f"Naam {typed}", "complaint": f"Klacht {typed}\nregel twee",
                "email": address, "phone": phone, "visit": visit, "weight": weight,
                "insurer": f"Zorgverzekeraar {option}", "contact": f"Brief {option}",
                "symptoms": ["koorts", f"Anders {option}"], "bsn": bsn, "born": born,
                "consent": "y", "_copy": "1" if copy else "",
                "attachment": (io.BytesIO(f"plain text file {typed}\n".encode()),
                               f"brief-{typed}.txt", "text/plain")}

    clock = Clock()
    with smtp_server(tls) as (smtp, port):
        cfg = make_config_dict(tmp_path / "data", keys, fields=fields(option), delivery="email",
                               patient_copy=True, smtp=smtp_config(tls, port))
        cfg["forms"]["held"] = {**cfg["forms"]["intake"], "title": "Vragenlijst",
                                "delivery": "hold", "patient_copy": False}
        config = write_config(tmp_path / "config.toml", cfg)
        app = create_app(config, environ=ENV, clock=clock)
        requests = RequestLines(app.wsgi_app)
        app.wsgi_app = requests  # type: ignore[method-assign]
        client = app.test_client()

        # a rejected post carries every canary too, and leaves none behind
        bad = post_form(client, {**answers(True), "weight": "-1"}, json_answer=True)
        assert bad.status_code == 400 and "weight" in bad.get_json()["errors"]
        sent = post_form(client, answers(True), json_answer=True)
        assert sent.status_code == 200, sent.get_data(as_text=True)
        ref, copy = sent.get_json()["reference"], sent.get_json()["public_copy"]
        held = post_form(client, answers(False), json_answer=True, form_id="held")
        assert held.status_code == 200, held.get_data(as_text=True)
        held_ref = held.get_json()["reference"]

        relay = app.extensions["formrelay"]
        result = outbox.deliver_pending(relay.settings, relay.store, kinds=services.mail_kinds())
        assert (result.sent, result.deferred, result.failed) == (3, 0, 0), result.errors
        mails = list(smtp.messages)
    assert all(m.tls for m in mails)

    # the clinician's mail client decrypts the PGP/MIME mail: every answer is in it
    [pgp] = [m for m in mails if m.parsed().get_content_type() == "multipart/encrypted"]
    assert pgp.rcpt_tos == ["alice@praktijk.test"]
    inner = gpg_decrypt(keys["alice"], pgp.parsed().get_payload()[1].get_payload(decode=True))
    assert ref.encode() in inner and found_in(inner, typed) and found_in(inner, option)

    # the patient: the link from the mail, the pickup code from the thank-you page
    [link_mail] = [m for m in mails if m.rcpt_tos == [address]]
    body = link_mail.parsed().get_body(("plain",)).get_content()
    link = re.search(r"http://localhost(/copy/\S+)#(\S+)", body)
    assert link, body
    assert client.get(link.group(1)).status_code == 200
    pdf = client.post(link.group(1), data={"key": link.group(2), "code": copy["code"]})
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")

    # the clinician logs in and downloads the held submission
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    assert b.password("anna", f"wachtwoord {typed}").status_code == 401
    assert b.enrol("anna", totp_at(clock)).status_code == 200
    assert held_ref in b.get("/clinician/").get_data(as_text=True)
    eml = b.get(f"/clinician/s/{held_ref}/eml")
    asc = b.get(f"/clinician/s/{held_ref}/asc")
    assert eml.status_code == asc.status_code == 200
    assert found_in(gpg_decrypt(keys["alice"], asc.data), typed)
    assert b.post(f"/clinician/s/{held_ref}/processed").status_code == 302

    # now search everywhere
    data_dir = relay.settings.data_dir
    db = relay.store.path
    if relay.store.engine.name == "sqlite":
        assert db.stat().st_size and Path(f"{db}-wal").stat().st_size  # the WAL is searched too
    texts = [logs.text, *(JsonFormatter().format(r) for r in logs.records), *requests.lines]
    blobs = [m.data for m in mails] + [m.mail_from.encode() + repr(m.rcpt_tos).encode()
                                       for m in mails] + [eml.data, asc.data]
    if relay.store.engine.name == "postgresql":  # no file to search: every row of every table
        blobs.append(database_rows(relay.store))
    roots = [data_dir, temp_root()]
    # the test's own config (the options are set there) and its keys may hold them
    allowed = [str(config), "/keys"]
    found = leaks_of(everything, roots=roots, texts=texts, blobs=blobs, since=since)
    assert kept_out(found, allowed) == {}, kept_out(found, allowed)
    # the audit log (NEN 7513) saw it all, each event with its fields, never content
    rows = relay.store.audit.rows()
    assert {"received", "queued", "sent", "deleted", "copy issued", "copy mail sent",
            "copy opened", "downloaded", "login", "user created",
            "user changed"} <= {r["action"] for r in rows}
    assert ("login", "failed") in {(r["action"], r["outcome"]) for r in rows}
    for r in rows:
        assert isinstance(r["id"], int) and r["outcome"] in ("ok", "failed", "refused", "retry")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r["at"])  # UTC
        assert r["actor"] in ("patient", "system", "operator", "unknown") or \
            r["actor"].startswith("user:"), r
        if r["actor"] == "patient" or r["action"] in ("login", "downloaded"):
            assert r["ip"] == "127.0.0.1", r  # the access point
        if r["action"] in ("received", "sent", "deleted", "downloaded") or \
                r["action"].startswith("copy"):
            assert r["reference"] in (ref, held_ref) and r["form_id"] in ("intake", "held"), r
    # the patient's address: only on the mail to it (the test SMTP server logs its
    # traffic as "mail.log": not formrelay's log)
    ours = [r for r in logs.records if not r.name.startswith("mail.log")]
    texts = [*(r.getMessage() for r in ours), *(JsonFormatter().format(r) for r in ours),
             *requests.lines]
    others = [m.data for m in mails if m is not link_mail]
    found = leaks_of([address], roots=roots, texts=texts, blobs=[*others, eml.data, asc.data],
                     since=since)
    assert kept_out(found, allowed) == {}, kept_out(found, allowed)


def test_canary_is_nowhere_on_the_upload_and_answer_paths(
        keys: dict[str, TestKey], tls: TlsFiles, tmp_path: Path,
        logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19's paths: the patient asks for an upload link on the thank-you page and
    sends documents through it, once without JavaScript (encrypted on the server) and
    once as the browser does (ciphertext chunks); a clinician downloads them and writes
    an answer with a file, the patient reads both with the reply code and replies. The
    reply code (also printed in the encrypted copy PDF) is a canary too. The canaries (in
    the documents, a document's name, the answer and the reply) are then in no database
    file or WAL, data folder, temp file, log line, request line or mail."""
    from .conftest import encode_multipart
    from .helpers.answers import post_answer
    from .helpers.replies import read
    from .helpers.uploads import encrypt_binary, send_file

    cheap_hashing(monkeypatch)
    since = start_clock()
    in_form, in_file, in_name, in_chunks, in_answer, in_reply, in_answer_file = (
        canary() for _ in range(7))
    address = f"canary-{secrets.token_hex(8)}@example.nl"
    clock = Clock()
    with smtp_server(tls) as (smtp, port):
        cfg = make_config_dict(tmp_path / "data", keys, delivery="hold", replies=True,
                               upload_link=True, patient_copy=True,
                               smtp=smtp_config(tls, port), fields=[
                                   {"name": "name", "type": "text", "label": "Naam",
                                    "required": True},
                                   {"name": "email", "type": "email", "label": "E-mail"}])
        config = write_config(tmp_path / "config.toml", cfg)
        app = create_app(config, environ=ENV, clock=clock)
        requests = RequestLines(app.wsgi_app)
        app.wsgi_app = requests  # type: ignore[method-assign]
        client = app.test_client()
        relay = app.extensions["formrelay"]

        def deliver() -> list[Any]:
            outbox.deliver_pending(relay.settings, relay.store, kinds=services.mail_kinds())
            return list(smtp.messages)

        # with a copy: its PDF prints the reply code (the copy is stored encrypted)
        sent = post_form(client, {"name": f"Naam {in_form}", "email": address, "_copy": "1"})
        page = sent.get_data(as_text=True)
        assert sent.status_code == 200, page
        ref = re.search(r'id="reference">([^<]+)<', page)
        code = re.search(r'id="reply-code">([^<]+)<', page)
        offer = re.search(r'name="offer" value="([^"]+)"', page)
        assert ref and code and offer, page
        reference = ref.group(1)
        asked = client.post("/u/ask", data={"offer": offer.group(1), "email": address})
        assert asked.status_code == 200, asked.get_data(as_text=True)
        bodies = [m.parsed().get_body(("plain",)).get_content() for m in deliver()
                  if m.rcpt_tos == [address]]  # the copy's link, and the upload link
        [body] = [b for b in bodies if "/u/" in b]
        link = re.search(r"http://localhost(/u/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+))", body)
        assert link, body
        token = link.group(2)
        # without JavaScript: an ordinary multipart post, encrypted on the server
        pdf = f"%PDF-1.4 verwijsbrief {in_file}\n".encode()
        form = encode_multipart({"files": [(io.BytesIO(pdf), f"brief-{in_name}.pdf",
                                            "application/pdf")]})
        plain = client.post(f"/u/{token}?lang=en", data=form,
                            content_type="multipart/form-data; boundary=frtestboundary")
        assert plain.status_code == 200 and "Received: 1 file(s)" in plain.get_data(
            as_text=True)
        # as the browser does: encrypted there, sent in chunks, then done
        chunked = b"%PDF-1.7\n" + f"foto {in_chunks}\n".encode() * 40_000  # > 1 MB
        send_file(client, token, encrypt_binary(app, chunked, [keys["alice"].fingerprint]))
        assert client.post(f"/u/{token}/done").status_code == 200

        # the clinician downloads both documents, and answers
        add_user(tmp_path, "anna", "--recipient", "alice")
        b = Browser(app)
        assert b.enrol("anna", totp_at(clock)).status_code == 200
        docs = b.get(f"/clinician/uploads/?reference={reference}").get_data(as_text=True)
        ids = re.findall(r'<tr id="upload-([^"]+)">', docs)
        assert len(ids) == 2, docs
        opened = [gpg_decrypt(keys["alice"], b.get(f"/clinician/uploads/{i}").data)
                  for i in ids]
        assert any(found_in(o, in_file) for o in opened)
        assert any(found_in(o, in_chunks) for o in opened)
        # the answer with a file, encrypted by the server (the way without JavaScript)
        answer_file = f"%PDF-1.4 uitslag {in_answer_file}\n".encode()
        written = post_answer(b, reference, f"Het antwoord {in_answer}\nGroet, dr. Jansen",
                              [("uitslag.pdf", answer_file)])
        assert written.status_code == 302, written.get_data(as_text=True)
        mails = deliver()
        # the patient reads the answer with the code, and replies to it
        shown = read(client, reference, code.group(1))
        assert shown.status_code == 200 and in_answer in shown.get_data(as_text=True)
        got = client.post("/r/file?lang=en", data={"reference": reference,
                                                    "code": code.group(1), "n": "0"})
        assert got.status_code == 200 and got.data == answer_file
        replied = client.post("/r/reply?lang=en", data={
            "reference": reference, "code": code.group(1), "reply": f"Dank u {in_reply}"})
        assert replied.status_code == 200, replied.get_data(as_text=True)
        mails = deliver()
    assert all(m.tls for m in mails)

    data_dir = relay.settings.data_dir
    db = relay.store.path
    if relay.store.engine.name == "sqlite":
        assert db.stat().st_size and Path(f"{db}-wal").stat().st_size  # the WAL is searched too
    texts = [logs.text, *(JsonFormatter().format(r) for r in logs.records), *requests.lines]
    blobs = [m.data for m in mails]
    if relay.store.engine.name == "postgresql":
        blobs.append(database_rows(relay.store))
    # the reply code, as shown and as typed without its dashes, is a canary too
    everything = [in_form, in_file, in_name, in_chunks, in_answer, in_reply, in_answer_file,
                  code.group(1), code.group(1).replace("-", "")]
    found = leaks_of(everything, roots=[data_dir, temp_root()], texts=texts, blobs=blobs,
                     since=since)
    allowed = [str(config), "/keys"]
    assert kept_out(found, allowed) == {}, kept_out(found, allowed)
