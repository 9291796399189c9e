"""A recipient's key comes from its own key file: a relative key_file starts from the
folder of the file that names it (a practice's own file); a reload and `check
--config-only` refuse a key file that cannot be read or does not hold the pinned key;
a recipient whose own file was refused never becomes usable because the shared
keyring holds its fingerprint for another practice; and one practice's broken key
does not make the whole instance's /healthz red."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from formrelay import create_app
from formrelay.cli import cli
from formrelay.config import load_config
from formrelay.crypto.packets import PacketError, dearmor, key_fingerprints
from formrelay.intake import relay as relay_module
from formrelay.reload import LAST_GOOD, Live, serving_settings

from .conftest import ENV, HEALTH_AUTH, make_config_dict, post_form, write_config
from .helpers.practices import FIELDS, valid_answers
from .keys import TestKey

pytestmark = pytest.mark.usefixtures("database")  # builds its own configs and stores


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


def test_a_key_next_to_config_toml_is_named_with_the_fix(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """Where relative paths of practice files used to start: the error names the
    practice file, the key, the path read and where the file is."""
    (tmp_path / "keys").mkdir()
    shutil.copy(keys["bob"].public, tmp_path / "keys" / "dr-z.asc")
    config = configure(tmp_path, keys, zuid=zuid("keys/dr-z.asc", keys["bob"].fingerprint))
    r = check(config, "--config-only")
    assert r.exit_code == 2
    practice_file, read = tmp_path / "practices" / "zuid.toml", tmp_path / "practices" / "keys"
    assert f"{practice_file}: recipients.dr-z.key_file: {read / 'dr-z.asc'} not found" \
        in r.output, r.output
    assert f'the file is at {tmp_path / "keys" / "dr-z.asc"}' in r.output
    assert 'write key_file = "../keys/dr-z.asc"' in r.output
    # the running service says the same where it refuses the key
    health = app_for(config).test_client().get("/healthz", headers=HEALTH_AUTH).get_json()
    problem = health["checks"]["keys"]["dr-z"]["problem"]
    assert str(read / "dr-z.asc") in problem and str(practice_file) in problem


# -- 20.4: a reload refuses a key file that cannot be used ---------------------------------
def test_key_fingerprints_read_from_the_packets_are_gpgs(keys: dict[str, TestKey]) -> None:
    for key in keys.values():  # curve and RSA keys, armoured and binary
        armoured = key.public.read_bytes()
        assert key_fingerprints(armoured) == ([key.fingerprint], False)
        assert key_fingerprints(dearmor(armoured)) == ([key.fingerprint], False)
        assert key.secret is not None and key_fingerprints(key.secret.read_bytes())[1]
    with pytest.raises(PacketError):
        key_fingerprints(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n")


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "not found"),
    ("unreadable", "is not an OpenPGP public key"),
    ("mismatch", "but the config pins"),
    ("secret", "contains SECRET key material"),
])
def test_check_config_only_refuses_a_key_file_that_cannot_be_used(
        tmp_path: Path, keys: dict[str, TestKey], case: str, message: str) -> None:
    key_file = {"missing": str(tmp_path / "gone.asc"), "unreadable": "/etc/hostname",
                "mismatch": str(keys["alice"].public),
                "secret": str(keys["bob"].secret)}[case]
    config = configure(tmp_path, keys, zuid=zuid(key_file, keys["bob"].fingerprint))
    r = check(config, "--config-only")
    assert r.exit_code == 2, r.output
    assert f"{tmp_path / 'practices' / 'zuid.toml'}: recipients.dr-z.key_file: " in r.output
    assert message in r.output, r.output
    assert not (tmp_path / "data").exists()  # touches nothing


def test_a_reload_with_a_broken_key_file_keeps_the_old_configuration(
        tmp_path: Path, keys: dict[str, TestKey], caplog: pytest.LogCaptureFixture) -> None:
    config = configure(tmp_path, keys)
    app = app_for(config)
    live: Live = app.extensions["formrelay.live"]
    client = app.test_client()
    configure(tmp_path, keys, zuid=zuid(str(tmp_path / "gone.asc"), keys["bob"].fingerprint))
    live.ask()
    with caplog.at_level(logging.ERROR, logger="formrelay.config"):
        assert client.get("/f/z-hold").status_code == 404  # not taken
    assert "configuration not reloaded" in caplog.text and "gone.asc not found" in caplog.text
    assert "z-hold" not in live.current.settings.forms
    r = post_form(client, valid_answers(), json_answer=True)  # the old one serves on
    assert r.status_code == 200, r.get_json()
    # fixed: the next reload takes it
    shutil.copy(keys["bob"].public, tmp_path / "gone.asc")
    live.ask()
    r = post_form(client, valid_answers(), form_id="z-hold", json_answer=True)
    assert r.status_code == 200, r.get_json()


def test_one_practices_broken_key_is_that_practices_health(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    config = configure(tmp_path, keys, zuid=zuid(str(tmp_path / "gone.asc"),
                                                 keys["bob"].fingerprint))
    client = app_for(config).test_client()
    public = client.get("/healthz")
    assert public.status_code == 200, public.get_json()  # the default practice serves
    assert public.get_json()["status"] == "warn"
    assert public.get_json()["checks"]["keys"] == "warn"
    assert "zuid" not in public.get_data(as_text=True)  # details for the operator only
    detailed = client.get("/healthz", headers=HEALTH_AUTH).get_json()["checks"]
    assert detailed["practices"] == {"default": {"level": "ok", "unusable": []},
                                     "zuid": {"level": "error", "unusable": ["dr-z"]}}
    assert client.get("/f/z-hold").status_code == 503
    assert client.get("/f/intake").status_code == 200


def test_a_start_with_a_broken_key_file_serves_the_other_practices(
        tmp_path: Path, keys: dict[str, TestKey], caplog: pytest.LogCaptureFixture) -> None:
    config = configure(tmp_path, keys, zuid=zuid(str(tmp_path / "gone.asc"),
                                                 keys["bob"].fingerprint))
    with caplog.at_level(logging.ERROR, logger="formrelay.config"):
        settings = serving_settings(config, ENV)
    assert {"intake", "z-hold"} <= set(settings.forms)
    assert "key file refused, its forms are unavailable" in caplog.text
    assert not (tmp_path / "data" / LAST_GOOD).exists()  # not a good one to go back to


def test_a_start_never_goes_back_to_a_rotated_out_key(
        tmp_path: Path, keys: dict[str, TestKey]) -> None:
    """The last good configuration pins bob for dr-z; the files now pin alice, whose
    key file is missing: dr-z stays refused, bob's key is not used again."""
    config = configure(tmp_path, keys, zuid=zuid(str(keys["bob"].public),
                                                 keys["bob"].fingerprint))
    assert serving_settings(config, ENV).recipients["dr-z"].fingerprint == \
        keys["bob"].fingerprint
    configure(tmp_path, keys, zuid=zuid(str(tmp_path / "gone.asc"), keys["alice"].fingerprint))
    settings = serving_settings(config, ENV)
    assert settings.recipients["dr-z"].fingerprint == keys["alice"].fingerprint
