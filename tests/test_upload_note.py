"""The clinician's short note with an "ask for documents" link (issue 19): typed in the
browser or given to `formrelay uploads invite --note`, shown on the upload page and in
the mail, sealed at rest; too long or with control characters it is refused and
nothing is queued."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from formrelay.uploads.links import MAX_NOTE

from .area import Browser, Clock, add_user, cheap_hashing, cli_run, totp_at
from .conftest import ON_POSTGRES, post_form
from .helpers.copies import smtp_cfg
from .helpers.uploads import deliver, link_in
from .smtpd import TlsFiles, smtp_server

NOTE = "Graag de brief van de dermatoloog – Anna"


def _link_kinds(app: Any) -> list[str]:
    return [m["kind"] for m in app.extensions["formrelay"].store.outbox.rows()
            if m["kind"] == "upload_link"]


def test_note_from_the_browser_and_the_cli_reaches_page_and_mail(
        make_app: Any, tmp_path: Path, tls: TlsFiles, monkeypatch: Any) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    with smtp_server(tls) as (smtp, port):
        app = make_app(smtp=smtp_cfg(tls, port), clock=clock)
        client = app.test_client()
        r = post_form(client, {"name": "Jan", "complaint": "Knie", "consent": "y"})
        ref = re.search(r'id="reference">([^<]+)<', r.get_data(as_text=True))
        assert ref
        add_user(tmp_path, "anna", "--recipient", "alice")
        b = Browser(app)
        b.enrol("anna", totp_at(clock))
        form = b.get("/clinician/uploads/").get_data(as_text=True)
        assert 'name="note"' in form and f'maxlength="{MAX_NOTE}"' in form
        assert "gezondheidsgegevens" in form  # the page says what the note is not for
        r = b.post("/clinician/uploads/invite", {"reference": ref.group(1),
                                                 "email": "zoe@example.nl", "note": NOTE})
        assert r.status_code == 302, r.get_data(as_text=True)
        res = cli_run(tmp_path, "uploads", "invite", "--practice", "default", "--email",
                      "new@example.nl", "--lang", "en", "--note", "Bring your letter")
        assert res.exit_code == 0, res.output
        clock.now += timedelta(minutes=1)  # the CLI's mail is due by the real clock
        deliver(app)
        mails = {m.rcpt_tos[0]: m.parsed().get_body(("plain",)).get_content()
                 for m in smtp.messages}
    assert f"Een notitie van de praktijk: {NOTE}" in mails["zoe@example.nl"]
    assert "A note from the practice: Bring your letter" in mails["new@example.nl"]
    page = client.get(link_in(mails["zoe@example.nl"])).get_data(as_text=True)
    assert re.search(rf'id="note">[^<]*{re.escape(NOTE)}', page), page
    page = client.get(link_in(mails["new@example.nl"])).get_data(as_text=True)
    assert 'id="note">A note from the practice: Bring your letter' in page
    # at rest the note is sealed, like the outbox's payloads
    if not ON_POSTGRES:
        db = app.extensions["formrelay"].settings.data_dir / "formrelay.db"
        with sqlite3.connect(db) as conn:
            sealed = [r[0] for r in conn.execute("SELECT note_sealed FROM upload_links")]
        assert all(s.startswith("sealed:v1:") for s in sealed) and len(sealed) == 2
        assert NOTE.encode() not in db.read_bytes()


def test_link_without_a_note_shows_none(make_app: Any, tls: TlsFiles) -> None:
    with smtp_server(tls) as (smtp, port):
        app = make_app(smtp=smtp_cfg(tls, port))
        from .helpers.uploads import links_of
        links_of(app).for_practice("default", "zoe@example.nl", "nl", actor="operator")
        deliver(app)
        [mail] = [m for m in smtp.messages if m.rcpt_tos == ["zoe@example.nl"]]
    body = mail.parsed().get_body(("plain",)).get_content()
    assert "notitie" not in body
    assert 'id="note"' not in app.test_client().get(link_in(body)).get_data(as_text=True)


@pytest.mark.parametrize(("note", "message"), [
    ("x" * (MAX_NOTE + 1), f"keep it to {MAX_NOTE}"),
    ("first line\nSubject: spoofed", "without control characters"),
    ("tab\there", "without control characters"),
    ("bidi \u202etxt.exe", "without control characters"),
    ("escape \x1b[31m", "without control characters"),
])
def test_bad_notes_are_refused_and_nothing_is_queued(
        make_app: Any, tmp_path: Path, monkeypatch: Any, note: str, message: str) -> None:
    cheap_hashing(monkeypatch)
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    r = b.post("/clinician/uploads/invite", {"reference": "", "email": "zoe@example.nl",
                                             "lang": "en", "note": note})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and 'id="ask-error"' in html, html
    assert message in html
    assert 'value="zoe@example.nl"' in html  # what was typed is kept for correcting
    res = cli_run(tmp_path, "uploads", "invite", "--practice", "default", "--email",
                  "zoe@example.nl", "--lang", "en", "--note", note)
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output
    assert _link_kinds(app) == []
    assert app.extensions["formrelay"].store.uploads.links_of("FR-AAAA-AAAA") == []
