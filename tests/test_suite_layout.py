"""No test module imports another: what tests share lives in tests/helpers/ (or the
helper modules beside the tests, such as keys.py and smtpd.py). Importing a test module
runs its module-level code and pulls its tests' names into another module, and a
helper hidden in one test file is found by nobody looking for helpers.

Checked statically (ast over tests/**/*.py), imports inside functions included: a lazy
`from .test_x import y` is the same dependency, only later.

Also here: the PostgreSQL pass selects the tests that request the `database` fixture,
and a test that opens a store without requesting it fails (tests/conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from . import conftest

TESTS = Path(__file__).parent


def imports_of_test_modules(source: str, path: Path) -> list[str]:
    """The test modules (test_*.py under tests/) that the code in `path` imports."""
    package = ["tests", *path.parent.relative_to(TESTS).parts]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            # `from . import test_x` names a module; `from .test_x import y` names one too
            names = [".".join(module)] + [".".join([*module, a.name]) for a in node.names]
        else:
            continue
        for name in names:
            last = name.rpartition(".")[2]
            if last.startswith("test_") and (name.startswith("tests.") or "." not in name):
                found.append(f"{path.relative_to(TESTS.parent)}:{node.lineno} imports {name}")
    return found


def test_no_test_module_imports_another() -> None:
    offences = []
    for path in sorted(TESTS.rglob("*.py")):
        offences += imports_of_test_modules(path.read_text(encoding="utf-8"), path)
    assert not offences, "move what is shared into tests/helpers/:\n" + "\n".join(offences)


def test_the_check_sees_each_way_of_importing_a_test_module() -> None:
    here = TESTS / "test_x.py"
    helper = TESTS / "helpers" / "y.py"
    for source, path in [("from .test_copy import pdf_text", here),
                         ("def f():\n    from .test_copy import pdf_text\n", here),
                         ("from . import test_copy", here),
                         ("import tests.test_copy", here),
                         ("from tests.test_copy import pdf_text", here),
                         ("from ..test_copy import pdf_text", helper)]:
        assert imports_of_test_modules(source, path), source
    for source, path in [("from .helpers.copies import pdf_text", here),
                         ("from .conftest import post_form", here),
                         ("from .copies import pdf_text", helper),
                         ("import pytest", here)]:
        assert not imports_of_test_modules(source, path), source


def test_a_store_opened_without_the_database_fixture_fails(tmp_path: Path) -> None:
    """The guard that keeps store tests in the PostgreSQL pass (tests/conftest.py)."""
    saved = conftest.USES_STORE["test"]
    conftest.USES_STORE["test"] = "tests/test_x.py::test_y"
    try:
        with pytest.raises(AssertionError, match=r"test_y calls open_store but does not "
                                                 r"request the `database` fixture"):
            conftest.open_store(tmp_path / "formrelay.db")
    finally:
        conftest.USES_STORE["test"] = saved
    assert not (tmp_path / "formrelay.db").exists()


class _Item:
    def __init__(self, name: str, fixtures: tuple[str, ...], marks: tuple[str, ...] = ()):
        self.name, self.fixturenames, self.marks = name, fixtures, marks

    def get_closest_marker(self, name: str) -> str | None:
        return name if name in self.marks else None


def test_the_postgresql_pass_runs_the_tests_that_request_the_database(
        monkeypatch: pytest.MonkeyPatch) -> None:
    items: list[Any] = [_Item("store", ("tmp_path", "database")), _Item("docs", ("tmp_path",)),
                        _Item("browser", ("database",), ("sqlite_only",))]
    deselected: list[Any] = []
    config: Any = SimpleNamespace(hook=SimpleNamespace(
        pytest_deselected=lambda items: deselected.extend(items)))
    conftest.pytest_collection_modifyitems(config, list(items))  # SQLite: all of them run
    assert not deselected
    monkeypatch.setattr(conftest, "ON_POSTGRES", True)
    conftest.pytest_collection_modifyitems(config, items)
    assert [i.name for i in items] == ["store"]
    assert [i.name for i in deselected] == ["docs", "browser"]
