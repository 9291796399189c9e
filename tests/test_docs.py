"""The documentation stays in step with the code: config keys, CLI commands, README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from formrelay.cli import cli
from formrelay.config import SECRET_KEY_ENV, documented_keys, parse_config

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config.example.toml"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _example_keys() -> set[tuple[str, str]]:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    found: set[tuple[str, str]] = set()
    for section, table in raw.items():
        if section in ("recipients", "forms"):
            for item in table.values():
                for key, value in item.items():
                    if key == "fields":
                        found.add(("forms.<id>", "fields"))
                        for fld in value:
                            found |= {("forms.<id>.fields", k) for k in fld}
                    else:
                        found.add((f"{section}.<id>", key))
        else:
            found |= {(section, k) for k in table}
    return found


@pytest.mark.parametrize(("section", "key"), documented_keys())
def test_every_setting_is_in_config_example(section: str, key: str) -> None:
    assert (section, key) in _example_keys(), f"add {key} to [{section}] in config.example.toml"


def test_config_example_is_valid(tmp_path: Path) -> None:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    settings = parse_config(raw, tmp_path / "config.toml", {SECRET_KEY_ENV: "s" * 40})
    assert "intake" in settings.forms


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        out.append(full)
        if isinstance(cmd, click.Group):
            out += _commands(cmd, full + " ")
    return out


@pytest.mark.parametrize("command", _commands(cli))
def test_every_command_has_help_and_is_in_readme(command: str) -> None:
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, f"`formrelay {command} --help` needs an example"
    assert f"formrelay {command}" in README, f"document `formrelay {command}` in README.md"


def test_readme_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert any("scripts/demo.sh" in b for b in blocks)
    assert any("scripts/test.sh" in b for b in blocks)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_snippet_routes_in_readme() -> None:
    for route in ("/widget.js", "/f/<form_id>", "/copy/<token>", "/clinician/", "/healthz"):
        assert route in README, f"document {route} in README.md"
