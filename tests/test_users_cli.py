"""`formrelay users`: clear refusals for bad input (nothing stored), generated passwords,
reset to a new authenticator, and every change in the audit log."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pyotp
import pytest
from flask import Flask

from .area import PASSWORD, Browser, Clock, add_user, audit, cheap_hashing, cli_run, totp_at


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


@pytest.mark.parametrize(("args", "password", "message"), [
    (["anna"], PASSWORD, "at least one --recipient or --form"),
    (["anna", "--recipient", "dr-nobody"], PASSWORD, "unknown recipient 'dr-nobody'"),
    (["anna", "--form", "elders"], PASSWORD, "unknown form 'elders'; configured: intake"),
    (["anna", "--recipient", "alice"], "kort", "too short: use at least 12"),
    (["anna", "--recipient", "alice"], "anna-is-de-beste", "must not contain the user name"),
    (["system", "--recipient", "alice"], PASSWORD, "not a usable user name"),
    (["Anna Smit", "--recipient", "alice"], PASSWORD, "not a usable user name"),
    (["anna", "--recipient", "alice", "--email", "geen-adres"], PASSWORD, "not an e-mail"),
])
def test_bad_input_is_refused_and_nothing_stored(make_app: Callable[..., Flask], tmp_path: Path,
                                                 args: list[str], password: str,
                                                 message: str) -> None:
    app = make_app()
    r = cli_run(tmp_path, "users", "add", *args, input=f"{password}\n{password}\n")
    assert r.exit_code == 1 and message in r.output, r.output
    assert cli_run(tmp_path, "users", "list").output == ""
    assert not audit(app, "user created")


def test_add_twice_and_unknown_users(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    make_app()
    add_user(tmp_path, "anna", "--recipient", "alice")
    r = cli_run(tmp_path, "users", "add", "anna", "--form", "intake",
                input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 1 and "exists already" in r.output
    for command in ("reset", "disable", "enable", "remove"):
        r = cli_run(tmp_path, "users", command, "bert", input="x\n")
        assert r.exit_code == 1 and "no user 'bert'; existing users: anna" in r.output


def test_generated_password_list_and_reset(make_app: Callable[..., Flask],
                                           tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    r = cli_run(tmp_path, "users", "add", "anna", "--form", "intake", "--email",
                "anna@praktijk.test", "--generate-password")
    assert r.exit_code == 0
    password = re.search(r"password \(shown once[^)]*\): (\S+)", r.output).group(1)  # type: ignore[union-attr]
    listed = cli_run(tmp_path, "users", "list").output
    assert "anna" in listed and "TOTP not set up yet" in listed and "forms intake" in listed
    b = Browser(app)
    b.enrol("anna", totp_at(clock), password=password)
    assert b.get("/clinician/").status_code == 200
    assert "active" in cli_run(tmp_path, "users", "list").output
    b.get("/clinician/account/")
    b.post("/clinician/account/tokens", {"name": "x"})

    r = cli_run(tmp_path, "users", "reset", "anna", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert b.get("/clinician/").status_code == 302  # sessions ended
    assert b.password("anna", password).status_code == 401  # old password gone
    clock.advance(seconds=30)
    r = b.password("anna")
    assert r.headers["Location"].endswith("/clinician/enrol")  # a new authenticator
    store = app.extensions["formrelay"].store
    assert all(t["revoked_at"] for t in store.clinicians.tokens(1))
    old_code = pyotp.TOTP(b.secret).at(clock.now)
    b.get("/clinician/enrol")
    assert b.post("/clinician/enrol", {"code": old_code}).status_code == 401
    details = [r["detail"] for r in audit(app, "user changed")]
    assert any("password reset" in d and "API tokens revoked" in d for d in details)
    assert audit(app, "user created")[0]["actor"] == "operator"


def test_change_password_and_new_recovery_codes(make_app: Callable[..., Flask],
                                                tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    b.get("/clinician/account/")
    r = b.post("/clinician/account/password", {"old": "fout", "new": "x" * 12,
                                               "repeat": "x" * 12})
    assert r.status_code == 400 and "klopt niet" in r.get_data(as_text=True)
    r = b.post("/clinician/account/password", {"old": PASSWORD, "new": "kort", "repeat": "kort"})
    assert r.status_code == 400 and "minstens 12 tekens" in r.get_data(as_text=True)
    new = "een heel nieuw wachtwoord"
    r = b.post("/clinician/account/password", {"old": PASSWORD, "new": new, "repeat": new})
    assert r.status_code == 302
    page = b.post("/clinician/account/recovery-codes").get_data(as_text=True)
    codes = re.findall(r"<li><code>([a-z0-9-]{19})</code></li>", page)
    assert len(codes) == 10 and not set(codes) & set(b.recovery)
    b.post("/clinician/logout")
    assert b.login("anna", b.recovery[0], password=new).status_code == 401  # old codes
    assert b.login("anna", codes[0], password=new).status_code == 302
