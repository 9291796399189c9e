"""Adding, changing or removing a practice takes effect without a restart: a real
`formrelay serve` (gunicorn, two gevent workers) reloads its config file on SIGHUP or
when the file changes; a bad file keeps the old configuration and the log names why."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from formrelay import create_app
from formrelay.reload import Live

from .area import Browser, Clock, add_user, audit, totp_at
from .conftest import ENV, make_config_dict, post_form, write_config
from .helpers.practices import NOORD_NAME, noord, valid_answers
from .helpers.reload import _config, serving, until
from .helpers.servers import _http
from .keys import TestKey
from .smtpd import free_port

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


def test_serve_reloads_practices_without_a_restart(tmp_path: Path,
                                                   keys: dict[str, TestKey]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = _config(tmp_path, keys, base)
    with serving(tmp_path, config, port) as (proc, log):
        pid = proc.pid
        assert _http(f"{base}/f/noord-intake")[0] == 404

        # a new practice: SIGHUP, and its form answers (its recipient's key imported)
        _config(tmp_path, keys, base, noord=noord(keys))
        proc.send_signal(signal.SIGHUP)
        until(lambda: _http(f"{base}/f/noord-intake")[0] == 200, "the new form", log)
        assert NOORD_NAME.encode() in _http(f"{base}/f/noord-intake")[1]

        # a changed name shows at once, without a signal: the file changed
        renamed = {**noord(keys), "name": "Gezondheidscentrum Noord"}
        _config(tmp_path, keys, base, noord=renamed)
        # every worker (each looks at the file when a request comes) has the new name
        until(lambda: all(b"Gezondheidscentrum Noord" in _http(f"{base}/f/noord-intake")[1]
                          for _ in range(8)), "the new name in every worker", log)

        # a broken file: the old configuration keeps serving, the log says why
        broken = {**renamed, "colour": "red"}
        _config(tmp_path, keys, base, noord=broken)
        proc.send_signal(signal.SIGHUP)
        until(lambda: "practices.noord.colour: unknown setting" in log.read_text(),
              "the logged problem", log)
        time.sleep(1.5)  # the workers looked too
        for _ in range(8):
            status, page, _ = _http(f"{base}/f/noord-intake")
            assert status == 200 and b"Gezondheidscentrum Noord" in page
        assert "configuration not reloaded" in log.read_text()
        bad_toml = config.read_text() + "\n[server\n"
        config.write_text(bad_toml)
        # (a worker looks at the file when a request comes, at most every reload_seconds)
        until(lambda: _http(f"{base}/f/noord-intake")[0] == 200
              and "not valid TOML" in log.read_text(), "the TOML error", log)

        # the practice removed: its form is gone, the other one stays
        _config(tmp_path, keys, base)
        until(lambda: _http(f"{base}/f/noord-intake")[0] == 404, "the removal", log)
        assert _http(f"{base}/f/intake")[0] == 200
        assert proc.poll() is None and proc.pid == pid  # never restarted
    # `formrelay check` reports a bad file too
    config.write_text(bad_toml)
    r = subprocess.run([sys.executable, "-m", "formrelay", "--config", str(config), "check"],
                       env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not valid TOML" in r.stdout + r.stderr


def test_live_swaps_whole_services_and_keeps_the_old_on_a_bad_file(
        tmp_path: Path, keys: dict[str, TestKey], caplog: pytest.LogCaptureFixture) -> None:
    config = _config(tmp_path, keys)
    app = create_app(config, environ=ENV)
    app.testing = True
    live: Live = app.extensions["formrelay.live"]
    client = app.test_client()
    assert client.get("/f/noord-intake").status_code == 404

    _config(tmp_path, keys, noord=noord(keys))
    live.ask()  # as SIGHUP does
    # a new practice's form takes posts at once: its recipient's key was imported
    r = post_form(client, valid_answers(), form_id="noord-intake", json_answer=True)
    assert r.status_code == 200, r.get_json()
    assert live.current.store is app.extensions["formrelay"].store  # nothing reopened

    # the data folder cannot move under a running process
    cfg_text = config.read_text()
    config.write_text(cfg_text.replace(str(tmp_path / "data"), str(tmp_path / "elsewhere")))
    live.ask()
    with caplog.at_level(logging.ERROR, logger="formrelay.config"):
        assert client.get("/f/noord-intake").status_code == 200
    assert "server.data_dir changed" in caplog.text and "restart formrelay" in caplog.text
    assert not (tmp_path / "elsewhere").exists()


def test_worker_reloads_on_sighup(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """`formrelay worker` started before a practice existed sends its mail from that
    practice's sender once SIGHUP told it about the new file."""
    config = _config(tmp_path, keys)
    text = config.read_text().replace("reload_seconds = 1", "reload_seconds = 0")
    config.write_text(text)  # only SIGHUP reloads
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMRELAY_")}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "formrelay", "--config", str(config),
                                 "worker", "--interval", "0.3"], env={**env, **ENV},
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        until(lambda: "delivery worker" in log.read_text(), "the worker's start", log)
        cfg = _config(tmp_path, keys, noord={**noord(keys), "forms": {"noord-intake": {
            **noord(keys)["forms"]["noord-intake"], "delivery": "email"}}})
        cfg.write_text(cfg.read_text().replace("reload_seconds = 1", "reload_seconds = 0"))
        proc.send_signal(signal.SIGHUP)
        until(lambda: "configuration reloaded" in log.read_text(), "the reload", log)
        app = create_app(cfg, environ=ENV)
        app.testing = True
        ref = post_form(app.test_client(), valid_answers(), form_id="noord-intake",
                        json_answer=True).get_json()["reference"]
        sent = tmp_path / "mail" / f"{ref}.eml"
        until(sent.exists, "the mail", log)
        assert b"From: formulieren@noord.test" in sent.read_bytes()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _reloaded(tmp_path: Path, keys: dict[str, TestKey], **server: Any) -> None:
    """config.toml rewritten with these [server] values; the caller then asks Live."""
    cfg = make_config_dict(tmp_path / "data", keys, patient_copy=True,
                           server={"reload_seconds": 1, **server})
    write_config(tmp_path / "config.toml", cfg)


def test_a_reload_changes_what_the_form_promises_about_copies(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    _reloaded(tmp_path, keys, copy_expiry_days=7)
    app = create_app(tmp_path / "config.toml", environ=ENV)
    live: Live = app.extensions["formrelay.live"]
    client = app.test_client()
    assert "7 dagen" in client.get("/f/intake").get_data(as_text=True)
    _reloaded(tmp_path, keys, copy_expiry_days=2)
    live.ask()
    page = client.get("/f/intake").get_data(as_text=True)
    assert "2 dagen" in page and "7 dagen" not in page
    # and the copy made now expires when the page says
    r = post_form(client, {**valid_answers(), "consent": "y", "_copy": "y",
                           "email": "anna@example.nl"}, json_answer=True)
    assert r.status_code == 200, r.get_json()
    left = datetime.fromisoformat(r.get_json()["public_copy"]["expires"]) - datetime.now(UTC)
    assert timedelta(days=1, hours=23) < left <= timedelta(days=2)


def test_a_reload_changes_the_clinician_session_timeouts(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    clock = Clock()
    _reloaded(tmp_path, keys, session_idle_minutes=60)
    app = create_app(tmp_path / "config.toml", environ=ENV, clock=clock)
    app.testing = True
    live: Live = app.extensions["formrelay.live"]
    add_user(tmp_path, "anna", "--recipient", "alice")
    b = Browser(app)
    b.enrol("anna", totp_at(clock))
    clock.advance(minutes=20)
    assert b.get("/clinician/").status_code == 200  # within the hour
    _reloaded(tmp_path, keys, session_idle_minutes=10)
    live.ask()
    clock.advance(minutes=20)
    r = b.get("/clinician/")  # idle 20 minutes: over the new limit
    assert r.status_code == 302 and r.headers["Location"].endswith("/clinician/login")
    [expired] = audit(app, "session expired")
    assert expired["detail"].startswith("idle: idle 20 min")


def test_a_reload_changes_the_rate_limits(tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """rate_limit_ip set from 100 to 2 posts a minute: the third post after the reload
    gets 429 with Retry-After, without a restart; the posts within the limit are stored."""
    _reloaded(tmp_path, keys, rate_limit_ip="100/minute", rate_limit_form="100/minute")
    app = create_app(tmp_path / "config.toml", environ=ENV)
    live: Live = app.extensions["formrelay.live"]
    client = app.test_client()
    codes = [post_form(client, {**valid_answers(f"voor {i}"), "consent": "y"},
                       json_answer=True).status_code
             for i in range(3)]
    assert codes == [200, 200, 200]
    _reloaded(tmp_path, keys, rate_limit_ip="2/minute", rate_limit_form="100/minute")
    live.ask()
    r = [post_form(client, {**valid_answers(f"na {i}"), "consent": "y"}, json_answer=True)
         for i in range(3)]
    # a changed limit counts from zero (its counter's key names the limit, as
    # flask-limiter's does): two more, then refused
    assert [x.status_code for x in r] == [200, 200, 429]
    assert int(r[2].headers["Retry-After"]) >= 1
    store = app.extensions["formrelay"].store
    assert len(store.submissions.rows()) == 5


def _zuid(keys: dict[str, TestKey]) -> dict[str, Any]:
    """A third practice, whose recipient's key no process has imported yet (a reload
    imports it: the reload takes a while)."""
    return {"name": "Praktijk Zuid", "phone": "040 222 2222",
            "recipients": {"carol": {"email": "carol@zuid.test",
                                     "key_file": str(keys["soon"].public),
                                     "fingerprint": keys["soon"].fingerprint}},
            "forms": {"zuid-intake": {"title": "Aanmelden Zuid", "recipients": ["carol"],
                                      "delivery": "hold", "fields": [
                                          {"name": "name", "type": "text", "label": "Naam"}]}}}


def test_no_request_answers_404_for_a_new_form_while_workers_reload(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = _config(tmp_path, keys, base)
    with serving(tmp_path, config, port) as (_, log):
        assert _http(f"{base}/f/noord-intake")[0] == 404

        def burst(form_id: str) -> list[int]:
            with ThreadPoolExecutor(16) as pool:
                return list(pool.map(lambda _: _http(f"{base}/f/{form_id}")[0], range(32)))

        # saved a moment ago: no worker's look is due yet, the form exists all the same
        _config(tmp_path, keys, base, noord=noord(keys))
        assert burst("noord-intake") == [200] * 32, log.read_text()[-3000:]

        # the look is due in both workers: the first request in each reloads (importing
        # carol's key), the others arrive while it does and wait for the new configuration
        _config(tmp_path, keys, base, noord=noord(keys), zuid=_zuid(keys))
        time.sleep(1.5)  # > reload_seconds: both workers look at their next request
        assert burst("zuid-intake") == [200] * 32, log.read_text()[-3000:]
        assert burst("noord-intake") == [200] * 32  # the old configuration's form too
        assert _http(f"{base}/f/nope")[0] == 404  # an unknown form is still unknown
