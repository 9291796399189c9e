"""No import cycles inside the formrelay package, and its packages in one order.

The graph is built statically from the source (ast over formrelay/**/*.py), so a module
never has to be imported to be checked. An edge A -> B means module A imports module
B: `import formrelay.b`, `from .b import x`, `from . import b` (b a module: the edge
goes to b itself), `from .. import x` (x not a module: the edge goes to the package).
Imports under `if TYPE_CHECKING:` do not count: they never run. Imports inside a
function do count: a lazy import runs as soon as the function is called, and moving an
import into a function is the usual way to hide a cycle rather than remove it. The
package's own `__init__` is not implied by importing one of its modules (every module
of a package has its package above it; only what a module names is an edge).

Cycles are the strongly connected components of the graph (Tarjan); each is named in
the failure with one import path that closes it.

The packages (and the top-level modules) sit in the layers of ORDER, lowest first: a
module may import its own package and the layers below it, never a layer above nor a
neighbour in its own layer. Here an import under `if TYPE_CHECKING:` counts too: a type
from an upper package is a dependency on it all the same. Each import that breaks the
order is named with its file, line and statement.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import formrelay

ROOT = Path(formrelay.__file__).parent
PACKAGE = "formrelay"


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its __init__)."""
    out: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, *, typing: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`
    (those too with `typing`)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not typing:
            for other in node.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node, typing=typing)


def import_statements(name: str, path: Path, modules: dict[str, Path], *,
                      typing: bool = False,
                      ) -> Iterator[tuple[ast.Import | ast.ImportFrom, set[str]]]:
    """Each import statement of module `name` with the formrelay modules it imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in _imports(parsed(path), typing=typing):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = []
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in modules else source)
        out: set[str] = set()
        for target in targets:
            # `import formrelay.a.b` names a.b; the nearest module of a dotted name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
        yield node, out


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The formrelay modules that module `name` imports."""
    out: set[str] = set()
    for _, targets in import_statements(name, path, modules):
        out |= targets
    return out


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; only the components with a cycle (more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycle_in(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module (breadth-first)."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"no cycle in {component}")


def describe(graph: dict[str, set[str]]) -> list[str]:
    return [f"{', '.join(c)}: " + " -> ".join(cycle_in(graph, c))
            for c in strongly_connected(graph)]


def test_no_import_cycles() -> None:
    cycles = describe(import_graph())
    assert not cycles, "import cycles in formrelay:\n" + "\n".join(cycles)


def test_graph_sees_relative_and_lazy_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    real = import_graph()
    assert "formrelay.store" in real["formrelay.mail.outbox"]  # from .store import ...
    assert "formrelay.web" in real["formrelay"]  # from .web import build_app, in a function
    assert "formrelay.web.health" in real["formrelay.web"]  # from . import health


# The layers, lowest first (names relative to formrelay; "" is the package's own
# __init__, create_app). Neighbours in one layer import neither each other.
ORDER: list[tuple[str, ...]] = [
    ("errors", "audit_actions", "localtime", "logs", "settings"),  # import nothing of ours
    ("theme",),
    ("config",),
    ("i18n",),
    ("store",),
    ("crypto",),
    ("intake",),
    ("mail",),
    ("patient_copy", "clinician"),
    ("uploads",),
    ("replies",),
    ("ops",),
    ("services",),
    ("reload",),
    ("web",),
    ("",),
    # what runs the whole app: gunicorn's application and the demo (deployed
    # gunicorn.conf.py files import formrelay.ops.server, so the path stays)
    ("ops.server", "ops.demo"),
    ("cli",),
    ("__main__",),
]


def place(module: str) -> tuple[int, str] | None:
    """The layer and the ORDER entry of a formrelay module: its longest listed prefix
    ("" only for the package itself, so a new top-level module must be placed)."""
    relative = module.removeprefix(PACKAGE).removeprefix(".")
    best: tuple[int, str] | None = None
    for level, entries in enumerate(ORDER):
        for entry in entries:
            fits = relative == entry or (entry and relative.startswith(entry + "."))
            if fits and (best is None or len(entry) > len(best[1])):
                best = (level, entry)
    return best


def breaks_order(importer: str, imported: str) -> str | None:
    """Why module `importer` may not import module `imported` ("above it", "beside
    it"), or None when it may (both placed in ORDER)."""
    here, there = place(importer), place(imported)
    if here is None or there is None or there[1] == here[1] or there[0] < here[0]:
        return None
    return "above it" if there[0] > here[0] else "beside it"


def order_problems() -> list[str]:
    """Each import of a layer above (or of a neighbour), as `file:line: statement`."""
    modules = module_names()
    problems = []
    for name, path in modules.items():
        here = place(name)
        if here is None:
            problems.append(f"{path.relative_to(ROOT.parent)}: {name} has no place in ORDER")
            continue
        for node, targets in import_statements(name, path, modules, typing=True):
            for target in sorted(targets):
                if where := breaks_order(name, target):
                    there = place(target) or (0, "")
                    problems.append(
                        f"{path.relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}"
                        f"  ({here[1] or PACKAGE} imports {there[1] or PACKAGE}, {where})")
    return problems


def test_packages_import_only_downwards() -> None:
    problems = order_problems()
    assert not problems, ("imports against the package order (tests/test_imports.py ORDER):\n"
                          + "\n".join(problems))


def test_order_places_modules_by_their_package() -> None:
    assert place("formrelay") == (ORDER.index(("",)), "")
    assert place("formrelay.mail.outbox") == (ORDER.index(("mail",)), "mail")
    assert place("formrelay.ops.server")[1] == "ops.server"
    assert place("formrelay.ops.checks")[1] == "ops"
    assert place("formrelay.newmodule") is None  # a new top-level module must be placed


@pytest.mark.parametrize(("importer", "imported", "verdict"), [
    ("formrelay.mail.outbox", "formrelay.ops.retention", "above it"),  # the old back-edge
    ("formrelay.intake.relay", "formrelay.mail.mime", "above it"),
    ("formrelay.theme", "formrelay.config", "above it"),
    ("formrelay.patient_copy.copies", "formrelay.clinician.user", "beside it"),
    ("formrelay.errors", "formrelay.settings", "beside it"),
    ("formrelay.ops.worker", "formrelay.mail.outbox", None),
    ("formrelay.ops.checks", "formrelay.ops.retention", None),  # inside one package
    ("formrelay.ops.checks", "formrelay.ops.server", "above it"),  # the runners sit high
    ("formrelay.ops.server", "formrelay", None),
    ("formrelay.cli.serve", "formrelay.ops.server", None),
])
def test_order_verdicts(importer: str, imported: str, verdict: str | None) -> None:
    assert breaks_order(importer, imported) == verdict


# -- the public API: who exports what -----------------------------------------------------
# Package faces may export names their own modules define (`from formrelay.store import
# Store`); every other module exports only what it defines itself, so a name is imported
# from the module where it lives.
FACES = {"formrelay.store"}
# store/base.py still passes on store/errors.py's exceptions to the store's own modules;
# the store's recomposition by concern (issue 20, item 11) takes that apart.
STORE_INSIDE = {"formrelay.store.base"}
# The modules other code uses as their public face: each says what it exports (__all__).
PUBLIC = ("formrelay", "formrelay.cli", "formrelay.cli.common", "formrelay.config",
          "formrelay.errors", "formrelay.services", "formrelay.settings", "formrelay.store",
          "formrelay.web", "formrelay.web.clinician")
REPO = ROOT.parent
IMPORTERS = ("formrelay", "tests", "bench", "scripts", "deploy")


def _top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """The statements that bind a module's names, inside top-level if/try blocks too."""
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try):
            for body in (node.body, node.orelse, getattr(node, "finalbody", [])):
                yield from _top_level(ast.Module(body=body, type_ignores=[]))
        else:
            yield node


def defined_names(path: Path) -> set[str]:
    """The names a module defines itself: functions, classes, assignments."""
    out: set[str] = set()
    for node in _top_level(parsed(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def declared_all(path: Path) -> list[str] | None:
    for node in parsed(path).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def _source(path: Path, node: ast.ImportFrom) -> str:
    """The dotted module a `from ... import` names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    parts = list(path.relative_to(REPO).parent.parts)
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def names_taken() -> Iterator[tuple[Path, ast.ImportFrom, str, str]]:
    """Every `from <formrelay module> import <name>` in the repository (not submodules)."""
    modules = module_names()
    for folder in IMPORTERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in _imports(parsed(path), typing=True):
                if not isinstance(node, ast.ImportFrom):
                    continue
                source = _source(path, node)
                if source not in modules:
                    continue
                for alias in node.names:
                    if f"{source}.{alias.name}" not in modules and alias.name != "*":
                        yield path, node, source, alias.name


def test_names_are_imported_from_where_they_are_defined() -> None:
    modules = module_names()
    defined = {name: defined_names(path) for name, path in modules.items()}
    wrong = [f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}  "
             f"({name} is not defined in {source})"
             for path, node, source, name in names_taken()
             if source not in FACES | STORE_INSIDE and name not in defined[source]]
    assert not wrong, ("import these names from the module that defines them (only "
                       f"{', '.join(sorted(FACES))} re-export):\n" + "\n".join(wrong))


def test_each_public_module_declares_what_it_exports() -> None:
    modules = module_names()
    problems = []
    for name, path in modules.items():
        exported = declared_all(path)
        binds = defined_names(path) - {"__all__"}
        if exported is None:
            if name in PUBLIC or (path.name == "__init__.py" and
                                  any(not n.startswith("_") for n in binds)):
                problems.append(f"{name}: no __all__")
            continue
        module = importlib.import_module(name)
        missing = [n for n in exported if not hasattr(module, n)]
        if missing:
            problems.append(f"{name}: __all__ names what it does not have: {missing}")
        if name not in FACES and (borrowed := sorted(set(exported) - binds)):
            problems.append(f"{name}: __all__ re-exports {borrowed} (defined elsewhere)")
    taken: dict[str, set[str]] = {}
    for _, _, source, name in names_taken():
        taken.setdefault(source, set()).add(name)
    for name, path in modules.items():
        exported = declared_all(path)
        if exported is not None and (unlisted := sorted(taken.get(name, set()) - set(exported))):
            problems.append(f"{name}: others import {unlisted}, missing from its __all__")
    assert not problems, "\n".join(problems)


def test_export_checks_see_a_reexport() -> None:
    tree = ast.parse("from .settings import Settings\nX = 1\n")
    assert "Settings" not in defined_names_of(tree) and "X" in defined_names_of(tree)
    assert "Settings" in defined_names(ROOT / "settings.py")
    assert "Settings" not in defined_names(ROOT / "config.py")  # imported there, not defined


def defined_names_of(tree: ast.Module) -> set[str]:
    return {n.id for node in _top_level(tree) if isinstance(node, ast.Assign)
            for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
