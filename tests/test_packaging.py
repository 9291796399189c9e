"""An installed (non-editable) formrelay carries everything it serves and declares
everything it imports."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = ("practice.html", "wordpress-block.html")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    return next(out.glob("formrelay-*.whl"))


def test_wheel_carries_widget_templates_translations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("formrelay/widgets/formrelay.js") == \
            (ROOT / "widgets" / "formrelay.js").read_bytes()
    for needed in ("formrelay/templates/form.html", "formrelay/static/frame.js",
                   "formrelay/translations/nl/LC_MESSAGES/messages.po"):
        assert needed in names


def test_wheel_carries_the_example_pages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for name in EXAMPLES:
            assert zf.read(f"formrelay/widgets/examples/{name}") == \
                (ROOT / "widgets" / "examples" / name).read_bytes()


def test_installed_wheel_finds_the_demo_page_and_widget(wheel: Path, tmp_path: Path) -> None:
    """`formrelay demo` serves the example page from the package, not from a checkout."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    probe = ("import formrelay, sys\n"
             "from formrelay.ops.hostpage import example_page\n"
             "from formrelay.web.widget import widget_source\n"
             "print(formrelay.__file__)\n"
             "assert b'http://127.0.0.1:9/widget.js' in example_page('http://127.0.0.1:9')\n"
             "assert b'data-formrelay' in widget_source()[0]\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(target)


def _imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "formrelay").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"formrelay"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_a_declared_dependency() -> None:
    """Nothing formrelay imports may arrive only as some other package's dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # an optional extra counts too (pip install 'formrelay[postgres]')
    extras = [d for deps in project.get("optional-dependencies", {}).values() for d in deps]
    declared = {_canonical(re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0])
                for d in [*project["dependencies"], *extras]}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for name in sorted(_imported_top_level_names()):
        assert name in distributions, f"formrelay imports {name}, which is not installed"
        if not {_canonical(d) for d in distributions[name]} & declared:
            missing[name] = distributions[name]
    assert not missing, f"add to [project] dependencies in pyproject.toml: {missing}"
