"""A recipient's key comes from its own key file: a relative key_file starts from the
folder of the file that names it (a practice's own file); a reload and `check
--config-only` refuse a key file that cannot be read or does not hold the pinned key;
a recipient whose own file was refused never becomes usable because the shared
keyring holds its fingerprint for another practice; and one practice's broken key
does not make the whole instance's /healthz red."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from formrelay import create_app
from formrelay.cli import cli
from formrelay.config import load_config
from formrelay.intake import relay as relay_module

from .conftest import ENV, make_config_dict, post_form, write_config
from .keys import TestKey
from .test_practices import FIELDS, valid_answers


def zuid(key_file: str, fingerprint: str) -> dict[str, Any]:
    return {"name": "Praktijk Zuid", "phone": "040 222 2222",
            "recipients": {"dr-z": {"email": "dr-z@zuid.test", "key_file": key_file,
                                    "fingerprint": fingerprint}},
            "forms": {"z-hold": {"title": "Aanmelden Zuid", "recipients": ["dr-z"],
                                 "delivery": "hold", "fields": FIELDS}}}


def configure(tmp_path: Path, keys: dict[str, TestKey], **practices: Any) -> Path:
    """config.toml (the default practice: alice, form intake) and practices/<id>.toml."""
    cfg = make_config_dict(tmp_path / "data", keys, fields=FIELDS,
                           server={"practices_dir": "practices", "reload_seconds": 0})
    folder = tmp_path / "practices"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.toml"):
        old.unlink()
    for pid, table in practices.items():
        write_config(folder / f"{pid}.toml", table)
    return write_config(tmp_path / "config.toml", cfg)


def app_for(config: Path) -> Flask:
    app = create_app(config, environ=ENV)
    app.testing = True
    return app


def check(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), "check", *args], env=ENV)


def stored(app: Flask) -> int:
    return len(app.extensions["formrelay"].store.conn.execute(
        "SELECT reference FROM submissions").fetchall())


# -- 16.9: a refused key file stays refused ------------------------------------------------
@pytest.mark.parametrize("what", ["/etc/shadow", "another key"])
def test_a_refused_key_file_stays_refused_after_a_recheck(
        tmp_path: Path, keys: dict[str, TestKey], monkeypatch: pytest.MonkeyPatch,
        what: str) -> None:
    """zuid's dr-z pins alice's fingerprint (the default practice's recipient, so the
    shared keyring holds that key) but its file is not alice's key."""
    key_file = "/etc/shadow" if what == "/etc/shadow" else str(keys["bob"].public)
    config = configure(tmp_path, keys, zuid=zuid(key_file, keys["alice"].fingerprint))
    app = app_for(config)
    client = app.test_client()
    assert client.get("/f/z-hold").status_code == 503
    monkeypatch.setattr(relay_module, "KEY_RECHECK_SECONDS", 0)  # every request rechecks
    for _ in range(3):
        assert client.get("/f/z-hold").status_code == 503
        r = post_form(client, valid_answers(), form_id="z-hold", json_answer=True)
        assert r.status_code == 503, r.get_json()
        assert "040 222 2222" in r.get_json()["error"]
    assert stored(app) == 0  # nothing encrypted to alice for zuid
    assert client.get("/f/intake").status_code == 200  # alice's own form serves
    r = check(config, "--offline")
    assert "form z-hold is unavailable to patients" in r.output and "form intake (hold)" in \
        r.output, r.output


def test_a_key_file_fixed_on_disk_is_taken_at_the_next_recheck(
        tmp_path: Path, keys: dict[str, TestKey], monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "dr-z.asc"
    key_file.write_text("not a key\n")
    config = configure(tmp_path, keys, zuid=zuid(str(key_file), keys["bob"].fingerprint))
    client = app_for(config).test_client()
    assert client.get("/f/z-hold").status_code == 503
    shutil.copy(keys["bob"].public, key_file)
    monkeypatch.setattr(relay_module, "KEY_RECHECK_SECONDS", 0)
    r = post_form(client, valid_answers(), form_id="z-hold", json_answer=True)
    assert r.status_code == 200, r.get_json()


# -- 20.3: relative key paths start from the practice file's folder ------------------------
def test_a_relative_key_file_is_read_from_the_practice_files_folder(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    (tmp_path / "practices" / "keys").mkdir(parents=True)
    shutil.copy(keys["bob"].public, tmp_path / "practices" / "keys" / "dr-z.asc")
    config = configure(tmp_path, keys, zuid=zuid("keys/dr-z.asc", keys["bob"].fingerprint))
    settings = load_config(config, ENV)
    assert settings.recipients["dr-z"].key_file == str(tmp_path / "practices" / "keys" /
                                                       "dr-z.asc")
    assert check(config, "--config-only").exit_code == 0
    r = post_form(app_for(config).test_client(), valid_answers(), form_id="z-hold",
                  json_answer=True)
    assert r.status_code == 200, r.get_json()
