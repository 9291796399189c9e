"""Scripted download: an API token made on the account page (shown once, revocable) lists
and fetches held ciphertexts as JSON / .asc / .eml; nothing else is reachable with it."""

from __future__ import annotations

import re
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from flask import Flask

from .area import Browser, Clock, add_user, answers, audit, cheap_hashing, totp_at
from .conftest import post_form, valid_answers
from .keys import TestKey, gpg_decrypt, rnp_decrypt

API = "/clinician/api/submissions"

@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def test_api_token_lists_and_fetches_held_ciphertexts(make_app: Callable[..., Flask],
                                                      tmp_path: Path,
                                                      keys: dict[str, TestKey]) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    add_user(tmp_path, "anna", "--recipient", "alice")
    ref = post_form(app.test_client(), valid_answers("api"), json_answer=True).get_json()[
        "reference"]
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    b.get("/clinician/account/")
    page = b.post("/clinician/account/tokens", {"name": "HIS koppeling"}).get_data(as_text=True)
    token = re.search(r'<code id="new-token">(fr_[^<]+)</code>', page).group(1)  # type: ignore[union-attr]
    again = b.get("/clinician/account/").get_data(as_text=True)
    assert token not in again and "HIS koppeling" in again and token[:7] in again
    store = app.extensions["formrelay"].store
    assert token not in str(store.clinicians.tokens(1))  # only a hash is stored

    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    r = api.get(API, headers=auth, base_url="https://localhost")
    assert r.status_code == 200 and "Set-Cookie" not in r.headers
    [item] = r.get_json()["submissions"]
    assert item["reference"] == ref and item["form"] == "intake" and item["size"] > 0
    asc = api.get(f"{API}/{ref}", headers=auth, base_url="https://localhost")
    assert asc.status_code == 200 and asc.mimetype == "application/pgp-encrypted"
    eml = api.get(f"{API}/{ref}?format=eml", headers=auth, base_url="https://localhost")
    armour = message_from_bytes(eml.data, policy=policy.default).get_payload()[1]  # type: ignore[index]
    for blob in (asc.data, armour.get_payload(decode=True)):
        for decrypt in (gpg_decrypt, rnp_decrypt):
            assert answers(decrypt(keys["alice"], blob))["answers"]["name"] == \
                "Jeroen Brünhilde api"
    downloads = audit(app, "downloaded", "ok")
    assert [d["detail"] for d in downloads] == ["asc via API token #1", "eml via API token #1"]
    assert api.get(API, headers=auth, base_url="https://localhost").get_json()[
        "submissions"][0]["downloads"][0]["by"] == "user:anna"

    # read-only: no route deletes; a post is not allowed
    assert api.post(f"{API}/{ref}", headers=auth, base_url="https://localhost").status_code \
        == 405
    # revoked: refused from now on
    b.get("/clinician/account/")
    b.post("/clinician/account/tokens/1/revoke")
    r = api.get(API, headers=auth, base_url="https://localhost")
    assert r.status_code == 401 and r.get_json()["ok"] is False
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_refuses_missing_wrong_and_foreign(make_app: Callable[..., Flask],
                                               tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"login_max_failures_ip": 3})
    add_user(tmp_path, "anna", "--recipient", "alice")
    ref = post_form(app.test_client(), valid_answers(), json_answer=True).get_json()[
        "reference"]
    api = app.test_client()
    for headers in ({}, {"Authorization": "Bearer fr_guessed"}, {"Authorization": "Basic eA=="}):
        r = api.get(f"{API}/{ref}", headers=headers, base_url="https://localhost")
        assert r.status_code == 401 and r.get_json()["error"].startswith("A valid API token")
    r = api.get(API, headers={"Authorization": "Bearer fr_x"}, base_url="https://localhost")
    assert r.status_code == 429  # this address is paused
    # three failures in one minute: counted, the first audited; the pause writes nothing
    assert len(audit(app, "api access", "failed")) == 1
    assert not audit(app, "api access", "refused")
    assert [r["count"] for r in app.extensions["formrelay"].store.refusals.counts()] == [3]
    assert api.get(API, base_url="http://forms.praktijk.test").status_code == 403

    # a token of someone without this form cannot fetch it
    accounts = app.extensions["formrelay"].accounts
    other = accounts.add("bram", "een ander lang wachtwoord", forms=[], recipients=["alice"])
    store = app.extensions["formrelay"].store
    store.clinicians.update(other.id, recipients="[]", forms='["elders"]')
    token = accounts.new_token(accounts.require("bram"), "x", "127.0.0.1")
    other_api = app.test_client()
    r = other_api.get(f"{API}/{ref}", headers={"Authorization": f"Bearer {token}"},
                      base_url="https://localhost", environ_base={"REMOTE_ADDR": "192.0.2.8"})
    assert r.status_code == 404 and r.get_json()["ok"] is False
    listed = other_api.get(API, headers={"Authorization": f"Bearer {token}"},
                           base_url="https://localhost", environ_base={"REMOTE_ADDR": "192.0.2.8"})
    assert listed.get_json()["submissions"] == []
    [refused] = audit(app, "downloaded", "refused")
    assert refused["actor"] == "user:bram" and refused["reference"] == ref
