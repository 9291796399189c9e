"""Protection of the public form without cookies: token, honeypot, origin, rate limits.

Each refusal is checked the way a patient (or a bot) meets it: the answer on screen (or
the JSON body), what happens to what they typed, and that nothing was stored.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from formrelay.intake.tokens import FormTokens

from .conftest import SECRET, encode_multipart, form_token, valid_answers
from .helpers.protect import hidden, send, stored

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


class Clock:
    """An injected clock the test moves forward (no sleeping, no timed assertions)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def kept_and_sendable(app: Flask, client: FlaskClient, r: Any, message: str,
                      typed: str) -> None:
    """The refusal shows the message, keeps what was typed, stores nothing, and its
    fresh token lets the patient send the form again."""
    html = r.get_data(as_text=True)
    assert r.status_code == 400
    assert message in html, html[:2000]
    assert typed in html
    assert 'id="error-summary"' in html
    before = stored(app)
    again = send(client, {**hidden(html), **valid_answers(typed)})
    assert again.status_code == 200, again.get_data(as_text=True)[:2000]
    assert "Uw referentie" in again.get_data(as_text=True)
    assert stored(app) == before + 1


# -- form token ----------------------------------------------------------------------
def test_replayed_token_is_refused(app: Flask, client: FlaskClient) -> None:
    token = form_token(client)
    first = send(client, {**token, **valid_answers("eerste")})
    assert first.status_code == 200 and stored(app) == 1
    again = send(client, {**token, **valid_answers("tweede keer")})
    assert stored(app) == 1
    kept_and_sendable(app, client, again, "al eens verstuurd", "tweede keer")


def test_replay_is_refused_across_worker_processes(make_app: Callable[..., Flask]) -> None:
    # two app instances on one data folder stand for two gunicorn workers
    one, two = make_app(), make_app()
    token = form_token(one.test_client())
    assert send(one.test_client(), {**token, **valid_answers()}).status_code == 200
    r = send(two.test_client(), {**token, **valid_answers()}, json_answer=True)
    assert r.status_code == 400 and "al eens verstuurd" in r.get_json()["error"]
    assert stored(two) == 1


def test_replay_that_passes_the_first_look_is_refused_by_the_commit(
        app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two posts of one token at once both pass the first look (neither is stored yet);
    the token is recorded in the submission's own transaction, so the second is rolled
    back whole: no second submission, mail or "received" event."""
    store = app.extensions["formrelay"].store
    token = form_token(client)
    assert send(client, {**token, **valid_answers("eerste")}).status_code == 200
    events = len(store.audit.rows())
    mails = len(store.outbox.rows())
    monkeypatch.setattr(store.protection, "token_used", lambda token_id: False)  # "not yet"
    again = send(client, {**token, **valid_answers("tegelijk")})
    assert stored(app) == 1 and len(store.audit.rows()) == events
    assert len(store.outbox.rows()) == mails
    kept_and_sendable(app, client, again, "al eens verstuurd", "tegelijk")


def test_expired_token_asks_to_send_again(make_app: Callable[..., Flask]) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"min_fill_seconds": 3,
                                        "form_token_max_age_minutes": 60})
    client = app.test_client()
    token = form_token(client)
    clock.advance(minutes=61)
    r = send(client, {**token, **valid_answers("lang open")})
    assert stored(app) == 0
    # the new token may be sent at once: the patient has filled in the form already
    kept_and_sendable(app, client, r, "stond lang open", "lang open")


def test_too_fast_post_asks_to_send_again(make_app: Callable[..., Flask]) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"min_fill_seconds": 3})
    client = app.test_client()
    r = send(client, {**form_token(client), **valid_answers("heel snel")})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "ging erg snel" in html and "heel snel" in html
    assert stored(app) == 0
    # the time counts from when the form was first shown, not from this answer
    clock.advance(seconds=3)
    kept_and_sendable(app, client, r, "ging erg snel", "heel snel")


@pytest.mark.parametrize("token", [
    {},  # no token at all (a bot posting blind)
    {"_token": "bm90IGEgdG9rZW4.deadbeef"},  # made up
    {"_token": FormTokens("another-secret-" + "y" * 40, lambda: datetime.now(UTC),
                          min_fill_seconds=0, max_age_minutes=60).issue("intake")},
    {"_token": FormTokens(SECRET, lambda: datetime.now(UTC), min_fill_seconds=0,
                          max_age_minutes=60).issue("other-form")},
], ids=["missing", "forged", "wrong-key", "other-form"])
def test_bad_token_is_refused(app: Flask, client: FlaskClient, token: dict[str, str]) -> None:
    r = send(client, {**token, **valid_answers("zonder bewijs")})
    kept_and_sendable(app, client, r, "kon niet worden gecontroleerd", "zonder bewijs")
    j = send(client, {**token, **valid_answers()}, json_answer=True)
    assert j.status_code == 400 and j.get_json()["ok"] is False
    assert "gecontroleerd" in j.get_json()["error"]


def test_honeypot_is_refused(app: Flask, client: FlaskClient) -> None:
    r = send(client, {**form_token(client), **valid_answers("robot"), "_hp": "http://spam"})
    assert stored(app) == 0
    kept_and_sendable(app, client, r, "kon niet worden verstuurd", "robot")


def test_refusal_asks_for_attachments_again(app: Flask, client: FlaskClient) -> None:
    import io

    r = send(client, {**valid_answers(), "attachment": (io.BytesIO(b"%PDF-1.4 x"), "a.pdf")})
    assert r.status_code == 400 and "Voeg uw bijlagen opnieuw toe" in r.get_data(as_text=True)


def test_refusals_are_translated(client: FlaskClient) -> None:
    r = send(client, {**valid_answers(), "_lang": "en"}, query="?lang=en")
    assert "This form could not be checked. Please send it again." in r.get_data(as_text=True)


def test_token_is_cookie_free(client: FlaskClient) -> None:
    r = client.get("/f/intake?embed=1")
    assert "Set-Cookie" not in r.headers
    p = send(client, {**hidden(r.get_data(as_text=True)), **valid_answers()})
    assert p.status_code == 200 and "Set-Cookie" not in p.headers


# -- origin ----------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://localhost.evil.example"},
    {},  # neither Origin nor Referer
    {"Referer": "https://evil.example/page"},
], ids=["foreign", "null", "lookalike", "none", "foreign-referer"])
def test_post_from_wrong_origin_is_refused(app: Flask, client: FlaskClient,
                                           headers: dict[str, str]) -> None:
    body = {**form_token(client), **valid_answers("van elders")}
    r = send(client, body, origin=None, headers=headers)
    html = r.get_data(as_text=True)
    assert r.status_code == 403
    assert "alleen vanaf de eigen website van de praktijk" in html
    assert "van elders" not in html
    j = send(client, body, origin=None, headers=headers, json_answer=True)
    assert j.status_code == 403 and j.get_json()["ok"] is False
    assert stored(app) == 0


def test_post_from_allowed_origin_or_referer(make_app: Callable[..., Flask]) -> None:
    app = make_app(allowed_origins=["https://www.praktijk.example"])
    client = app.test_client()
    ok = send(client, {**form_token(client), **valid_answers()}, json_answer=True,
              origin="https://www.praktijk.example")
    assert ok.status_code == 200
    ok = send(client, {**form_token(client), **valid_answers()}, json_answer=True, origin=None,
              headers={"Referer": "http://localhost/f/intake?embed=1"})
    assert ok.status_code == 200
    assert stored(app) == 2


# -- rate limits ---------------------------------------------------------------------
def test_flood_gets_429_then_recovers(make_app: Callable[..., Flask]) -> None:
    clock = Clock()
    app = make_app(clock=clock, server={"rate_limit_ip": "3/minute"},
                   allowed_origins=["https://www.praktijk.example"])
    client = app.test_client()
    for i in range(3):
        assert send(client, {**form_token(client), **valid_answers(f"p{i}")}).status_code == 200
    r = send(client, {**form_token(client), **valid_answers("te veel")})
    html = r.get_data(as_text=True)
    assert r.status_code == 429
    assert "Te veel pogingen" in html and "te veel" not in html.replace("Te veel", "")
    assert 0 < int(r.headers["Retry-After"]) <= 61
    assert stored(app) == 3
    en = send(client, {**form_token(client), **valid_answers(), "_lang": "en"},
              query="?lang=en&embed=1")
    assert en.status_code == 429 and "Too many attempts" in en.get_data(as_text=True)
    # the 429 page can be shown inside the widget's frame on the practice's site
    assert en.headers["Content-Security-Policy"].endswith(
        "frame-ancestors https://www.praktijk.example")
    # another client is not affected
    other = send(client, {**form_token(client), **valid_answers()}, ip="192.0.2.7")
    assert other.status_code == 200
    clock.advance(seconds=61)
    back = send(client, {**form_token(client), **valid_answers("weer")})
    assert back.status_code == 200 and stored(app) == 5


def test_ipv6_clients_are_counted_per_64(make_app: Callable[..., Flask]) -> None:
    app = make_app(server={"rate_limit_ip": "2/hour"})
    client = app.test_client()
    for suffix in ("1", "2"):
        r = send(client, {**form_token(client), **valid_answers()}, ip=f"2001:db8:1:2::{suffix}")
        assert r.status_code == 200
    r = send(client, {**form_token(client), **valid_answers()}, ip="2001:db8:1:2:ffff::9")
    assert r.status_code == 429


def test_form_limit_counts_all_clients(make_app: Callable[..., Flask]) -> None:
    app = make_app(server={"rate_limit_form": "2/hour"})
    client = app.test_client()
    for ip in ("192.0.2.1", "192.0.2.2"):
        assert send(client, {**form_token(client), **valid_answers()}, ip=ip).status_code == 200
    r = send(client, {**form_token(client), **valid_answers()}, ip="192.0.2.3",
             json_answer=True)
    assert r.status_code == 429 and r.get_json()["ok"] is False
    assert stored(app) == 2


def test_limits_hold_across_worker_processes(make_app: Callable[..., Flask]) -> None:
    # the counters live in the database file that every worker process opens
    one, two = make_app(server={"rate_limit_ip": "2/hour"}), make_app(
        server={"rate_limit_ip": "2/hour"})
    for app in (one, two):
        c = app.test_client()
        assert send(c, {**form_token(c), **valid_answers()}).status_code == 200
    c = one.test_client()
    assert send(c, {**form_token(c), **valid_answers()}).status_code == 429


def test_posts_refused_later_are_counted(make_app: Callable[..., Flask]) -> None:
    """A post refused after the limits (a replayed token, a wrong answer) has used its
    try: the limits are counted before anything else of the post is looked at."""
    app = make_app(server={"rate_limit_ip": "3/hour"})
    client = app.test_client()
    token = form_token(client)
    assert send(client, {**token, **valid_answers()}).status_code == 200
    assert send(client, {**token, **valid_answers()}).status_code == 400  # replayed
    assert send(client, {**form_token(client), "_token": "nonsense"}).status_code == 400
    r = send(client, {**form_token(client), **valid_answers()}, json_answer=True)
    assert r.status_code == 429 and r.get_json()["ok"] is False
    assert stored(app) == 1


def test_every_limit_of_a_list_holds(make_app: Callable[..., Flask]) -> None:
    """'2/minute;3/hour': the minute's window starts again, the hour's does not."""
    clock = Clock()
    app = make_app(clock=clock, server={"rate_limit_ip": "2/minute;3/hour"})
    client = app.test_client()
    assert [send(client, {**form_token(client), **valid_answers()}).status_code
            for _ in range(3)] == [200, 200, 429]
    clock.advance(seconds=61)
    assert send(client, {**form_token(client), **valid_answers()}).status_code == 200
    clock.advance(seconds=61)
    r = send(client, {**form_token(client), **valid_answers()})
    assert r.status_code == 429
    # the hour's window, opened two minutes ago, decides when to try again
    assert 60 * 57 < int(r.headers["Retry-After"]) <= 60 * 58 + 1
    assert stored(app) == 3


def test_a_client_over_its_limit_does_not_use_up_the_form(
        make_app: Callable[..., Flask]) -> None:
    """Posts refused by the per-address limit are not counted against the whole form's
    (the narrowest limit is counted first, and a post stops at the first it exceeds): one
    flooding address cannot close the form for every patient."""
    app = make_app(server={"rate_limit_ip": "1/hour", "rate_limit_form": "3/hour"})
    client = app.test_client()
    flood = [send(client, {**form_token(client), **valid_answers()}, ip="192.0.2.66").status_code
             for _ in range(6)]
    assert flood == [200] + [429] * 5
    for ip in ("192.0.2.1", "192.0.2.2"):
        assert send(client, {**form_token(client), **valid_answers()}, ip=ip).status_code == 200
    assert send(client, {**form_token(client), **valid_answers()},
                ip="192.0.2.3").status_code == 429
    assert stored(app) == 3


def test_showing_the_form_is_not_limited(make_app: Callable[..., Flask]) -> None:
    app = make_app(server={"rate_limit_ip": "1/hour"})
    client = app.test_client()
    assert all(client.get("/f/intake").status_code == 200 for _ in range(5))


def test_limits_hold_under_gunicorn(tmp_path: Any, keys: Any) -> None:
    """`formrelay serve` with two worker processes: the limit is the limit, whichever
    worker answers (every request on a new connection, so both workers take some)."""
    import http.client
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from .conftest import make_config_dict, write_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config_dict(tmp_path / "data", keys, server={
        "rate_limit_ip": "4/hour", "base_url": f"http://127.0.0.1:{port}"})
    path = write_config(tmp_path / "config.toml", cfg)
    env = {**os.environ, "FORMRELAY_SECRET_KEY": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "formrelay", "--config", str(path), "serve",
                             "--bind", f"127.0.0.1:{port}", "--workers", "2",
                             "--connections", "20"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def request(method: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, "/f/intake", body=body or None,
                         headers={"Connection": "close", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    try:
        for _ in range(300):  # until the workers answer (bounded)
            try:
                if request("GET")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        statuses = []
        for _ in range(7):
            _, html = request("GET")
            body = encode_multipart({**hidden(html), **valid_answers()})
            status, _ = request("POST", body, {
                "Origin": f"http://127.0.0.1:{port}",
                "Content-Type": "multipart/form-data; boundary=frtestboundary"})
            statuses.append(status)
        assert statuses == [200] * 4 + [429] * 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
