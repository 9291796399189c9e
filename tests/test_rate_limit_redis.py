"""Rate limits in Redis (`server.rate_limit_storage = "redis://…"`): every app instance
counts against the same limits, a Redis that does not answer stops start-up with one
clear line (and `formrelay check` says so), a Redis that goes away while running refuses
posts with the fail-closed 503 (never lets them through uncounted), and a bad URL is
refused when the config is read. The tests start their own redis-server (tests/redisd.py).
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from formrelay import create_app
from formrelay.cli import cli
from formrelay.config import ConfigError
from formrelay.settings import REDIS_PASSWORD_ENV

from .conftest import ENV, SECRET, form_token, make_config_dict, valid_answers, write_config
from .helpers.protect import hidden, send, stored
from .keys import TestKey
from .redisd import RedisServer, free_port

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

SITE = "https://www.praktijk.example"
TOO_MANY_NL = "Te veel pogingen"
UNAVAILABLE_NL = "Dit formulier is tijdelijk niet beschikbaar. Bel de praktijk op 020 555 0101."


def instance(tmp_path: Path, keys: dict[str, TestKey], name: str, storage: str,
             env: dict[str, str] | None = None, **server: Any) -> Flask:
    """One app instance with its own data folder (its own database): what they share is
    Redis alone."""
    cfg = make_config_dict(tmp_path / name / "data", keys, allowed_origins=[SITE], server={
        "rate_limit_storage": storage, **server})
    (tmp_path / name).mkdir(exist_ok=True)
    path = write_config(tmp_path / name / "config.toml", cfg)
    app = create_app(path, environ={**ENV, **(env or {})})
    app.testing = True
    return app


def stored_by_both(one: Flask, two: Flask) -> int:
    """Submissions the two instances stored together (on PostgreSQL they share one
    database, on SQLite each has its own file)."""
    return len({row["reference"] for app in (one, two)
                for row in app.extensions["formrelay"].store.submissions.rows()})


def post(app: Flask, ip: str = "192.0.2.10", **kw: Any) -> Any:
    c = app.test_client()
    return send(c, {**form_token(c), **valid_answers()}, origin=SITE, ip=ip, **kw)


def test_two_instances_share_the_per_ip_limit(tmp_path: Path, keys: dict[str, TestKey],
                                             redis_url: str) -> None:
    one = instance(tmp_path, keys, "one", redis_url, rate_limit_ip="3/hour")
    two = instance(tmp_path, keys, "two", redis_url, rate_limit_ip="3/hour")
    statuses = [post(app).status_code for app in (one, two, one)]
    assert statuses == [200, 200, 200]
    for app in (two, one):  # the fourth post is refused, whichever instance takes it
        r = post(app)
        assert r.status_code == 429
        assert TOO_MANY_NL in r.get_data(as_text=True)
        assert 0 < int(r.headers["Retry-After"]) <= 3601
    assert post(two, json_answer=True).get_json()["ok"] is False
    assert stored_by_both(one, two) == 3
    # another client is not affected, on either instance
    assert post(two, ip="192.0.2.77").status_code == 200


def test_two_instances_share_the_per_form_limit(tmp_path: Path, keys: dict[str, TestKey],
                                               redis_url: str) -> None:
    one = instance(tmp_path, keys, "one", redis_url, rate_limit_form="2/hour")
    two = instance(tmp_path, keys, "two", redis_url, rate_limit_form="2/hour")
    assert post(one, ip="192.0.2.1").status_code == 200
    assert post(two, ip="192.0.2.2").status_code == 200
    assert post(one, ip="192.0.2.3").status_code == 429
    assert stored_by_both(one, two) == 2


def test_an_address_over_its_limit_does_not_use_up_the_form_in_redis(
        tmp_path: Path, keys: dict[str, TestKey], redis_url: str) -> None:
    """As with the database's counters: the address's limit is counted first, and its
    refused posts do not count against the whole form's."""
    app = instance(tmp_path, keys, "one", redis_url, rate_limit_ip="1/hour",
                   rate_limit_form="3/hour")
    assert [post(app, ip="192.0.2.66").status_code for _ in range(5)] == [200] + [429] * 4
    assert [post(app, ip=ip).status_code for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3")
            ] == [200, 200, 429]


def test_a_reload_changes_the_limits_counted_in_redis(
        tmp_path: Path, keys: dict[str, TestKey], redis_url: str) -> None:
    """rate_limit_ip set from 100 to 2 an hour by a reload: flask-limiter reads the limit
    at each post, so the third post after it is refused without a restart."""
    app = instance(tmp_path, keys, "one", redis_url, rate_limit_ip="100/hour",
                   reload_seconds=1)
    assert [post(app, ip="192.0.2.40").status_code for _ in range(2)] == [200, 200]
    cfg = make_config_dict(tmp_path / "one" / "data", keys, allowed_origins=[SITE], server={
        "rate_limit_storage": redis_url, "rate_limit_ip": "2/hour", "reload_seconds": 1})
    write_config(tmp_path / "one" / "config.toml", cfg)
    app.extensions["formrelay.live"].ask()
    codes = [post(app, ip="192.0.2.40").status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # a changed limit counts from zero
    assert stored(app) == 4


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may stop and start again."""
    server = RedisServer(tmp_path / "redis")
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()


def test_redis_gone_while_running_refuses_posts_with_503(
        tmp_path: Path, keys: dict[str, TestKey], own_redis: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """Fail closed: without its counters a post is neither counted nor let through; the
    patient is told to call the practice, nothing is stored, the operator's log says why.
    When Redis is back, posts are taken again without a restart."""
    app = instance(tmp_path, keys, "one", own_redis.url())
    client = app.test_client()
    assert post(app).status_code == 200
    token = form_token(client)  # the form was shown while Redis still answered
    own_redis.stop()
    caplog.set_level(logging.ERROR, logger="formrelay")
    r = send(client, {**token, **valid_answers("na redis")}, origin=SITE, json_answer=True)
    assert r.status_code == 503 and r.get_json()["error"] == UNAVAILABLE_NL
    html = send(client, {**form_token(client), **valid_answers()}, origin=SITE)
    assert html.status_code == 503 and "Bel de praktijk" in html.get_data(as_text=True)
    assert stored(app) == 1
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert f"server.rate_limit_storage: Redis at {own_redis.url()} does not answer" in logged
    assert "na redis" not in logged
    # the form page itself is not counted and still shows
    assert client.get("/f/intake").status_code == 200
    # monitoring sees it: /healthz names the problem (a fixed phrase, no address)
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json()["problems"] == ["rate-limit counters unreachable"]
    assert str(own_redis.port) not in health.get_data(as_text=True)
    own_redis.start()
    assert post(app).status_code == 200 and stored(app) == 2
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["checks"]["rate_limits"] == "ok"


def test_redis_not_answering_at_start_is_one_clear_error(
        tmp_path: Path, keys: dict[str, TestKey], caplog: pytest.LogCaptureFixture) -> None:
    """`formrelay serve` and gunicorn with deploy/gunicorn.conf.py refuse to start with
    one line naming the setting; `formrelay check` reports it as an error. A worker that
    starts anyway (gunicorn recycles them) comes up and refuses posts with 503."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    path = tmp_path / "one" / "config.toml"
    (tmp_path / "one").mkdir()
    write_config(path, make_config_dict(tmp_path / "one" / "data", keys,
                                        allowed_origins=[SITE],
                                        server={"rate_limit_storage": url}))
    said = f"server.rate_limit_storage: Redis at {url} does not answer ("
    served = CliRunner().invoke(cli, ["--config", str(path), "serve", "--bind",
                                      f"127.0.0.1:{free_port()}"], env=ENV)
    assert served.exit_code != 0
    assert f"Error: {said}" in served.output and "start Redis" in served.output
    assert "Traceback" not in served.output
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMRELAY_")}
    env.update(ENV, FORMRELAY_CONFIG=str(path), FORMRELAY_BIND=f"127.0.0.1:{free_port()}")
    conf = Path(__file__).parent.parent / "deploy" / "gunicorn.conf.py"
    gunicorn = subprocess.run([sys.executable, "-m", "gunicorn", "--config", str(conf)],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    assert gunicorn.returncode == 1
    assert f"Error: {said}" in gunicorn.stderr and "Traceback" not in gunicorn.stderr
    checked = CliRunner().invoke(cli, ["--config", str(path), "check", "--offline"], env=ENV)
    assert checked.exit_code == 2
    [line] = [ln for ln in checked.output.splitlines() if "rate_limit_storage" in ln]
    assert line.startswith("error") and said in line
    caplog.set_level(logging.ERROR, logger="formrelay")
    app = create_app(path, environ=ENV)
    assert said in caplog.text
    c = app.test_client()
    r = send(c, {**form_token(c), **valid_answers()}, origin=SITE, json_answer=True)
    assert r.status_code == 503 and r.get_json()["error"] == UNAVAILABLE_NL
    assert stored(app) == 0


def test_check_names_where_the_counters_are(tmp_path: Path, keys: dict[str, TestKey],
                                            redis_url: str) -> None:
    for name, storage, text in (("db", "", "rate limits: counted in the database file"),
                                ("redis", redis_url, f"counted in Redis at {redis_url}")):
        cfg = make_config_dict(tmp_path / name / "data", keys,
                               server={"rate_limit_storage": storage})
        (tmp_path / name).mkdir()
        path = write_config(tmp_path / name / "config.toml", cfg)
        r = CliRunner().invoke(cli, ["--config", str(path), "check", "--offline"], env=ENV)
        [line] = [ln for ln in r.output.splitlines() if "rate limits" in ln]
        assert line.startswith("ok") and text in line, r.output


def test_password_comes_from_the_environment(tmp_path: Path, keys: dict[str, TestKey],
                                             own_redis: RedisServer) -> None:
    password = "redis-" + "p" * 30  # noqa: S105 - a test value
    assert own_redis.command("CONFIG", "SET", "requirepass", password).startswith(b"+OK")
    app = instance(tmp_path, keys, "one", own_redis.url(), {REDIS_PASSWORD_ENV: password},
                   rate_limit_ip="1/hour")
    assert post(app).status_code == 200 and post(app).status_code == 429
    # a wrong password: `formrelay check` (and so the start) says so, without it
    (tmp_path / "two").mkdir()
    path = write_config(tmp_path / "two" / "config.toml", make_config_dict(
        tmp_path / "two" / "data", keys, server={"rate_limit_storage": own_redis.url()}))
    checked = CliRunner().invoke(cli, ["--config", str(path), "check", "--offline"],
                                 env={**ENV, REDIS_PASSWORD_ENV: "wrong" * 8})
    assert checked.exit_code == 2
    [line] = [ln for ln in checked.output.splitlines() if "rate_limit_storage" in ln]
    assert "does not answer" in line and "wrong" not in line


@pytest.mark.parametrize(("url", "problem"), [
    ("memcached://127.0.0.1:11211", "is not a Redis URL"),
    ("127.0.0.1:6379", "is not a Redis URL"),
    ("redis://127.0.0.1:port/0", "is not a URL"),
    ("redis://127.0.0.1:99999", "is not a URL"),
    ("redis:///0", "names no host"),
    ("redis://127.0.0.1:6379/zero", "is not a database number"),
    ("redis://:hunter2hunter2@127.0.0.1:6379/0", "secrets are not read from the file"),
])
def test_bad_url_is_refused_at_config_load(tmp_path: Path, keys: dict[str, TestKey],
                                           url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        instance(tmp_path, keys, "one", url)
    message = str(refused.value)
    assert "config.toml: server.rate_limit_storage: " in message and problem in message
    assert "hunter2" not in message
    if "secrets" in problem:
        assert REDIS_PASSWORD_ENV in message


# -- two real instances ----------------------------------------------------------------
def serve(tmp_path: Path, keys: dict[str, TestKey], name: str, url: str) -> tuple[Any, int]:
    port = free_port()
    cfg = make_config_dict(tmp_path / name / "data", keys, allowed_origins=[SITE], server={
        "rate_limit_storage": url, "rate_limit_ip": "4/hour",
        "base_url": f"http://127.0.0.1:{port}"})
    (tmp_path / name).mkdir()
    path = write_config(tmp_path / name / "config.toml", cfg)
    proc = subprocess.Popen([sys.executable, "-m", "formrelay", "--config", str(path), "serve",
                             "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                            env={**os.environ, "FORMRELAY_SECRET_KEY": SECRET},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


def request(port: int, method: str, body: bytes = b"") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Connection": "close"}
        if body:
            headers.update({"Origin": SITE,
                            "Content-Type": "multipart/form-data; boundary=frtestboundary"})
        conn.request(method, "/f/intake", body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_two_served_instances_share_the_limit(tmp_path: Path, keys: dict[str, TestKey],
                                              redis_url: str) -> None:
    """Two `formrelay serve` processes, each with its own database, on one Redis: posts
    spread over both are refused after the configured count."""
    from .conftest import encode_multipart

    procs = [serve(tmp_path, keys, name, redis_url) for name in ("one", "two")]
    try:
        for _, port in procs:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until it answers (bounded)
                try:
                    if request(port, "GET")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
        statuses = []
        for i in range(6):
            port = procs[i % 2][1]
            _, html = request(port, "GET")
            body = encode_multipart({**hidden(html), **valid_answers()})
            status, page = request(port, "POST", body)
            statuses.append(status)
            if status == 429:
                assert TOO_MANY_NL in page
        assert statuses == [200] * 4 + [429] * 2
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            proc.wait(timeout=30)
