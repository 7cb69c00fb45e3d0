"""The shape of the package, checked: what docs/architecture.md promises a reader.

* ``easymesh.Node`` inherits from no class of ours (a facade over parts, no mixins);
* the import graph of ``easymesh/`` has no cycles — every import counts, those under
  ``if TYPE_CHECKING:`` and those inside functions included;
* no module over 500 lines and no function over 60 lines.
"""

from __future__ import annotations

import ast
import pathlib

import easymesh

PACKAGE = pathlib.Path(easymesh.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
    """Modules of ours that ``name`` imports, anywhere in its file."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from easymesh import config`` imports the module easymesh.config
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_node_is_a_facade_not_a_mixin() -> None:
    assert easymesh.Node.__mro__ == (easymesh.Node, object)


def test_import_graph_has_no_cycles() -> None:
    modules = _modules()
    known = set(modules)
    # The package's __init__ re-exports the public surface: it imports everything and
    # nothing of ours may import it back (``import easymesh`` inside the package).
    graph = {name: _imports(path, name, known) for name, path in modules.items()}
    assert _cycles(graph) == []
    assert "easymesh.node" not in set().union(
        *(
            graph[m]
            for m in graph
            if m.split(".")[1:2]
            and m.split(".")[1]
            in {
                "view",
                "registry",
                "router",
                "publisher",
                "caller",
                "servicehost",
                "coordclient",
                "requests",
                "latch",
                "decoder",
                "workers",
                "dispatch",
            }
        )
    ), "the node's parts must not import the node"


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_modules_and_functions_are_short() -> None:
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"function {name}.{node.name}: {n} lines")
    assert too_long == []
