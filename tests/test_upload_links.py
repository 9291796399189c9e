"""Upload links (issue 19, part 1): asked for on the thank-you page or sent by the
practice with `formrelay uploads invite`, mailed through the TLS-only outbox with no
health data, bound to one practice and its recipients, expiring."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from formrelay.uploads.links import LinkRefused, LinkState, UploadLinks

from .area import cli_run
from .canary import leaks
from .conftest import canary, post_form
from .helpers.copies import Clock, smtp_cfg
from .helpers.uploads import deliver, link_in, links_of, submit
from .smtpd import TlsFiles, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def test_thank_you_page_sends_a_content_free_link_once(make_app: Any, tls: TlsFiles,
                                                       tmp_path: Path, logs: Any) -> None:
    mark = canary()
    with smtp_server(tls) as (smtp, port):
        app = make_app(upload_link=True, smtp=smtp_cfg(tls, port))
        client = app.test_client()
        reference, offer = submit(client, mark)
        r = client.post("/u/ask", data={"offer": offer, "email": "zoe@example.nl",
                                        "_lang": "en"})
        html = r.get_data(as_text=True)
        assert r.status_code == 200, html
        assert "zoe@example.nl" in html and "Check your e-mail" in html
        # asking again sends nothing more
        again = client.post("/u/ask", data={"offer": offer, "email": "other@example.nl"})
        assert again.status_code == 200 and "already" in again.get_data(as_text=True) or \
            "al een link" in again.get_data(as_text=True)
        deliver(app)
        mails = [m for m in smtp.messages if m.rcpt_tos != ["alice@praktijk.test"]]
        all_mail = [m.data for m in smtp.messages]
    assert len(mails) == 1 and mails[0].rcpt_tos == ["zoe@example.nl"] and mails[0].tls
    mail = mails[0].parsed()
    body = mail.get_body(("plain",)).get_content()
    assert "Praktijk Test" in body and "020 555 0101" in body
    assert str(mail["Subject"]) == "Send documents to Praktijk Test"
    assert "Intake" not in body and reference not in body and not list(mail.iter_attachments())
    link = link_in(body)
    assert not leaks(mark, blobs=all_mail)
    store = app.extensions["formrelay"].store
    row = store.uploads.links_of(reference)[0]
    keys = app.extensions["formrelay"].settings.recipients
    assert row["practice"] == "default" and row["recipients"] == [keys["alice"].fingerprint]
    assert row["form_id"] == "intake" and row["asked_by"] == "patient"
    # the database keeps neither the link's secret nor the address once sent
    secret = link.rsplit(".", 1)[1]
    texts = [r.getMessage() for r in logs.records if not r.name.startswith("mail.log")]
    data_dir = app.extensions["formrelay"].settings.data_dir
    assert not leaks(secret, roots=[data_dir], texts=texts)
    assert not leaks("zoe@example.nl", roots=[data_dir], texts=texts)
    opened = links_of(app).open(link.removeprefix("/u/"))
    assert opened.reference == reference and opened.recipients == (keys["alice"].fingerprint,)
    actions = [a["action"] for a in store.audit.rows(reference)]
    assert "upload link sent" in actions and "upload mail sent" in actions


def test_offer_only_where_the_form_has_it_and_not_forged(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    r = post_form(client, {"name": "Jan", "complaint": "Knie", "consent": "y"})
    assert 'name="offer"' not in r.get_data(as_text=True)
    for offer in ("", "FR-AAAAAAAA", "eyJ4IjoxfQ.forged.sig"):
        refused = client.post("/u/ask", data={"offer": offer, "email": "zoe@example.nl"})
        assert refused.status_code == 404
        assert "020 555 0101" in refused.get_data(as_text=True)
    # a genuine token for a form without upload_link is refused the same way
    from formrelay.web.uploads import offer_token

    with app.test_request_context():
        ref = re.search(r'id="reference">([^<]+)<', r.get_data(as_text=True))
        assert ref
        token = offer_token(ref.group(1))
    assert client.post("/u/ask", data={"offer": token, "email": "a@b.nl"}).status_code == 404
    assert app.extensions["formrelay"].store.uploads.links_of(ref.group(1)) == []


def test_bad_addresses_are_refused_and_nothing_is_queued(make_app: Any) -> None:
    app = make_app(upload_link=True)
    client = app.test_client()
    reference, offer = submit(client, canary())
    store = app.extensions["formrelay"].store
    for bad in ("", "not-an-address", "=?utf-8?q?a?=@example.nl",
                "zoe@example.nl\r\nBcc: x@evil.test", "zoe\u202e@example.nl"):
        r = client.post("/u/ask", data={"offer": offer, "email": bad, "_lang": "en"})
        html = r.get_data(as_text=True)
        assert r.status_code == 400, bad
        assert 'role="alert"' in html and "e-mail" in html
        assert 'name="offer"' in html  # the patient can try again
    assert store.uploads.links_of(reference) == []
    assert [m for m in store.outbox.rows() if m["kind"] == "upload_link"] == []


def test_link_expires_after_the_setting_and_forged_links_learn_nothing(make_app: Any) -> None:
    clock = Clock()
    app = make_app(upload_link=True, clock=clock, server={"upload_expiry_days": 3})
    links = links_of(app, clock)
    made = links.for_practice("default", "zoe@example.nl", "nl", actor="operator")
    token = made.link.rsplit("/u/", 1)[1]
    assert made.expires_at == clock.now + timedelta(days=3)
    assert links.open(token).reference == made.reference
    link_id, secret = token.split(".")
    for forged in (f"{link_id}.{'A' * len(secret)}", f"{'B' * len(link_id)}.{secret}", "x",
                   token + "A"):
        try:
            links.open(forged)
            raise AssertionError(f"{forged} opened")
        except LinkRefused as exc:
            assert exc.state == LinkState.ALTERED and exc.practice == ""
    clock.now += timedelta(days=3)
    try:
        links.open(token)
        raise AssertionError("expired link opened")
    except LinkRefused as exc:
        assert exc.state == LinkState.EXPIRED
    store = app.extensions["formrelay"].store
    assert "upload expired" in [a["action"] for a in store.audit.rows(made.reference)]


def test_cli_invites_for_a_submission_and_for_a_new_patient(make_app: Any, tmp_path: Path,
                                                            tls: TlsFiles) -> None:
    with smtp_server(tls) as (smtp, port):
        app = make_app(smtp=smtp_cfg(tls, port))
        client = app.test_client()
        r = post_form(client, {"name": "Jan", "complaint": "Knie", "consent": "y"})
        ref = re.search(r'id="reference">([^<]+)<', r.get_data(as_text=True))
        assert ref
        reference = ref.group(1)
        res = cli_run(tmp_path, "uploads", "invite", "--reference", reference.lower(),
                      "--email", "zoe@example.nl")
        assert res.exit_code == 0, res.output
        assert reference in res.output and "/u/" not in res.output  # never the link itself
        res = cli_run(tmp_path, "uploads", "invite", "--practice", "default", "--email",
                      "new@example.nl", "--lang", "en")
        assert res.exit_code == 0, res.output
        new_ref = re.search(r"reference (FR-[A-Z0-9-]+),", res.output)
        assert new_ref and new_ref.group(1) != reference
        deliver(app)
        to = sorted(m.rcpt_tos[0] for m in smtp.messages if "praktijk" not in m.rcpt_tos[0])
    assert to == ["new@example.nl", "zoe@example.nl"]
    store = app.extensions["formrelay"].store
    assert store.uploads.links_of(reference)[0]["asked_by"] == "operator"
    fresh = store.uploads.links_of(new_ref.group(1))[0]
    assert fresh["form_id"] == "" and fresh["practice"] == "default" and fresh["lang"] == "en"


def test_cli_refuses_unknown_reference_practice_and_bad_address(make_app: Any,
                                                                tmp_path: Path) -> None:
    app = make_app()
    store = app.extensions["formrelay"].store
    cases = [(["--reference", "FR-AAAAAAAA", "--email", "a@example.nl"], "No submission"),
             (["--practice", "nope", "--email", "a@example.nl"], "No practice nope"),
             (["--practice", "default", "--email", "=?utf-8?q?x?=@example.nl",
              "--lang", "en"], "cannot be used"),
             (["--email", "a@example.nl"], "either --reference or --practice")]
    for args, message in cases:
        res = cli_run(tmp_path, "uploads", "invite", *args)
        assert res.exit_code != 0 and message in res.output, res.output
        assert "Traceback" not in res.output
    assert [m for m in store.outbox.rows() if m["kind"] == "upload_link"] == []


def test_a_practice_may_set_its_own_session_limit(tmp_path: Path,
                                                  keys: dict[str, Any]) -> None:
    from formrelay.config import load_config
    from formrelay.localtime import utcnow
    from formrelay.store import Store

    from .conftest import ENV, make_config_dict, write_config

    cfg = make_config_dict(tmp_path / "data", keys, server={"upload_limit_mb": 100})
    cfg["practices"] = {"noord": {"name": "Praktijk Noord", "phone": "050 765 4321",
                                  "upload_limit_mb": 5}}
    settings = load_config(write_config(tmp_path / "config.toml", cfg), ENV)
    store = Store(tmp_path / "x.db")
    try:
        links = UploadLinks(settings, store, utcnow)
        assert links.limit_bytes("noord") == 5 * 1024 * 1024
        assert links.limit_bytes("default") == 100 * 1024 * 1024
    finally:
        store.close()
