"""A gunicorn worker that is recycled (max_requests) or a service that is restarted
starts from the newest valid configuration, never from what the master loaded first:
a rotated-out key never comes back. A broken practice file never takes the service
down: new workers and a restart keep the last good configuration, the port keeps
answering, the other practices keep taking posts, and `formrelay check` names the file.
Run through a real `formrelay serve` and gunicorn with deploy/gunicorn.conf.py, each
with a low max_requests so that workers are recycled within the test."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from formrelay import reload
from formrelay.cli import cli
from formrelay.config import ConfigError
from formrelay.reload import LAST_GOOD, serving_settings

from .conftest import ENV, open_store
from .helpers.recycle import (
    MAX_REQUESTS,
    _env,
    _running,
    configure,
    practice,
    recycle_every_worker,
    serve,
)
from .helpers.reload import until
from .helpers.servers import DEPLOY, _hidden, _http
from .keys import TestKey, gpg_decrypt
from .smtpd import free_port

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores

Server = Callable[[Path, Path, int], AbstractContextManager[tuple[subprocess.Popen[bytes], Path]]]


def gunicorn_conf(tmp_path: Path, config: Path, port: int
                  ) -> AbstractContextManager[tuple[subprocess.Popen[bytes], Path]]:
    """gunicorn with deploy/gunicorn.conf.py, as systemd runs it, recycling workers after
    MAX_REQUESTS requests (gunicorn's command line wins over the file)."""
    return _running([sys.executable, "-m", "gunicorn", "--config",
                     str(DEPLOY / "gunicorn.conf.py"), "--max-requests", str(MAX_REQUESTS),
                     "--max-requests-jitter", "0"], tmp_path, port,
                    _env(FORMRELAY_CONFIG=str(config), FORMRELAY_BIND=f"127.0.0.1:{port}",
                         FORMRELAY_WORKERS="2"))


def post(base: str, form_id: str) -> tuple[int, dict[str, Any]]:
    status, page, _ = _http(f"{base}/f/{form_id}")
    if status != 200:
        return status, {}
    body = urllib.parse.urlencode({**_hidden(page), "name": "Anna de Vries",
                                   "complaint": "Pijn in de knie"}).encode()
    status, answer, _ = _http(f"{base}/f/{form_id}", body, {
        "Accept": "application/json", "Origin": base,
        "Content-Type": "application/x-www-form-urlencoded"})
    return status, json.loads(answer)


def ciphertext(config: Path, reference: str) -> bytes:
    """The stored ciphertext (read from the database: `formrelay ciphertext` refuses to
    run while a practice file is broken)."""
    store = open_store(config.parent / "data" / "formrelay.db")
    try:
        return store.submissions.ciphertext(reference)
    finally:
        store.close()


def decrypts(key: TestKey, data: bytes) -> bool:
    try:
        return b"Pijn in de knie" in gpg_decrypt(key, data)
    except subprocess.CalledProcessError:
        return False


def check(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), "check", "--offline"], env=ENV)
    return result.exit_code, result.output


def test_a_recycled_worker_keeps_a_rotated_key(tmp_path: Path, keys: dict[str, TestKey]
                                               ) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = configure(tmp_path, keys, base,
                       noord=practice("Praktijk Noord", "dr-a", keys["bob"], "a-hold"))
    with serve(tmp_path, config, port) as (proc, log):
        status, receipt = post(base, "a-hold")
        assert status == 200 and decrypts(keys["bob"], ciphertext(config, receipt["reference"]))

        # dr-a's key rotated (file and fingerprint, a new title to see it), no SIGHUP
        configure(tmp_path, keys, base, noord=practice("Praktijk Noord", "dr-a", keys["alice"],
                                                       "a-hold", title="Aanmelden (nieuw)"))
        until(lambda: all(b"Aanmelden (nieuw)" in _http(f"{base}/f/a-hold")[1]
                          for _ in range(6)), "the rotation in every worker", log)
        status, receipt = post(base, "a-hold")
        assert status == 200
        data = ciphertext(config, receipt["reference"])
        assert decrypts(keys["alice"], data) and not decrypts(keys["bob"], data)

        # both workers recycled: the new ones start from the rotated configuration
        recycle_every_worker(base, proc, log)
        for _ in range(4):  # whichever worker takes them
            status, receipt = post(base, "a-hold")
            assert status == 200, receipt
            data = ciphertext(config, receipt["reference"])
            assert decrypts(keys["alice"], data), "a recycled worker went back to the old key"
            assert not decrypts(keys["bob"], data)
        assert b"Aanmelden (nieuw)" in _http(f"{base}/f/a-hold")[1]
    code, out = check(config)
    assert f"key dr-a {keys['alice'].fingerprint}: ok" in out, out
    assert keys["bob"].fingerprint not in out


@pytest.mark.parametrize("server", [serve, gunicorn_conf], ids=["serve", "gunicorn.conf.py"])
def test_a_broken_practice_file_survives_recycles_and_a_restart(
        tmp_path: Path, keys: dict[str, TestKey], server: Server) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = configure(tmp_path, keys, base,
                       noord=practice("Praktijk Noord", "dr-a", keys["bob"], "a-hold"),
                       zuid=practice("Praktijk Zuid", "dr-b", keys["alice"], "b-hold"))
    zuid = tmp_path / "practices" / "zuid.toml"
    with server(tmp_path, config, port) as (proc, log):
        assert post(base, "b-hold")[0] == 200
        text = zuid.read_text()
        zuid.write_text(text[: len(text) // 2])  # truncated, as a full disk or a bad copy does
        until(lambda: _http(f"{base}/f/a-hold")[0] == 200
              and "not reloaded" in log.read_text(), "a worker's look at the file", log)

        recycle_every_worker(base, proc, log)
        recycle_every_worker(base, proc, log)  # and the workers that replaced them
        assert proc.poll() is None
        for form_id, key in (("a-hold", keys["bob"]), ("b-hold", keys["alice"])):
            status, receipt = post(base, form_id)  # the last good configuration serves
            assert status == 200, receipt
            assert decrypts(key, ciphertext(config, receipt["reference"]))
        assert str(zuid) in log.read_text()  # the log names the broken file

    # a restart (systemd) with the file still broken comes up with the last good one
    with server(tmp_path, config, port) as (proc, log):
        status, receipt = post(base, "a-hold")
        assert status == 200 and decrypts(keys["bob"], ciphertext(config, receipt["reference"]))
        assert "the last good one stays in force" in log.read_text()
    code, out = check(config)
    assert code == 2 and f"{zuid}: not valid TOML" in out, out

    # fixed: the next start serves the files again
    zuid.write_text(text)
    assert check(config)[0] != 2


def test_without_a_last_good_configuration_a_broken_file_stops_the_start(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    config = configure(tmp_path, keys, "http://localhost",
                       zuid=practice("Praktijk Zuid", "dr-b", keys["alice"], "b-hold"))
    zuid = tmp_path / "practices" / "zuid.toml"
    zuid.write_text(zuid.read_text()[:40])
    with pytest.raises(ConfigError, match=f"^{zuid}: not valid TOML"):
        serving_settings(config, ENV)
    assert not (tmp_path / "data" / LAST_GOOD).exists()


def test_the_last_good_configuration_is_private_and_holds_no_secret(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    config = configure(tmp_path, keys, "http://localhost",
                       zuid=practice("Praktijk Zuid", "dr-b", keys["alice"], "b-hold"))
    good = serving_settings(config, ENV)
    kept = tmp_path / "data" / LAST_GOOD
    assert kept.stat().st_mode & 0o777 == 0o600
    assert ENV["FORMRELAY_SECRET_KEY"] not in kept.read_text()
    assert ENV["FORMRELAY_HEALTH_TOKEN"] not in kept.read_text()
    (tmp_path / "practices" / "zuid.toml").write_text("[forms\n")
    again = serving_settings(config, ENV)
    assert again == good and again.secret_key == ENV["FORMRELAY_SECRET_KEY"]
    # another config file never takes this one's last good configuration
    other = tmp_path / "other.toml"
    other.write_text(config.read_text())
    with pytest.raises(ConfigError, match="zuid.toml: not valid TOML"):
        serving_settings(other, ENV)


def test_a_broken_config_toml_also_starts_from_the_last_good_configuration(
        tmp_path: Path, keys: dict[str, TestKey], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = configure(tmp_path, keys, "http://localhost",
                       zuid=practice("Praktijk Zuid", "dr-b", keys["alice"], "b-hold"))
    good = serving_settings(config, ENV)
    config.write_text(config.read_text() + "\n[server\n")  # not TOML any more
    monkeypatch.setattr(reload, "_data_dirs", {})  # a new process: only the file tells
    with caplog.at_level("ERROR", logger="formrelay.config"):
        assert serving_settings(config, ENV) == good
    assert f"{config}: not valid TOML" in caplog.text
    assert "the last good one stays in force" in caplog.text


def test_the_delivery_worker_restarts_on_the_last_good_configuration(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    config = configure(tmp_path, keys, "http://localhost",
                       zuid=practice("Praktijk Zuid", "dr-b", keys["alice"], "b-hold"))
    serving_settings(config, ENV)  # a serving process took it
    zuid = tmp_path / "practices" / "zuid.toml"
    zuid.write_text(zuid.read_text()[:40])
    result = CliRunner().invoke(cli, ["--config", str(config), "worker", "--once"], env=ENV)
    assert result.exit_code == 0 and "sent 0" in result.output, result.output
    # an operator's command still names the broken file
    result = CliRunner().invoke(cli, ["--config", str(config), "outbox"], env=ENV)
    assert result.exit_code == 1 and f"{zuid}: not valid TOML" in result.output
