"""An assistant (issue 18.6, in part): invited with `--role assistant`, sees the held
submissions of their forms, notes who handles each and marks them processed, but is
refused every fetch of content (download, the reader's ciphertext, the API), audited."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from formrelay import create_app

from .area import PASSWORD, Browser, Clock, audit, cheap_hashing, cli_run, totp_at
from .conftest import ENV, post_form, valid_answers
from .keys import TestKey
from .reader import reader_config

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

BASE = "https://forms.praktijk.test"


@pytest.fixture(autouse=True)
def _cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def assistant(app: Flask, tmp_path: Path, clock: Clock) -> Browser:
    out = cli_run(tmp_path, "users", "invite", "sanne", "--email", "sanne@praktijk.test",
                  "--form", "intake", "--role", "assistant").output
    return accept(app, re.search(r"https://\S+", out).group(0), clock)  # type: ignore[union-attr]


def test_assistant_triages_the_list_but_never_fetches_content(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"base_url": BASE},
                   smtp={"from_address": "forms@praktijk.test"})
    ref = post_form(app.test_client(), valid_answers("assistent"), json_answer=True,
                    headers={"Origin": BASE}).get_json()["reference"]
    b = assistant(app, tmp_path, clock)
    assert "forms intake; sanne@praktijk.test; role assistant" in cli_run(
        tmp_path, "users", "list").output
    html = b.get("/clinician/").get_data(as_text=True)
    assert f'id="row-{ref}"' in html and "Als assistent ziet u de lijst" in html
    assert f"/clinician/s/{ref}/asc" not in html and f"/clinician/read/{ref}" not in html
    assert "Intake fysiotherapie" in html

    for path in (f"/clinician/s/{ref}/asc", f"/clinician/s/{ref}/eml",
                 f"/clinician/read/{ref}"):
        r = b.get(path)
        assert r.status_code == 403, path
        assert "openen of downloaden is voor de lezers" in r.get_data(as_text=True)
        assert b"BEGIN PGP" not in r.get_data()
    b.get("/clinician/account/")
    page = b.post("/clinician/account/tokens", {"name": "script"}).get_data(as_text=True)
    token = re.search(r'<code id="new-token">(fr_[^<]+)</code>', page).group(1)  # type: ignore[union-attr]
    r = app.test_client().get(f"/clinician/api/submissions/{ref}", base_url=BASE,
                              headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and b"BEGIN PGP" not in r.get_data()
    refused = audit(app, "downloaded", "refused") + audit(app, "read", "refused")
    assert len(refused) == 4 and {a["reference"] for a in refused} == {ref}
    assert all(a["actor"] == "user:sanne" for a in refused)

    b.post(f"/clinician/s/{ref}/handler", {"handler": "  dr.  Jansen "})
    assert 'value="dr. Jansen"' in b.get("/clinician/").get_data(as_text=True)
    [noted] = audit(app, "triaged")
    assert noted["reference"] == ref and noted["detail"] == "handler noted"

    b.get(f"/clinician/s/{ref}/processed")
    assert b.post(f"/clinician/s/{ref}/processed").status_code == 302
    assert app.extensions["formrelay"].store.submissions.get(ref)["status"] == "processed"


def test_unknown_role_is_refused(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    make_app(server={"base_url": BASE}, smtp={"from_address": "forms@praktijk.test"})
    result = cli_run(tmp_path, "users", "invite", "sanne", "--email", "s@praktijk.test",
                     "--form", "intake", "--role", "boss")
    assert result.exit_code != 0 and "boss" in result.output


def test_owner_sees_the_members_and_invites_in_the_browser(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    clock = Clock()
    app = create_app(reader_config(tmp_path, keys, BASE), environ=ENV, clock=clock)
    app.testing = True
    out = cli_run(tmp_path, "users", "invite", "olga", "--email", "olga@praktijk.test",
                  "--recipient", "reader", "--role", "owner").output
    owner = accept(app, re.search(r"https://\S+", out).group(0), clock)  # type: ignore[union-attr]
    assert 'id="members-link"' in owner.get("/clinician/account/").get_data(as_text=True)
    html = owner.get("/clinician/members/").get_data(as_text=True)
    assert 'id="member-olga"' in html and "eigenaar" in html and "nog geen" in html

    r = owner.post("/clinician/members/invite", {"username": "sanne", "email":
                                                 "sanne@praktijk.test", "role": "assistant",
                                                 "form": "intake"})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="member-sanne"' in page and "assistent" in page
    link = re.search(r"<code>(https://\S+/clinician/invite/[^<]+)</code>", page).group(1)  # type: ignore[union-attr]
    [made] = [a for a in audit(app, "user invited") if "sanne" in a["detail"]]
    assert made["actor"] == "user:olga" and "(assistant)" in made["detail"]

    # an owner cannot make owners, nor tie a reader to what is not a browser recipient
    for bad in ({"role": "owner", "recipient": "reader"},
                {"role": "reader", "recipient": "alice"}):
        r = owner.post("/clinician/members/invite", {"username": "piet", "email":
                                                     "piet@praktijk.test", **bad})
        assert r.status_code == 400 and "niet gemaakt" in r.get_data(as_text=True)
    assert app.extensions["formrelay"].accounts.get("piet") is None

    # the assistant is not an owner: the page and the invitation are refused
    sanne = accept(app, link, clock, ip="127.0.0.5")
    assert sanne.get("/clinician/members/").status_code == 403
    r = sanne.post("/clinician/members/invite", {"username": "piet", "email":
                                                 "piet@praktijk.test", "role": "assistant",
                                                 "form": "intake"})
    assert r.status_code == 403 and app.extensions["formrelay"].accounts.get("piet") is None


def accept(app: Flask, link: str, clock: Clock, ip: str = "127.0.0.1") -> Browser:
    path = link.removeprefix(BASE)
    b = Browser(app, ip=ip)
    b.get(path)
    assert b.post(path, {"password": PASSWORD, "repeat": PASSWORD}).status_code == 302
    page = b.get("/clinician/enrol").get_data(as_text=True)
    secret = re.search(r'<code id="secret">([^<]+)</code>', page).group(1).replace(" ", "")  # type: ignore[union-attr]
    b.post("/clinician/enrol", {"code": totp_at(clock)(secret)})
    return b
