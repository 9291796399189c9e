"""Hold for download, the whole way through HTTP: account by CLI, first login with TOTP
enrolment, the notification mail on a real SMTP server, the inbox, .eml and .asc that
GnuPG and RNP decrypt, "mark processed", gone. Then every refusal, each audited."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pyotp
import pytest
from flask import Flask

from formrelay import create_app, services
from formrelay.localtime import shown
from formrelay.mail import outbox

from .area import (
    COOKIE,
    PASSWORD,
    Browser,
    Clock,
    add_user,
    answers,
    audit,
    cheap_hashing,
    cli_run,
    totp_at,
)
from .canary import leaks
from .conftest import ENV, canary, make_config_dict, post_form, valid_answers, write_config
from .keys import TestKey, gpg_decrypt, rnp_decrypt
from .smtpd import TlsFiles, smtp_config, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


@pytest.fixture(autouse=True)
def _cheap_hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.name != "test_the_whole_hold_flow":  # that one keeps the real cost
        cheap_hashing(monkeypatch)


def submit(app: Flask, mark: str = "", form_id: str = "intake",
           origin: str = "http://localhost") -> str:
    r = post_form(app.test_client(), valid_answers(mark), json_answer=True, form_id=form_id,
                  headers={"Origin": origin})
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["reference"])


def test_the_whole_hold_flow(make_app: Callable[..., Flask], tls: TlsFiles, tmp_path: Path,
                             keys: dict[str, TestKey]) -> None:
    clock = Clock()
    with smtp_server(tls) as (server, port):
        app = make_app(clock=clock, smtp=smtp_config(tls, port),
                       server={"base_url": "https://forms.praktijk.test"})
        added = add_user(tmp_path, "anna", "--recipient", "alice", "--email",
                         "anna@praktijk.test")
        assert "sees forms: intake" in added.output
        mark = canary()
        ref = submit(app, mark, origin="https://forms.praktijk.test")
        relay = app.extensions["formrelay"]
        kinds = services.mail_kinds()
        assert outbox.deliver_pending(relay.settings, relay.store, kinds=kinds).sent == 1

    [mail] = server.messages
    assert mail.tls and mail.rcpt_tos == ["alice@praktijk.test"]
    note = mail.parsed()
    body = note.get_content()
    assert "Praktijk Test" in note["Subject"]
    for expected in ("Praktijk Test", "Intake fysiotherapie", ref,
                     shown(clock.now), "https://forms.praktijk.test/clinician/"):
        assert expected in body, expected
    assert leaks(mark, blobs=[mail.data]) == []
    for private in ("Jeroen", "Brünhilde", "knie", "Naam", "Klacht"):
        assert private not in mail.data.decode("utf-8", "replace")

    # First login: password, then the authenticator is set up from the QR page.
    b = Browser(app)
    r = b.enrol("anna", totp_at(clock))
    assert r.status_code == 200 and len(b.recovery) == 10
    inbox = b.get("/clinician/").get_data(as_text=True)
    assert ref in inbox and "Intake fysiotherapie" in inbox and "nog niet" in inbox

    eml = b.get(f"/clinician/s/{ref}/eml")
    assert eml.status_code == 200 and eml.mimetype == "message/rfc822"
    assert f'filename="{ref}.eml"' in eml.headers["Content-Disposition"]
    outer = message_from_bytes(eml.data, policy=policy.default)
    assert isinstance(outer, EmailMessage)
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    assert leaks(mark, blobs=[eml.data]) == []
    version, encrypted = outer.get_payload()  # type: ignore[misc]
    assert version.get_payload().strip() == "Version: 1"
    armour = encrypted.get_payload(decode=True)
    asc = b.get(f"/clinician/s/{ref}/asc")
    assert asc.status_code == 200 and asc.data.startswith(b"-----BEGIN PGP MESSAGE-----")
    assert asc.headers["Content-Disposition"] == f'attachment; filename="{ref}.asc"'
    for blob in (armour, asc.data):
        for decrypt in (gpg_decrypt, rnp_decrypt):
            got = answers(decrypt(keys["alice"], blob))
            assert got["answers"]["name"] == f"Jeroen Brünhilde {mark}"
            assert got["reference"] == ref

    inbox = b.get("/clinician/").get_data(as_text=True)
    assert f"anna ({shown(clock.now)})" in inbox  # by whom, when (practice time, CET/CEST)

    confirm = b.get(f"/clinician/s/{ref}/processed")
    assert confirm.status_code == 200 and "verwijder" in confirm.get_data(as_text=True).lower()
    r = b.post(f"/clinician/s/{ref}/processed")
    assert r.status_code == 302
    inbox = b.get("/clinician/").get_data(as_text=True)
    assert f'id="row-{ref}"' not in inbox and "verwerkt" in inbox
    assert b.get(f"/clinician/s/{ref}/asc").status_code == 404
    with pytest.raises(KeyError):
        relay.store.submissions.ciphertext(ref)

    history = cli_run(tmp_path, "audit", "export", "--reference", ref)
    assert history.exit_code == 0
    for line in ("received", "queued", "sent", "downloaded", "deleted", "user:anna"):
        assert line in history.output, history.output
    assert "verified, unchanged" in history.output and mark not in history.output
    assert cli_run(tmp_path, "audit", "verify").exit_code == 0


def test_session_cookie_and_new_id_at_login(make_app: Callable[..., Flask],
                                            tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    r = b.get("/clinician/login")
    header = r.headers["Set-Cookie"]
    assert header.startswith(f"{COOKIE}=")
    for attr in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in header
    assert "Domain" not in header
    before = b.cookie()
    b.post("/clinician/login", {"username": "anna", "password": PASSWORD})
    after_password = b.cookie()
    page = b.get("/clinician/enrol").get_data(as_text=True)
    assert '<img class="qr" src="data:image/svg+xml' in page  # no script: CSP img-src data:
    code = pyotp.TOTP(page.split('<code id="secret">')[1].split("<")[0].replace(" ", ""))
    b.post("/clinician/enrol", {"code": code.at(clock.now)})
    after_login = b.cookie()
    assert len({before, after_password, after_login}) == 3
    # the id from before the login is worth nothing now
    old = Browser(app)
    old.client.set_cookie(COOKIE, str(before), domain="localhost", path="/")
    assert old.get("/clinician/").status_code == 302
    # logout: the session is gone server-side; replaying its cookie does not work
    assert b.get("/clinician/").status_code == 200
    b.post("/clinician/logout")
    replay = Browser(app)
    replay.client.set_cookie(COOKIE, str(after_login), domain="localhost", path="/")
    assert replay.get("/clinician/").status_code == 302
    assert audit(app, "logout")


def test_wrong_password_and_wrong_or_reused_totp(make_app: Callable[..., Flask],
                                                 tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    r = b.password("anna", "verkeerd wachtwoord!")
    assert r.status_code == 401 and "Onjuiste gebruikersnaam of wachtwoord" in r.get_data(
        as_text=True)
    r = b.password("niemand", PASSWORD)
    assert r.status_code == 401 and "Onjuiste gebruikersnaam of wachtwoord" in r.get_data(
        as_text=True)
    assert b.get("/clinician/").status_code == 302
    failed = [row["detail"] for row in audit(app, "login", "failed")]
    assert failed[0] == "wrong password" and "unknown user" in failed[1]
    # a typed unknown name (often a password typed in the wrong box) is never stored
    r = b.password("MijnGeheim2026!", PASSWORD)
    assert r.status_code == 401
    rows = audit(app, "login", "failed")
    assert not any("mijngeheim2026" in (row["detail"] + row["actor"]).lower() for row in rows)
    assert rows[-1]["detail"].startswith("unknown user (name tag ")

    b.enrol("anna", totp_at(clock))
    b.post("/clinician/logout")
    clock.advance(seconds=30)
    code = pyotp.TOTP(b.secret).at(clock.now)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = b.login("anna", wrong)
    assert r.status_code == 401 and "Deze code is niet geldig" in r.get_data(as_text=True)
    assert b.get("/clinician/").status_code == 302
    r = b.post("/clinician/login/code", {"code": code})
    assert r.status_code == 302 and b.get("/clinician/").status_code == 200
    b.post("/clinician/logout")
    r = b.login("anna", code)  # the same code again, still inside its 30 seconds
    assert r.status_code == 401 and b.get("/clinician/").status_code == 302
    reasons = [row["detail"] for row in audit(app, "login", "failed")]
    assert "wrong TOTP code" in reasons and "TOTP code used before" in reasons
    # a recovery code works once instead
    r = b.login("anna", b.recovery[0])
    assert r.status_code == 302 and b.get("/clinician/").status_code == 200
    b.post("/clinician/logout")
    assert b.login("anna", b.recovery[0]).status_code == 401
    ok = [row["detail"] for row in audit(app, "login", "ok")]
    assert any(d.startswith("recovery code (9 left)") for d in ok)


def test_logins_are_limited_per_account_and_per_address(make_app: Callable[..., Flask],
                                                        tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"login_max_failures": 3, "login_max_failures_ip": 5})
    add_user(tmp_path, "anna", "--recipient", "alice")
    add_user(tmp_path, "bert", "--recipient", "alice")
    attacker = Browser(app, ip="203.0.113.9")
    for _ in range(3):
        assert attacker.password("anna", "niet het wachtwoord").status_code == 401
    # the account is paused: even the right password, even from another address
    r = Browser(app, ip="198.51.100.7").password("anna")
    assert r.status_code == 429 and "Wacht 15 minuten" in r.get_data(as_text=True)
    for _ in range(2):
        assert attacker.password("bert", "ook niet goed").status_code == 401
    # the address is paused, for every account
    assert attacker.password("bert").status_code == 429
    assert Browser(app, ip="198.51.100.7").password("bert").status_code == 302
    # a paused account or address is refused without writing anything (a flood must not
    # grow the audit log); the failures that paused it are there
    assert not any(r["detail"] == "too many failed attempts"
                   for r in audit(app, "login", "failed"))
    assert len(audit(app, "login", "failed")) == 5
    clock.advance(minutes=16)
    assert Browser(app, ip="198.51.100.7").password("anna").status_code == 302


def test_sessions_expire_when_idle_and_after_eight_hours(make_app: Callable[..., Flask],
                                                         tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    clock.advance(minutes=14)
    assert b.get("/clinician/").status_code == 200
    clock.advance(minutes=16)
    r = b.get("/clinician/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/clinician/login")
    assert "Uw sessie is beëindigd" in b.get("/clinician/login").get_data(as_text=True)
    [expired] = audit(app, "session expired")
    assert expired["actor"] == "user:anna" and expired["detail"].startswith("idle")

    clock.advance(seconds=60)
    b.login("anna", pyotp.TOTP(b.secret).at(clock.now))
    for _ in range(8 * 6 + 1):  # busy all day: a request every 10 minutes
        clock.advance(minutes=10)
        if b.get("/clinician/").status_code != 200:
            break
    assert b.get("/clinician/").status_code == 302
    assert audit(app, "session expired")[-1]["detail"].startswith("too old")


def test_csrf_token_is_required_on_every_post(make_app: Callable[..., Flask],
                                              tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    ref = submit(app)
    b = Browser(app)
    b.get("/clinician/login")
    r = b.post("/clinician/login", {"username": "anna", "password": PASSWORD}, csrf=False)
    assert r.status_code == 400 and b.cookie() is not None
    b.enrol("anna", totp_at(clock))
    for path in (f"/clinician/s/{ref}/processed", "/clinician/logout",
                 "/clinician/account/tokens"):
        assert b.post(path, csrf=False).status_code == 400
        assert b.post(path, {"csrf_token": "forged"}, csrf=False).status_code == 400
    r = b.post(f"/clinician/s/{ref}/processed", headers={"Origin": "https://evil.example"})
    assert r.status_code == 400
    assert app.extensions["formrelay"].store.submissions.get(ref)["status"] == "held"
    assert b.get("/clinician/").status_code == 200  # still logged in
    refused = audit(app, "request", "refused")
    assert len(refused) == 8 and "CSRF" in refused[0]["detail"]
    assert refused[-1]["actor"] == "user:anna" and "foreign origin" in refused[-1]["detail"]


def test_another_practices_reference_cannot_be_read_listed_or_deleted(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    clock = Clock()
    # a second form, of another practitioner, on the same service
    cfg = make_config_dict(tmp_path / "data", keys, extra_recipients=("bob",))
    cfg["forms"]["contact"] = {"title": "Contact", "recipients": ["bob"], "delivery": "hold",
                               "fields": [{"name": "vraag", "type": "text", "label": "Vraag"}]}
    app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV, clock=clock)
    app.testing = True
    add_user(tmp_path, "anna", "--recipient", "alice")
    add_user(tmp_path, "bram", "--form", "contact")
    mine = submit(app)
    r = post_form(app.test_client(), {"vraag": "Wanneer open?"}, json_answer=True,
                  form_id="contact")
    theirs = r.get_json()["reference"]

    bram = Browser(app, ip="192.0.2.44")
    bram.enrol("bram", totp_at(clock))
    inbox = bram.get("/clinician/").get_data(as_text=True)
    assert theirs in inbox and mine not in inbox
    for attempt in (f"/clinician/s/{mine}/asc", f"/clinician/s/{mine}/eml",
                    f"/clinician/s/{mine}/processed", "/clinician/s/FR-2222-2222/asc"):
        r = bram.get(attempt)
        assert r.status_code == 404, attempt
    assert bram.post(f"/clinician/s/{mine}/processed").status_code == 404
    store = app.extensions["formrelay"].store
    assert store.submissions.get(mine)["status"] == "held" and store.submissions.ciphertext(mine)
    refused = audit(app, "downloaded", "refused") + audit(app, "deleted", "refused")
    assert len(refused) == 5
    assert all(r["actor"] == "user:bram" and r["ip"] == "192.0.2.44" for r in refused)
    assert {r["reference"] for r in refused} == {mine, "FR-2222-2222"}
    assert "not one of the user's forms" in refused[0]["detail"]
    # not-found and not-yours answer the same
    a = bram.get(f"/clinician/s/{mine}/asc").get_data(as_text=True)
    b = bram.get("/clinician/s/FR-3333-3333/asc").get_data(as_text=True)
    assert a == b


# words for whoever runs formrelay, never for clinicians (their hints go to the log)
OPERATOR_WORDS = ("README", "server.", "trusted_proxies", "GnuPG", "config", "proxy", "TOML")


def test_http_without_tls_is_refused(make_app: Callable[..., Flask], tmp_path: Path,
                                     logs: pytest.LogCaptureFixture) -> None:
    app = make_app()
    r = Browser(app, base="http://forms.praktijk.test").get("/clinician/login")
    page = r.get_data(as_text=True)
    assert r.status_code == 403 and "beveiligde verbinding" in page and "https://" in page
    assert not [w for w in OPERATOR_WORDS if w in page]
    assert "Set-Cookie" not in r.headers
    # the operator's fix is in the log
    assert "set server.trusted_proxies" in logs.text and "/clinician/login" in logs.text


def test_clinician_pages_speak_plain_language(make_app: Callable[..., Flask],
                                               tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    submit(app)
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    for path, shows in (("/clinician/", "Download een formulier als .eml"),
                        ("/clinician/account/", "Met een token")):
        r = b.get(path)
        page = r.get_data(as_text=True)
        assert r.status_code == 200 and shows in page, path
        assert not [w for w in OPERATOR_WORDS if w in page], path


def test_behind_the_tls_proxy(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(server={"trusted_proxies": 1})
    b = Browser(app, base="http://forms.praktijk.test")
    r = b.get("/clinician/login", headers={"X-Forwarded-Proto": "https",
                                           "X-Forwarded-For": "203.0.113.5"})
    assert r.status_code == 200 and COOKIE in r.headers["Set-Cookie"]
    r = b.post("/clinician/login", {"username": "x", "password": "y"},
               headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"})
    assert r.status_code == 401
    assert audit(app, "login", "failed")[-1]["ip"] == "203.0.113.5"


def test_disabled_and_removed_users(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    assert cli_run(tmp_path, "users", "disable", "anna").exit_code == 0
    assert b.get("/clinician/").status_code == 302  # session ended
    assert b.password("anna").status_code == 401
    assert cli_run(tmp_path, "users", "enable", "anna").exit_code == 0
    assert b.password("anna").status_code == 302
    assert cli_run(tmp_path, "users", "remove", "anna", "--yes").exit_code == 0
    assert b.password("anna").status_code == 401
    actions = [r["detail"] for r in audit(app, "user changed")]
    assert "user:anna: disabled" in actions[-2] and "enabled" in actions[-1]
    assert audit(app, "user removed")[0]["actor"] == "operator"
    assert app.extensions["formrelay"].store.conn.execute(
        "SELECT COUNT(*) FROM sessions WHERE user_id IS NOT NULL").fetchone()[0] == 0


def _db_bytes(app: Flask) -> bytes:
    db = app.extensions["formrelay"].store.path
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
                    if p.exists())


@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_totp_secret_is_sealed_at_rest(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.password("anna")
    page = b.get("/clinician/enrol").get_data(as_text=True)
    offered = page.split('<code id="secret">')[1].split("<")[0].replace(" ", "")
    assert len(offered) == 32
    # the secret offered waits in the session, which lives in the database: sealed
    assert offered.encode() not in _db_bytes(app)
    again = b.get("/clinician/enrol").get_data(as_text=True)
    assert again.split('<code id="secret">')[1].split("<")[0].replace(" ", "") == offered
    r = b.post("/clinician/enrol", {"code": pyotp.TOTP(offered).at(clock.now)})
    assert r.status_code == 200 and b.get("/clinician/").status_code == 200
    data = _db_bytes(app)
    assert offered.encode() not in data and offered.lower().encode() not in data
    row = app.extensions["formrelay"].store.clinicians.get(username="anna")
    assert row["totp_secret"].startswith("sealed:v1:")
    assert row["password_hash"].startswith("$argon2id$")  # and the password only hashed
    b.post("/clinician/logout")
    clock.advance(seconds=30)
    assert b.login("anna", pyotp.TOTP(offered).at(clock.now)).status_code == 302
    assert b.get("/clinician/").status_code == 200
    # sealed to its account: copied into another user's row it opens nothing
    add_user(tmp_path, "bert", "--recipient", "alice")
    with sqlite3.connect(app.extensions["formrelay"].store.path) as con:
        con.execute("UPDATE users SET totp_secret = ? WHERE username = 'bert'",
                    (row["totp_secret"],))
    con.close()
    clock.advance(seconds=30)
    assert Browser(app).login("bert", pyotp.TOTP(offered).at(clock.now)).status_code == 401
    assert audit(app, "login", "failed")[-1]["detail"] == "TOTP secret cannot be opened"


@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_totp_secret_stored_in_clear_by_an_older_version_is_sealed(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    b.post("/clinician/logout")
    db = app.extensions["formrelay"].store.path
    with sqlite3.connect(db) as con:  # what an older version wrote
        con.execute("UPDATE users SET totp_secret = ? WHERE username = 'anna'", (b.secret,))
    con.close()
    assert b.secret.encode() in _db_bytes(app)
    app.extensions["formrelay"].store.close()
    again = create_app(tmp_path / "config.toml", environ=ENV, clock=clock)  # start-up
    assert again.extensions["formrelay"].store.clinicians.get(
        username="anna")["totp_secret"].startswith("sealed:v1:")
    assert b.secret.encode() not in _db_bytes(again)
    clock.advance(seconds=30)
    b2 = Browser(again)
    assert b2.login("anna", pyotp.TOTP(b.secret).at(clock.now)).status_code == 302
    assert b2.get("/clinician/").status_code == 200


def test_changed_secret_key_refuses_totp_but_recovery_codes_work(
        make_app: Callable[..., Flask], tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    other = {**ENV, "FORMRELAY_SECRET_KEY": "another-secret-" + "y" * 40}
    moved = create_app(tmp_path / "config.toml", environ=other, clock=clock)
    clock.advance(seconds=30)
    b2 = Browser(moved)
    r = b2.login("anna", pyotp.TOTP(b.secret).at(clock.now))
    assert r.status_code == 401  # refused calmly, no 500
    failed = [row["detail"] for row in audit(moved, "login", "failed")]
    assert "TOTP secret cannot be opened" in failed
    assert any("formrelay users reset anna" in r.getMessage() for r in logs.records
               if r.levelname == "ERROR")
    assert b2.post("/clinician/login/code", {"code": b.recovery[0]}).status_code == 302
    assert b2.get("/clinician/").status_code == 200


def _session_rows(app: Flask) -> int:
    store = app.extensions["formrelay"].store
    return int(store.conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])


def test_no_session_row_before_the_password(make_app: Callable[..., Flask],
                                            tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    for i in range(50):  # anonymous visitors, each with its own cookie jar
        r = Browser(app, ip=f"192.0.2.{i + 1}").get("/clinician/login")
        assert r.status_code == 200 and COOKIE in r.headers["Set-Cookie"]
    b = Browser(app)
    for _ in range(3):
        b.get("/clinician/login?lang=en")
        b.get("/clinician/")
    assert b.password("anna", "verkeerd wachtwoord!").status_code == 401
    assert b.post("/clinician/login", {"username": "x", "password": "y"},
                  csrf=False).status_code == 400
    assert _session_rows(app) == 0
    # the login form's CSRF token works without a row; the full login then makes one
    b.enrol("anna", totp_at(clock))
    assert b.get("/clinician/").status_code == 200 and _session_rows(app) == 1
    b.post("/clinician/logout")
    assert _session_rows(app) == 0
    clock.advance(seconds=30)
    assert b.login("anna", pyotp.TOTP(b.secret).at(clock.now)).status_code == 302
    assert b.get("/clinician/").status_code == 200 and _session_rows(app) == 1


def test_login_form_open_too_long_is_refused_without_a_row(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.get("/clinician/login")
    clock.advance(minutes=16)  # the pre-login state is as short-lived as an idle session
    r = b.post("/clinician/login", {"username": "anna", "password": PASSWORD})
    assert r.status_code == 400 and "laad de pagina opnieuw" in r.get_data(as_text=True)
    assert _session_rows(app) == 0
    assert b.password("anna").status_code == 302 and _session_rows(app) == 1
