"""The documentation stays in step with the code: config keys, environment variables,
CLI commands, routes, audit actions and the map of where things are. Each list is
derived from the code (the settings' declarations, the package source, the app's URL
map, `AuditAction`), never written out here, so a new one fails until it is documented.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from flask import Flask

from formrelay.audit_actions import AuditAction
from formrelay.cli import cli
from formrelay.config import parse_config
from formrelay.settings import SECRET_ENVS, SECRET_KEY_ENV, SECTIONS, documented_keys
from formrelay.store import Store

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config.example.toml"
README = (ROOT / "README.md").read_text(encoding="utf-8")
PACKAGE = ROOT / "formrelay"


def readme_section(title: str, text: str = README) -> str:
    """The text under the heading `title`, up to the next heading of its level or above
    (code blocks left out: their `# comments` are no headings)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    m = re.search(rf"^(#+) {re.escape(title)}$", text, re.M)
    assert m, f"README.md needs a section '{title}'"
    rest = text[m.end():]
    nxt = re.search(rf"^#{{1,{len(m.group(1))}}} ", rest, re.M)
    return rest[:nxt.start()] if nxt else rest


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in `text`, header rows left out."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if re.fullmatch(r"\|[-| :]+\|", line.strip()):
            rows.pop()  # the row above a rule is the table's header
        elif line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _example_practice() -> dict[str, Any]:
    """The example's commented-out [practices.<id>] block, uncommented and parsed."""
    text = EXAMPLE.read_text(encoding="utf-8")
    block = text[text.index("\n# [practices.noord]\n"):]
    return tomllib.loads("\n".join(line[2:] if line.startswith("# ") else "#"
                                   for line in block.splitlines()))


def _example_keys() -> set[tuple[str, str]]:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    found: set[tuple[str, str]] = set()
    for practice in _example_practice()["practices"].values():
        found |= {("practices.<id>", k) for k in practice
                  if k not in ("theme", "recipients", "forms")}
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
    both = parse_config({**raw, **_example_practice()}, tmp_path / "config.toml",
                        {SECRET_KEY_ENV: "s" * 40})
    assert both.practice_of("aanmelden-noord").name == "Huisartsenpraktijk Noord"
    assert both.practice_of("intake").name == settings.server.practice_name


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


# -- settings and environment variables ------------------------------------------------

def _readme_settings() -> set[tuple[str, str]]:
    """(section, key) pairs of the README's table of every setting."""
    found = set()
    for row in table_rows(readme_section("Every setting")):
        [table] = ticked(row[0])
        found |= {(table.strip("[]"), key) for key in ticked(row[1])}
    return found


@pytest.mark.parametrize(("table", "key"), documented_keys())
def test_every_setting_is_in_readme(table: str, key: str) -> None:
    brackets = "[[{}]]" if table == "forms.<id>.fields" else "[{}]"
    assert (table, key) in _readme_settings(), \
        f"add `{key}` to the `{brackets.format(table)}` row of README.md, 'Every setting'"


def test_readme_names_only_declared_settings() -> None:
    stale = _readme_settings() - set(documented_keys())
    assert not stale, f"README.md, 'Every setting', names settings the code lacks: {stale}"
    assert {t for t, _ in _readme_settings()} == set(SECTIONS)


def _env_read_by_code() -> set[str]:
    """Every FORMRELAY_* variable named in the package source."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        names |= set(re.findall(r"\bFORMRELAY_[A-Z][A-Z0-9_]*[A-Z0-9]\b",
                                path.read_text(encoding="utf-8")))
    return names


def _readme_env() -> set[str]:
    rows = table_rows(readme_section("Configuration"))
    return {t for row in rows for t in ticked(row[0]) if t.startswith("FORMRELAY_")}


def test_every_environment_variable_is_in_readme() -> None:
    read = _env_read_by_code()
    assert set(SECRET_ENVS) <= read
    missing, stale = read - _readme_env(), _readme_env() - read
    assert not missing, f"document {sorted(missing)} in README.md, 'Configuration'"
    assert not stale, f"README.md documents {sorted(stale)}, which no code reads"


def test_every_secret_is_in_the_env_example() -> None:
    example = (ROOT / "deploy" / "formrelay.env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^(FORMRELAY_[A-Z0-9_]+)=", example, re.M))
    missing = set(SECRET_ENVS) - listed
    assert not missing, f"add {sorted(missing)} to deploy/formrelay.env.example"
    assert listed <= _env_read_by_code(), "formrelay.env.example sets variables no code reads"


# -- routes ----------------------------------------------------------------------------

METHOD = r"(?:GET|POST|PUT|PATCH|DELETE)"


def _paths(rule: str) -> list[str]:
    """`rule` as the README writes it: converters dropped, `any(...)` spelt out."""
    m = re.search(r"<any\(([^)]*)\):\w+>", rule)
    if m:
        options = [o.strip().strip("'\"") for o in m.group(1).split(",")]
        return [p for o in options for p in _paths(rule[:m.start()] + o + rule[m.end():])]
    return [re.sub(r"<[^:>]+:(\w+)>", r"<\1>", rule)]


def _app_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
        routes |= {(m, p) for m in methods for p in _paths(rule.rule)}
    return routes


def _readme_routes() -> set[tuple[str, str]]:
    found = set()
    for row in table_rows(readme_section("Routes")):
        for text in ticked(row[0]):
            m = re.fullmatch(rf"({METHOD}(?:, {METHOD})*) (/\S*)", text)
            assert m, f"README.md, 'Routes': write `{text}` as `GET /path` or `GET, POST /path`"
            found |= {(method, m.group(2)) for method in m.group(1).split(", ")}
    return found


def test_every_route_is_in_readme(app: Flask) -> None:
    routes, documented = _app_routes(app), _readme_routes()
    missing = sorted(routes - documented, key=lambda r: (r[1], r[0]))
    assert not missing, "add to README.md, 'Routes': " + ", ".join(f"`{m} {p}`"
                                                                   for m, p in missing)
    stale = sorted(documented - routes)
    assert not stale, f"README.md, 'Routes', lists routes the app lacks: {stale}"


# -- audit log -------------------------------------------------------------------------

def _readme_actions() -> dict[str, str]:
    rows = table_rows(readme_section("Audit log"))
    return {ticked(row[0])[0]: row[1] for row in rows}


@pytest.mark.parametrize("action", [a.value for a in AuditAction])
def test_every_audit_action_is_in_readme(action: str) -> None:
    assert _readme_actions().get(action), \
        f"add `{action}` and what it means to the table in README.md, 'Audit log'"


def test_readme_names_only_real_audit_actions() -> None:
    stale = set(_readme_actions()) - {a.value for a in AuditAction}
    assert not stale, f"README.md, 'Audit log', lists actions AuditAction lacks: {stale}"
    privacy = (ROOT / "deploy" / "PRIVACY.md").read_text(encoding="utf-8")
    assert 'README.md, "Audit log"' in privacy


def test_every_audit_call_in_the_code_names_a_member() -> None:
    """Audit actions are named as `AuditAction.X` in the code, never as a bare string, so
    the enum (and README's list) is the whole set of what the log can say."""
    calls = 0
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        literal = re.findall(r"\.audit\.append\(\s*[\"']([^\"']+)[\"']", text)
        assert not literal, f"{path.relative_to(ROOT)}: write AuditAction members, not {literal}"
        calls += len(re.findall(r"\.audit\.append\(\s*AuditAction\.[A-Z_]+", text))
    assert calls >= 20  # the check above looked at the real calls


def test_store_refuses_an_undocumented_audit_action(tmp_path: Path) -> None:
    store = Store(tmp_path / "formrelay.db")
    with pytest.raises(ValueError, match="unknown audit action 'made up'"):
        store.audit.append("made up")
    store.audit.append(AuditAction.LOGIN, actor="user:anna")
    store.audit.append("logout", actor="user:anna")
    assert [r["action"] for r in store.audit.rows()] == ["login", "logout"]


# -- where things are ------------------------------------------------------------------

def test_where_things_are_names_existing_files() -> None:
    rows = table_rows(readme_section("Where things are (behaviour → file)"))
    assert len(rows) >= 15
    for behaviour, files in (row[:2] for row in rows):
        paths = ticked(files)
        assert paths, f"name the files of '{behaviour}'"
        for path in paths:
            assert (ROOT / path).exists(), \
                f"README.md, 'Where things are': {path} ({behaviour}) does not exist"


def test_development_table_names_existing_modules() -> None:
    for row in table_rows(readme_section("Development")):
        for name in ticked(row[0]):
            assert (PACKAGE / name).exists(), f"README.md, 'Development': no formrelay/{name}"
