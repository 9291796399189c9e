"""Invitation links (issue 18.1): `formrelay users invite` mails a one-time, expiring
link through the TLS-only outbox; opening it, the clinician chooses a password and goes
on to the authenticator app. Used, expired, unknown and withdrawn links get a clear page
and an audit row; the link's secret is never stored in clear."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from formrelay import create_app, services
from formrelay.mail import outbox

from .area import PASSWORD, Browser, Clock, add_user, audit, cheap_hashing, cli_run, totp_at
from .conftest import ENV, write_config
from .helpers.practices import two_practices
from .keys import TestKey
from .smtpd import TlsFiles, smtp_config, smtp_server

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

BASE = "https://forms.praktijk.test"


@pytest.fixture(autouse=True)
def _cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def invite(tmp_path: Path, *extra: str, name: str = "anna") -> str:
    result = cli_run(tmp_path, "users", "invite", name, "--email", f"{name}@praktijk.test",
                     "--recipient", "alice", *extra)
    assert result.exit_code == 0, result.output
    return result.output


def mailed_link(app: Flask, server_messages: list, n: int = -1) -> str:  # type: ignore[type-arg]
    relay = app.extensions["formrelay"]
    result = outbox.deliver_pending(relay.settings, relay.store, kinds=services.mail_kinds())
    assert result.sent == 1, (result, relay.store.audit.rows()[-3:])
    body = server_messages[n].parsed().get_content()
    return re.search(r"https://\S+/clinician/invite/\S+", body).group(0)  # type: ignore[union-attr]


def test_invitation_mail_link_password_totp_and_login(
        make_app: Callable[..., Flask], tls: TlsFiles, tmp_path: Path) -> None:
    clock = Clock()
    with smtp_server(tls) as (server, port):
        app = make_app(clock=clock, smtp=smtp_config(tls, port), server={"base_url": BASE})
        out = invite(tmp_path)
        assert "queued for anna@praktijk.test" in out and "/invite/" not in out
        clock.advance(seconds=5)  # the CLI queued it on the real clock, a moment later
        link = mailed_link(app, server.messages)
    [mail] = server.messages
    assert mail.tls and mail.rcpt_tos == ["anna@praktijk.test"]
    assert "uitnodiging" in mail.parsed()["Subject"]
    token = link.rsplit("/", 1)[1]
    store = app.extensions["formrelay"].store
    # the secret is nowhere in the database: the row has its hash, the sent mail nothing
    dump = "\n".join(str(r) for t in ("invitations", "outbox", "audit", "users")
                     for r in store.conn.execute(f"SELECT * FROM {t}"))  # noqa: S608
    assert token not in dump

    b = Browser(app)
    page = b.get(link.removeprefix(BASE)).get_data(as_text=True)
    assert "anna" in page and "Nieuw wachtwoord" in page
    # the account cannot log in before the link was used
    assert b.password("anna").status_code == 401
    r = b.post(link.removeprefix(BASE), {"password": PASSWORD, "repeat": PASSWORD})
    assert r.status_code == 302 and r.headers["Location"].endswith("/clinician/enrol")
    page = b.get("/clinician/enrol").get_data(as_text=True)
    secret = re.search(r'<code id="secret">([^<]+)</code>', page).group(1).replace(" ", "")  # type: ignore[union-attr]
    r = b.post("/clinician/enrol", {"code": totp_at(clock)(secret)})
    assert "recovery-codes" in r.get_data(as_text=True)
    assert b.get("/clinician/").status_code == 200
    [used] = audit(app, "invitation", "ok")
    assert used["actor"] == "user:anna" and "password chosen" in used["detail"]
    [made] = audit(app, "user invited")
    assert made["actor"] == "operator" and "mailed" in made["detail"]

    # the same link again: a clear page, nothing changes, audited
    again = Browser(app, ip="127.0.0.9")
    r = again.get(link.removeprefix(BASE))
    assert r.status_code == 410
    assert "verlopen of al gebruikt" in r.get_data(as_text=True)
    assert "Nieuw wachtwoord" not in r.get_data(as_text=True)
    refused = audit(app, "invitation", "refused")
    assert [x["detail"] for x in refused] == ["used before"]
    assert refused[0]["ip"] == "127.0.0.9"


@pytest.mark.parametrize("case", ["expired", "disabled", "unknown", "reinvited"])
def test_unusable_links_are_refused_and_audited(make_app: Callable[..., Flask],
                                                tmp_path: Path, case: str) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"base_url": BASE}, smtp={
        "from_address": "forms@praktijk.test"})  # no relay: the CLI prints the link
    out = invite(tmp_path, "--days", "2")
    link = re.search(r"https://\S+", out).group(0)  # type: ignore[union-attr]
    path = link.removeprefix(BASE)
    expect = "verlopen of al gebruikt"
    if case == "expired":
        clock.advance(days=2, minutes=1)  # the CLI used the real clock
        why = "expired on"
    elif case == "disabled":
        assert cli_run(tmp_path, "users", "disable", "anna").exit_code == 0
        why, expect = "account disabled", "ingetrokken"
    elif case == "unknown":
        path = path[:-4] + "AAAA"
        why = "unknown link"
    else:  # a second invitation: the first link stops working
        invite(tmp_path)
        why = "used before"
    b = Browser(app)
    r = b.get(path)
    assert r.status_code == 410 and expect in r.get_data(as_text=True)
    b.get("/clinician/login")  # a CSRF token: the refusal page has no form
    r = b.post(path, {"password": PASSWORD, "repeat": PASSWORD})
    assert r.status_code == 410
    assert b.password("anna").status_code == 401  # no password was set
    details = [x["detail"] for x in audit(app, "invitation", "refused")]
    assert details and all(d.startswith(why) for d in details[-1:]), details


def test_bad_password_keeps_the_link_usable(make_app: Callable[..., Flask],
                                            tmp_path: Path) -> None:
    app = make_app(server={"base_url": BASE}, smtp={"from_address": "forms@praktijk.test"})
    path = re.search(r"https://\S+", invite(tmp_path)).group(0).removeprefix(BASE)  # type: ignore[union-attr]
    b = Browser(app)
    b.get(path)
    r = b.post(path, {"password": "kort", "repeat": "kort"})
    assert r.status_code == 400 and "minstens 12 tekens" in r.get_data(as_text=True)
    r = b.post(path, {"password": PASSWORD, "repeat": PASSWORD + "x"})
    assert r.status_code == 400 and "niet gelijk" in r.get_data(as_text=True)
    r = b.post(path, {"password": PASSWORD, "repeat": PASSWORD})
    assert r.status_code == 302
    assert audit(app, "invitation", "refused") == []


def test_invite_needs_an_address_and_refuses_an_account_that_logged_in(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"base_url": BASE},
                   smtp={"from_address": "forms@praktijk.test"})
    result = cli_run(tmp_path, "users", "invite", "anna", "--email", "nope",
                     "--recipient", "alice")
    assert result.exit_code == 1 and "not an e-mail address" in result.output
    add_user(tmp_path, "bram", "--recipient", "alice")
    Browser(app).enrol("bram", totp_at(clock))
    result = cli_run(tmp_path, "users", "invite", "bram", "--email", "bram@praktijk.test")
    assert result.exit_code == 1 and "logged in already" in result.output
    assert audit(app, "user invited") == []


def test_a_link_of_a_practice_removed_since_is_refused(tmp_path: Path,
                                                       keys: dict[str, TestKey]) -> None:
    cfg = two_practices(tmp_path, keys)
    cfg["server"]["base_url"] = BASE
    cfg["smtp"] = {"from_address": "forms@praktijk.test"}
    write_config(tmp_path / "config.toml", cfg)
    out = cli_run(tmp_path, "users", "invite", "bram", "--email", "bram@noord.test",
                  "--practice", "noord", "--recipient", "bob").output
    path = re.search(r"https://\S+", out).group(0).removeprefix(BASE)  # type: ignore[union-attr]
    del cfg["practices"]  # the practice leaves this server (a reload or a restart)
    app = create_app(write_config(tmp_path / "config.toml", cfg), environ=ENV)
    app.testing = True
    r = Browser(app).get(path)
    assert r.status_code == 410 and "ingetrokken" in r.get_data(as_text=True)
    [refused] = audit(app, "invitation", "refused")
    assert refused["detail"] == "practice noord no longer configured"
