"""Dependency boundaries, read from the source with ``ast`` (nothing is imported).

* ``data_pipelines`` imports nothing from ``user_embed``: the direction is user_embed →
  data_pipelines only (the CLI in ``user_embed/commands`` wraps the pipelines).
* The project's module import graph has no cycle.

Every ``import`` counts, at module level and inside functions, except those under
``if TYPE_CHECKING:`` (they never run) — for the boundary test even those count, since a
type-only import still ties data_pipelines to user_embed. ``from a.b import c`` is an edge
to ``a.b.c`` when that is a module, else to ``a.b``; a package's ``__init__`` is its own node
(named like the package). Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``;
those implicit edges are not drawn, only the module named in the statement.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("user_embed", "data_pipelines")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    file: str
    line: int
    type_checking: bool


def module_files() -> dict[str, Path]:
    """Module name → file, for every .py file under the project packages (``__init__`` = the package)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Yield (node, under_type_checking) for every Import/ImportFrom, anywhere in the tree."""

    def visit(node: ast.AST, guarded: bool):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, guarded
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, True)
            for child in node.orelse:
                yield from visit(child, guarded)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child, guarded)

    yield from visit(tree, False)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a project module, or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_edges(modules: dict[str, Path] | None = None) -> list[Edge]:
    """Every project-internal import of every project module, as an Edge."""
    modules = module_files() if modules is None else modules
    edges: list[Edge] = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        relative_file = str(path.relative_to(ROOT))
        for node, guarded in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(p for p in [*base_parts, node.module or ""] if p)
                else:
                    base = node.module or ""
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if alias.name != "*" and submodule in modules else base)
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != module:
                    edges.append(Edge(module, resolved, relative_file, node.lineno, guarded))
    return edges


def _graph(edges: list[Edge], modules: dict[str, Path]) -> dict[str, dict[str, Edge]]:
    """Runtime import graph: TYPE_CHECKING imports dropped; a module → its own parent package edge
    dropped when that ``__init__`` imports nothing of the project (it cannot close a cycle)."""
    runtime = [e for e in edges if not e.type_checking]
    importing = {e.source for e in runtime}
    graph: dict[str, dict[str, Edge]] = {m: {} for m in modules}
    for edge in runtime:
        own_parent = edge.source.rpartition(".")[0] == edge.target and modules[edge.target].name == "__init__.py"
        if own_parent and edge.target not in importing:
            continue
        graph[edge.source].setdefault(edge.target, edge)
    return graph


def find_cycles(graph: dict[str, dict[str, Edge]]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strongconnect(root: str) -> None:  # iterative, so deep graphs do not hit the recursion limit
        nonlocal counter
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # shortest path start → ... → start inside the component (BFS)
        parents: dict[str, tuple[str, Edge]] = {}
        frontier, seen, closing = [start], {start}, None
        while frontier and closing is None:
            nxt = []
            for node in frontier:
                for child, edge in sorted(graph[node].items()):
                    if child == start:
                        closing = (node, edge)
                        break
                    if child in members and child not in seen:
                        seen.add(child)
                        parents[child] = (node, edge)
                        nxt.append(child)
                if closing:
                    break
            frontier = nxt
        node, edge = closing
        path = [edge]
        while node != start:
            node, edge = parents[node]
            path.append(edge)
        cycles.append(list(reversed(path)))
    return cycles


def describe(cycle: list[Edge]) -> str:
    names = " -> ".join([cycle[0].source, *(e.target for e in cycle)])
    where = "; ".join(f"{e.file}:{e.line} imports {e.target}" for e in cycle)
    return f"{names}\n    ({where})"


# --------------------------------------------------------------------------- tests


def test_the_graph_sees_the_project():
    modules = module_files()
    assert {"user_embed", "user_embed.cli", "data_pipelines.io", "data_pipelines.userqa"} <= set(modules)
    edges = import_edges(modules)
    pairs = {(e.source, e.target) for e in edges}
    assert ("data_pipelines.userqa", "data_pipelines.userqa_tasks") in pairs  # module level
    assert ("data_pipelines.prepare", "data_pipelines.userqa") in pairs  # inside a function
    assert ("user_embed.errors", "data_pipelines.errors") in pairs


def test_data_pipelines_imports_nothing_from_user_embed():
    offending = [f"{e.file}:{e.line} imports {e.target}" + (" (under TYPE_CHECKING)" if e.type_checking else "")
                 for e in import_edges() if e.source.split(".")[0] == "data_pipelines"
                 and e.target.split(".")[0] == "user_embed"]
    dynamic = []
    for path in sorted((ROOT / "data_pipelines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value == "user_embed" or node.value.startswith("user_embed.")):
                dynamic.append(f"{path.relative_to(ROOT)}:{node.lineno} names {node.value!r}")
    assert not offending + dynamic, "data_pipelines must not depend on user_embed:\n" + "\n".join(offending + dynamic)


def test_no_import_cycles():
    modules = module_files()
    cycles = find_cycles(_graph(import_edges(modules), modules))
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(describe(c) for c in cycles)


def test_cycle_finder_reports_the_path():
    modules = {name: Path(f"{name}.py") for name in ("p.a", "p.b", "p.c", "p.d")}
    edges = [Edge("p.a", "p.b", "a.py", 1, False), Edge("p.b", "p.c", "b.py", 2, False),
             Edge("p.c", "p.a", "c.py", 3, False), Edge("p.c", "p.d", "c.py", 4, False),
             Edge("p.d", "p.a", "d.py", 5, True)]  # TYPE_CHECKING only: no runtime cycle through d
    (cycle,) = find_cycles(_graph(edges, modules))
    assert describe(cycle).splitlines()[0] == "p.a -> p.b -> p.c -> p.a"
    assert find_cycles(_graph(edges[:2] + edges[3:], modules)) == []
