"""The PGP/MIME mail as the relay receives it, and what happens when the relay misbehaves.

A real aiosmtpd server on 127.0.0.1 (tests/smtpd.py) with STARTTLS and a certificate
made for the test; real gpg and rnp decrypt what arrived.
"""

from __future__ import annotations

import io
import json
import os
import ssl
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from flask import Flask

from formrelay import services
from formrelay.cli import cli
from formrelay.intake import payload
from formrelay.mail import outbox, reminders, transport
from formrelay.mail.kinds import tell_operator

from .conftest import ENV, HEALTH_AUTH, canary, post_form
from .helpers.mail import FIELDS, OPERATOR, Clock, attachment, deliver, mail_app, store_of, submit
from .keys import TestKey, gpg_decrypt, rnp_decrypt
from .smtpd import HOST, Recorder, TlsFiles, free_port, smtp_config, smtp_server

PDF = b"%PDF-1.7\n" + os.urandom(300_000) + b"\n.\n.leading dot line\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(50_000)


def test_submission_arrives_as_rfc3156_pgp_mime(make_app: Callable[..., Flask], tls: TlsFiles,
                                                keys: dict[str, TestKey]) -> None:
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port)
        mark = canary()
        ref = submit(app, mark, verwijsbrief=(PDF, "verwijzing dr. Ünal.pdf"),
                     knie_foto=(PNG, "knie-foto.png"))
        stored = store_of(app).submissions.ciphertext(ref)
        result = deliver(app)
    assert (result.sent, result.deferred, result.failed) == (1, 0, 0)
    [got] = server.messages
    assert got.tls and got.mail_from == "formulieren@praktijk.test"
    assert got.rcpt_tos == ["alice@praktijk.test"]

    outer = got.parsed()
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    assert outer["MIME-Version"] == "1.0"
    version, encrypted = outer.get_payload()  # exactly two parts
    assert version.get_content_type() == "application/pgp-encrypted"
    assert version.get_payload().strip() == "Version: 1"
    assert encrypted.get_content_type() == "application/octet-stream"
    assert encrypted["Content-Transfer-Encoding"] == "7bit"
    armour = encrypted.get_payload(decode=True)
    assert armour.replace(b"\r\n", b"\n") == stored  # the stored ciphertext, not re-encoded

    assert outer["Subject"] == f"Versleuteld formulier {ref}"
    assert outer["From"] == "formulieren@praktijk.test"
    assert outer["To"] == "alice@praktijk.test"
    assert outer["Message-ID"] == payload.message_id(ref, "localhost") \
        == f"<{ref.lower()}@localhost>"
    assert outer["Date"].datetime.tzinfo is not None
    raw = got.data.decode("ascii")  # the whole outer message is 7-bit
    assert ref in raw and mark not in raw
    outside = raw.replace(armour.decode("ascii"), "")  # (random base64 may spell "knie")
    assert len(outside) < 2000
    for secret in ("Brünhilde", "Brunhilde", "Jeroen", "knie", "Intake fysiotherapie",
                   *(f["name"] for f in FIELDS), *(f["label"] for f in FIELDS)):
        assert secret.lower() not in outside.lower(), secret

    for decrypt in (gpg_decrypt, rnp_decrypt):
        inner = message_from_bytes(decrypt(keys["alice"], armour), policy=policy.default)
        assert isinstance(inner, EmailMessage)
        assert inner.get_param("protected-headers") == "v1"
        assert inner["Subject"] == f"Intake fysiotherapie - {ref}"
        text = next(p for p in inner.walk() if p.get_content_type() == "text/plain")
        body = text.get_content()
        assert "Pijn in de knie 🦵, ça va" in body and mark in body and ref in body
        answers = json.loads(attachment(inner, "answers.json"))
        assert answers["answers"]["volledige_naam"] == f"Jeroen Brünhilde {mark}"
        assert attachment(inner, "verwijzing dr Ünal.pdf") == PDF
        assert attachment(inner, "knie-foto.png") == PNG

    # Delivered: the ciphertext is gone, the metadata and the audit trail stay.
    store = store_of(app)
    assert store.submissions.get(ref)["status"] == "sent"
    with pytest.raises(KeyError):
        store.submissions.ciphertext(ref)
    actions = [(r["action"], r["outcome"]) for r in store.audit.rows(ref)]
    for expected in (("received", "ok"), ("queued", "ok"), ("sent", "ok"), ("deleted", "ok")):
        assert expected in actions
    assert all(mark not in json.dumps(r) for r in store.audit.rows())


def test_implicit_tls_and_file_sink(make_app: Callable[..., Flask], tls: TlsFiles,
                                    tmp_path: Path, keys: dict[str, TestKey]) -> None:
    with smtp_server(tls, mode="tls") as (server, port):
        app = mail_app(make_app, tls, port, smtp=smtp_config(tls, port, security="tls"))
        ref = submit(app)
        assert deliver(app).sent == 1
    assert server.messages[0].tls
    assert server.messages[0].parsed()["Message-ID"] == f"<{ref.lower()}@localhost>"

    sink = tmp_path / "sink"
    app = make_app(delivery="email", fields=FIELDS,
                   smtp={"from_address": "formulieren@praktijk.test", "sink_dir": str(sink)})
    ref = submit(app)
    assert deliver(app).sent == 1
    eml = (sink / f"{ref}.eml").read_bytes()
    msg = message_from_bytes(eml, policy=policy.default)
    assert msg.get_content_type() == "multipart/encrypted"
    inner = gpg_decrypt(keys["alice"], msg.get_payload()[1].get_payload(decode=True))
    assert b"protected-headers" in inner
    assert [p.name for p in sink.iterdir()] == [f"{ref}.eml"]  # no half-written leftovers


@pytest.mark.parametrize(("mode", "trusted", "error"), [
    ("plain", True, "relay does not offer STARTTLS"),
    ("starttls", False, "relay certificate not trusted"),
])
def test_no_tls_means_nothing_sent_and_the_operator_is_told(
        make_app: Callable[..., Flask], tls: TlsFiles, tmp_path: Path,
        logs: pytest.LogCaptureFixture, mode: str, trusted: bool, error: str) -> None:
    with smtp_server(tls, mode=mode, trusted=trusted) as (server, port):
        app = mail_app(make_app, tls, port)
        ref = submit(app)
        result = deliver(app)
        assert (result.sent, result.deferred) == (0, 1)
        assert "MAIL" not in server.commands and server.messages == []
        store = store_of(app)
        assert store.submissions.get(ref)["status"] == "queued"
        assert store.submissions.ciphertext(ref).startswith(b"-----BEGIN PGP MESSAGE-----")
        [row] = store.outbox.rows()
        assert row["status"] == "queued" and row["error_class"] == error
        # told: the log, `formrelay check`, /healthz and `formrelay outbox`
        assert any(error in r.getMessage() and r.levelname == "ERROR" for r in logs.records)
        runner = CliRunner()
        config = ["--config", str(tmp_path / "config.toml")]
        checked = runner.invoke(cli, [*config, "check"], env=ENV)
        assert checked.exit_code == 2 and error in checked.output, checked.output
        health = app.test_client().get("/healthz", headers=HEALTH_AUTH).get_json()
        assert error in json.dumps(health)
        listed = runner.invoke(cli, [*config, "outbox"], env=ENV)
        assert ref in listed.output and error in listed.output and "next try" in listed.output
        # and it stays that way: no plaintext fallback on later passes either
        store.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
        assert deliver(app).sent == 0
        assert "MAIL" not in server.commands


def test_relay_offering_only_tls_1_1_gets_nothing(make_app: Callable[..., Flask],
                                                  tls: TlsFiles) -> None:
    """TLS 1.2 at least: a relay that speaks only TLS 1.1 (allowed on its side) gets no
    mail; it stays queued."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        old.load_cert_chain(str(tls.cert), str(tls.key))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    handler, port = Recorder(), free_port()
    controller = Controller(handler, hostname=HOST, port=port, tls_context=old,
                            require_starttls=True)
    controller.start()
    try:
        app = mail_app(make_app, tls, port)
        ref = submit(app)
        result = deliver(app)
    finally:
        controller.stop()
    assert (result.sent, result.deferred) == (0, 1)
    assert "MAIL" not in handler.commands and handler.messages == []
    store = store_of(app)
    [row] = store.outbox.rows()
    assert row["status"] == "queued" and row["error_class"] == "TLS handshake failed"
    assert store.submissions.get(ref)["status"] == "queued"
    settings = app.extensions["formrelay"].settings
    assert transport.tls_context(settings).minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(("stage", "reply"), [
    ("rcpt", "550 5.1.1 <alice@praktijk.test>: Recipient address rejected"),
    ("data", "554 5.6.0 Message rejected"),
])
def test_permanent_refusal_fails_reports_and_is_not_retried(
        make_app: Callable[..., Flask], tls: TlsFiles, tmp_path: Path, stage: str,
        reply: str) -> None:
    clock = Clock()
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port, clock=clock)
        ref = submit(app)
        refuse = server.rcpt_reply if stage == "rcpt" else server.data_reply
        refuse["alice@praktijk.test"] = reply
        result = deliver(app)
        assert (result.failed, result.sent) == (1, 1)  # the operator's mail went through
        store = store_of(app)
        assert store.submissions.get(ref)["status"] == "failed"
        assert store.submissions.ciphertext(ref)  # kept, for a retry or `formrelay ciphertext`
        [failed] = store.outbox.rows(("failed",))
        assert failed["attempts"] == 1 and reply[:3] in failed["error"]
        assert ("failed", "failed") in [(r["action"], r["outcome"])
                                        for r in store.audit.rows(ref)]
        [told] = server.messages
        assert told.rcpt_tos == [OPERATOR]
        note = told.parsed()
        assert ref in note["Subject"] and reply[:9] in note.get_content()
        assert "alice@" not in told.data.decode()  # the relay's free text is not passed on
        # days later: still not retried
        for _ in range(3):
            clock.advance(days=2)
            deliver(app)
        assert [m.rcpt_tos for m in server.messages] == [[OPERATOR]]
        assert store.outbox.rows(("failed",))[0]["attempts"] == 1
        # the operator fixes it and queues it again
        refuse.clear()
        runner = CliRunner()
        config = ["--config", str(tmp_path / "config.toml")]
        listed = runner.invoke(cli, [*config, "outbox"], env=ENV)
        assert listed.exit_code == 1 and ref in listed.output and "failed" in listed.output
        assert runner.invoke(cli, [*config, "outbox", "--retry", ref], env=ENV).exit_code == 0
        assert deliver(app).sent == 1
        assert store.submissions.get(ref)["status"] == "sent"
        assert server.messages[-1].rcpt_tos == ["alice@praktijk.test"]


def test_temporary_refusal_backs_off_then_delivers(make_app: Callable[..., Flask],
                                                   tls: TlsFiles) -> None:
    clock = Clock()
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port, clock=clock, smtp={
            **smtp_config(tls, port), "retry_seconds": 60, "retry_max_minutes": 30})
        ref = submit(app)
        server.rcpt_reply["alice@praktijk.test"] = "451 4.3.0 try again later"
        waits = []
        for _ in range(7):
            assert deliver(app).deferred == 1
            [row] = store_of(app).outbox.rows()
            waits.append(round((datetime.fromisoformat(row["next_attempt_at"]) - clock.now)
                               .total_seconds()))
            assert deliver(app).deferred == 0  # not due yet: not tried again
            clock.advance(seconds=waits[-1])
        assert waits == [60, 120, 240, 480, 960, 1800, 1800]
        assert server.messages == []
        server.rcpt_reply.clear()
        assert deliver(app).sent == 1
        assert [m.parsed()["Message-ID"] for m in server.messages] == [f"<{ref.lower()}@localhost>"]


def test_oversize_is_refused_at_the_form_or_held(make_app: Callable[..., Flask], tls: TlsFiles,
                                                 tmp_path: Path) -> None:
    big = b"%PDF-1.7\n" + os.urandom(1_200_000)
    app = mail_app(make_app, tls, 1, smtp={**smtp_config(tls, 1), "max_message_mb": 1})
    client = app.test_client()
    base = {"volledige_naam": "Jan", "klachtomschrijving": "pijn"}
    r = post_form(client, {**base, "verwijsbrief": (io.BytesIO(big), "scan.pdf")})
    assert r.status_code == 413
    html = r.get_data(as_text=True)
    assert "te groot om per e-mail te versturen (hoogstens 1 MB)" in html
    assert 'id="e-verwijsbrief"' in html and "Jan" in html  # the answers are kept
    r = post_form(client, {**base, "verwijsbrief": (io.BytesIO(big), "scan.pdf"),
                           "_lang": "en"}, json_answer=True)
    assert r.status_code == 413 and "too large to send by e-mail" in r.get_json()["error"]
    store = store_of(app)
    assert store.submissions.rows() == [] and store.outbox.rows(("queued", "failed", "sent")) == []
    assert list(app.extensions["formrelay"].settings.tmp_dir.iterdir()) == []

    app = mail_app(make_app, tls, 1, smtp={**smtp_config(tls, 1), "max_message_mb": 1},
                   oversize="hold")
    r = post_form(app.test_client(), {**base, "verwijsbrief": (io.BytesIO(big), "scan.pdf")},
                  json_answer=True)
    assert r.status_code == 200
    row = store_of(app).submissions.get(r.get_json()["reference"])
    assert (row["delivery"], row["status"]) == ("hold", "held")
    assert [m["kind"] for m in store_of(app).outbox.rows(("queued", "failed", "sent"))
            if m["kind"] == "submission"] == []


def test_key_expiry_reminders_once_each(make_app: Callable[..., Flask], tmp_path: Path,
                                        keys: dict[str, TestKey]) -> None:
    sink = tmp_path / "operator-mail"
    app = make_app(recipients=("soon",), server={"operator_email": OPERATOR},
                   smtp={"from_address": "formulieren@praktijk.test", "sink_dir": str(sink)})
    relay = app.extensions["formrelay"].relay
    statuses = relay.sync_keys()
    expires = statuses["soon"].expires
    sent: list[str] = []
    for days_before in (12, 11.5, 6, 5, 0.5, 0.2, -1, -2):
        now = expires - timedelta(days=days_before)
        sent += reminders.check_key_expiry(relay.settings, relay.store, statuses, now)
    assert sent == ["soon"] * 4  # 30, 7 and 1 days before, and once expired
    kinds = services.mail_kinds()
    assert outbox.deliver_pending(relay.settings, relay.store, kinds=kinds).sent == 4
    mails = [message_from_bytes(p.read_bytes(), policy=policy.default)
             for p in sorted(sink.iterdir())]
    subjects = sorted(str(m["Subject"]) for m in mails)
    assert [m["To"] for m in mails] == [OPERATOR] * 4
    assert sum("expires in 12 days" in s for s in subjects) == 1
    assert sum("expires in 6 days" in s for s in subjects) == 1
    assert sum("expires within a day" in s for s in subjects) == 1
    assert sum("has EXPIRED" in s for s in subjects) == 1
    body = mails[0].get_content()
    assert keys["soon"].fingerprint in body and "formrelay keys import soon" in body


def test_dot_lines_and_non_ascii_survive_smtp(make_app: Callable[..., Flask],
                                              tls: TlsFiles) -> None:
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port)
        relay = app.extensions["formrelay"]
        body = "first\n.\n..two dots\n.leading\nlast é\n"
        assert tell_operator(relay.store, relay.settings, "dots", body)
        assert deliver(app).sent == 1
    assert server.messages[0].parsed().get_content().replace("\r\n", "\n") == body


def test_worker_once_and_outbox_cli(make_app: Callable[..., Flask], tls: TlsFiles,
                                    tmp_path: Path) -> None:
    with smtp_server(tls) as (server, port):
        app = mail_app(make_app, tls, port)
        ref = submit(app)
        runner = CliRunner()
        config = ["--config", str(tmp_path / "config.toml")]
        listed = runner.invoke(cli, [*config, "outbox"], env=ENV)
        assert listed.exit_code == 0, listed.output
        assert f"submission {ref} (form intake): queued" in listed.output
        assert "1 queued, 0 failed" in listed.output
        done = runner.invoke(cli, [*config, "worker", "--once"], env=ENV)
        assert done.exit_code == 0 and "sent 1, deferred 0, failed 0" in done.output
        assert len(server.messages) == 1
        listed = runner.invoke(cli, [*config, "outbox", "--all"], env=ENV)
        assert f"submission {ref} (form intake): sent" in listed.output
        bad = runner.invoke(cli, [*config, "outbox", "--retry", "FR-NOPE-NOPE"], env=ENV)
        assert bad.exit_code == 1 and "no failed mail" in bad.output
