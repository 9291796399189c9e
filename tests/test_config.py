"""Bad configuration stops start-up with the file, the key and the fix named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from formrelay.cli import cli
from formrelay.config import ConfigError, load_config
from formrelay.settings import SECRET_KEY_ENV

from .conftest import ENV, make_config_dict, write_config
from .keys import TestKey

pytestmark = pytest.mark.no_store  # configs are parsed and checked, never opened


@pytest.fixture
def base(tmp_path: Path, keys: dict[str, TestKey]) -> dict[str, Any]:
    return make_config_dict(tmp_path / "data", keys)


def load(tmp_path: Path, cfg: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    path = write_config(tmp_path / "config.toml", cfg)
    return load_config(path, ENV if env is None else env)


def test_valid_config_loads(tmp_path: Path, base: dict[str, Any]) -> None:
    s = load(tmp_path, base)
    assert s.forms["intake"].fields[0].name == "name"
    assert s.recipients["alice"].fingerprint.isupper()
    assert s.data_dir == (tmp_path / "data").resolve()


def test_paths_live_in_the_data_folder(tmp_path: Path, base: dict[str, Any]) -> None:
    s = load(tmp_path, base)
    data = (tmp_path / "data").resolve()
    assert (s.db_path, s.gnupg_home, s.tmp_dir) == (data / "formrelay.db", data / "gnupg",
                                                    data / "tmp")
    assert s.sink_path == (tmp_path / "mail").resolve()
    assert load(tmp_path, _set(base, "smtp.sink_dir", None)).sink_path is None


@pytest.mark.parametrize(("base_url", "from_address", "domain", "sender"), [
    ("https://forms.praktijk.nl/intake", "", "forms.praktijk.nl", "formrelay@forms.praktijk.nl"),
    ("https://forms.praktijk.nl", "formulieren@praktijk.nl", "forms.praktijk.nl",
     "formulieren@praktijk.nl"),
    ("http://127.0.0.1:8000", "", "127.0.0.1", "formrelay@127.0.0.1"),
])
def test_mail_domain_and_sender(tmp_path: Path, base: dict[str, Any], base_url: str,
                                from_address: str, domain: str, sender: str) -> None:
    cfg = _set(_set(base, "server.base_url", base_url), "smtp", {"from_address": from_address})
    cfg = _set(cfg, "forms.intake.delivery", "hold")
    s = load(tmp_path, cfg)
    assert (s.mail_domain, s.sender) == (domain, sender)


@pytest.mark.parametrize(("base_url", "local"), [
    ("http://localhost:8000", True), ("http://127.0.0.1", True), ("http://[::1]:8000", True),
    ("https://forms.praktijk.nl", False), ("http://10.0.0.5", False),
])
def test_base_url_on_this_machine(tmp_path: Path, base: dict[str, Any], base_url: str,
                                  local: bool) -> None:
    assert load(tmp_path, _set(base, "server.base_url", base_url)).is_local is local


def test_retention_of_a_form_and_of_a_removed_one(tmp_path: Path,
                                                  base: dict[str, Any]) -> None:
    s = load(tmp_path, _set(base, "forms.intake.retention_days", 14))
    assert s.retention_days("intake") == 14
    assert s.retention_days("gone") == 30  # the declared default


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    *path, last = dotted.split(".")
    node = cfg
    for p in path:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return cfg


BAD = [
    ("server.colour", "blue", "server.colour: unknown setting; use one of:"),
    ("server.practice_name", None, "server.practice_name: missing; add it"),
    ("server.max_request_mb", "lots", "server.max_request_mb: must be a whole number"),
    ("server.base_url", "forms.example", "server.base_url: 'forms.example' is not a URL"),
    ("smtp.password", "hunter2", "smtp.password: secrets are not read from the file; remove it "
                                 "and set FORMRELAY_SMTP_PASSWORD"),
    ("smtp.host", "mail.example.nl", None),  # ok by itself (starttls default)
    ("forms.intake.recipients", ["dr-jansn"], "forms.intake.recipients: unknown recipient "
                                              "'dr-jansn'; add [recipients.dr-jansn]"),
    ("forms.intake.delivery", "fax", "forms.intake.delivery: 'fax' is not allowed; use one of: "
                                     "email, hold"),
    ("forms.intake.allowed_origins", ["https://x.nl/path"], "is not an origin"),
    ("forms.intake.fields.0.type", "colour", "'colour' is not allowed"),
    ("forms.intake.fields.6.choices", [], "forms.intake.fields[6].choices: missing"),
    ("forms.intake.fields.0.name", "bsn", "'bsn' is used twice"),
    ("forms.intake.fields.11.accept", ["exe"], "'exe' is not supported"),
    ("recipients.alice.fingerprint", "ABCD", "is not a full fingerprint"),
    ("server.audit_retention_years", 4, "server.audit_retention_years: must be at least 5"),
    ("server.audit_retention_years", 5, None),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD)
def test_bad_config_names_file_key_and_fix(tmp_path: Path, base: dict[str, Any], key: str,
                                           value: Any, message: str | None) -> None:
    cfg = _set(base, key, value)
    if message is None:
        load(tmp_path, cfg)
        return
    with pytest.raises(ConfigError) as err:
        load(tmp_path, cfg)
    text = str(err.value)
    assert str(tmp_path / "config.toml") in text
    assert message in text, text


def test_plain_smtp_only_to_loopback(tmp_path: Path, base: dict[str, Any]) -> None:
    cfg = _set(base, "smtp", {"host": "mail.example.nl", "security": "none",
                              "from_address": "a@b.nl"})
    with pytest.raises(ConfigError, match="'none' is refused for mail.example.nl"):
        load(tmp_path, cfg)
    load(tmp_path, _set(cfg, "smtp.host", "127.0.0.1"))


def test_email_delivery_needs_a_relay(tmp_path: Path, base: dict[str, Any]) -> None:
    cfg = _set(_set(base, "smtp", {}), "forms.intake.delivery", "email")
    with pytest.raises(ConfigError, match="email needs a mail relay"):
        load(tmp_path, cfg)


@pytest.mark.parametrize(("env", "message"), [
    ({}, "FORMRELAY_SECRET_KEY is not set"),
    ({SECRET_KEY_ENV: "short"}, "FORMRELAY_SECRET_KEY is too short"),
])
def test_secret_key_from_environment(tmp_path: Path, base: dict[str, Any],
                                     env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, base, env)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\npractice_name = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, ENV)
    with pytest.raises(ConfigError, match="file not found; copy config.example.toml"):
        load_config(tmp_path / "missing.toml", ENV)


def test_cli_reports_config_error_as_one_line(tmp_path: Path, base: dict[str, Any]) -> None:
    path = write_config(tmp_path / "config.toml", _set(base, "server.colour", "blue"))
    # (`check` reports the same line with exit code 2: see test_check.py)
    result = CliRunner().invoke(cli, ["--config", str(path), "keys", "list"], env=ENV)
    assert result.exit_code == 1
    err_lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and "server.colour: unknown setting" in err_lines[0]
    assert "Traceback" not in result.output
