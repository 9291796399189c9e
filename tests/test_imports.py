"""No import cycles inside the formrelay package.

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
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

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


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for other in node.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The formrelay modules that module `name` imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
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
        for target in targets:
            # `import formrelay.a.b` names a.b; the nearest module of a dotted name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
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
