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
    for node in _imports(ast.parse(path.read_text(), str(path)), typing=typing):
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
                there = place(target)
                if there is None or there[1] == here[1] or there[0] < here[0]:
                    continue
                where = "above it" if there[0] > here[0] else "beside it"
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
