"""The package's import contract, checked on the source with `ast` (nothing is imported):

    base < domain < backends < analysis < results < report < run < core < bench < cli

base is toxcmp.config, toxcmp.errors, toxcmp.phases, and `from toxcmp import __version__` (any other import of the
package root means its re-exports, i.e. the public API in toxcmp.core). A module may import its own layer and the
layers below it, never one above. toxcmp.core (the public API: classify, get_model_response) sits on run; the benchmarks (verify-setup classifies
a text) and the CLI may use it. toxcmp.testing
(test servers) may be imported only by toxcmp.bench (and the tests), and imports only layers below bench.

Every import counts for the layer order: module level and inside functions, absolute and relative. Module-level
imports must also form no cycle (a lazy import inside a function may break one). Plus: no module over
MAX_LINES lines, and the orchestrator (toxcmp/run/) never names a backend by its string ("local", "api").
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "toxcmp"
PACKAGE = "toxcmp"

# Lowest first. "results" may not exist yet: a layer with no modules is simply empty.
LAYERS = ["base", "domain", "backends", "analysis", "results", "report", "run", "core", "bench", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}
TESTING = "testing"  # beside the order: imported only by TESTING_USERS, imports only below bench
TESTING_USERS = {"bench", TESTING}
BASE_MODULES = {"toxcmp.config", "toxcmp.errors", "toxcmp.phases"}
VERSION = "toxcmp.__version__"  # pseudo-module: `from toxcmp import __version__`
MAX_LINES = 550
BACKEND_NAMES = {"local", "api"}


@dataclass(frozen=True)
class Import:
    target: str  # a toxcmp module, or the package a name was imported from
    line: int
    module_level: bool  # runs when the module is imported (not inside a function, not under TYPE_CHECKING)


def module_name(path: Path, root: Path = ROOT, package: str = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def discover(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """The layer of a toxcmp module (or of a name imported from a package); None: in no layer (a contract gap)."""
    if module == VERSION or module in BASE_MODULES or any(module.startswith(m + ".") for m in BASE_MODULES):
        return "base"
    if module == PACKAGE or module == "toxcmp.core" or module.startswith("toxcmp.core."):
        return "core"  # the package root re-exports the public API
    if module == "toxcmp.__main__":
        return "cli"
    parts = module.split(".")
    if len(parts) >= 2 and (parts[1] in RANK or parts[1] == TESTING) and parts[1] not in ("base", "core"):
        return parts[1]
    return None


def allowed(importer: str, target: str) -> bool:
    if importer == target:
        return True
    if target == TESTING:
        return importer in TESTING_USERS
    if importer == TESTING:
        return RANK[target] < RANK["bench"]
    return RANK[target] < RANK[importer]


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]):
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.depth = 0  # > 0 inside a function body or an `if TYPE_CHECKING:` block
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.AST) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            self.found.append(Import(target, node.lineno, self.depth == 0))

    def _lazy(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _lazy

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self.depth += 1
            for child in node.body:
                self.visit(child)
            self.depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            if source == PACKAGE and alias.name == "__version__":
                self._add(VERSION, node)
            elif f"{source}.{alias.name}" in self.known:  # `from toxcmp.analysis import metrics`: a submodule
                self._add(f"{source}.{alias.name}", node)
            else:
                self._add(source, node)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    collector = _Collector(module, is_package, known)
    collector.visit(ast.parse(source))
    return collector.found


def collect(root: Path = ROOT, package: str = PACKAGE) -> dict[str, list[Import]]:
    modules = discover(root, package)
    known = set(modules)
    return {name: imports_of(path.read_text(), name, path.name == "__init__.py", known)
            for name, path in modules.items()}


def layer_violations(graph: dict[str, list[Import]]) -> list[str]:
    """Every import that goes up the order (or touches a module in no layer), as readable lines."""
    out = []
    for module, imports in sorted(graph.items()):
        mine = layer_of(module)
        if mine is None:
            out.append(f"{module}: in no layer (add it to the contract in tests/test_layers.py)")
            continue
        for imp in imports:
            theirs = layer_of(imp.target)
            where = "" if imp.module_level else ", lazy"
            if theirs is None:
                out.append(f"{module}:{imp.line} → {imp.target} [{mine} → ? (in no layer){where}]")
            elif not allowed(mine, theirs):
                out.append(f"{module}:{imp.line} → {imp.target} [{mine} → {theirs}{where}]")
    return out


def cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """Strongly connected groups of module-level imports between known modules (Tarjan), each as one cycle path.

    Importing toxcmp.a.b first runs toxcmp/a/__init__.py, so that package counts as imported too, unless it is
    the importer's own package (already running by then) or the root (it always runs first)."""

    def targets(module: str, imports: list[Import]) -> set[str]:
        out = set()
        for imp in imports:
            if not imp.module_level:
                continue
            parts = imp.target.split(".")
            for n in range(1, len(parts) + 1):
                name = ".".join(parts[:n])
                if n == len(parts) or (n > 1 and not (module == name or module.startswith(name + "."))):
                    out.add(name)
        return {t for t in out if t in graph and t != module}

    edges = {m: sorted(targets(m, imps)) for m, imps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)

    def path(group: list[str]) -> list[str]:  # one concrete cycle through the group's first module (BFS)
        start, members = group[0], set(group)
        previous = {start: None}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in edges[v]:
                if w == start:
                    chain = [v]
                    while previous[chain[-1]] is not None:
                        chain.append(previous[chain[-1]])
                    return [*reversed(chain), start]
                if w in members and w not in previous:
                    previous[w] = v
                    queue.append(w)
        return group

    return [path(g) for g in sorted(groups)]


def long_modules(root: Path = ROOT, package: str = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    out = []
    for name, path in discover(root, package).items():
        lines = len(path.read_text().splitlines())
        if lines > limit:
            out.append(f"{name}: {lines} lines (limit {limit})")
    return out


def backend_literals(root: Path, package: str = PACKAGE) -> list[str]:
    out = []
    for name, path in discover(root, package).items():
        tree = ast.parse(path.read_text())
        pieces = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}  # f"{x}api"
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in BACKEND_NAMES \
                    and id(node) not in pieces:
                out.append(f"{name}:{node.lineno}: {node.value!r}")
    return out


# ---- the contract, on the real package -------------------------------------------------------------------------


def test_every_package_folder_is_in_a_layer():
    folders = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    unknown = [f for f in folders if f not in RANK and f != TESTING]
    assert not unknown, f"toxcmp/ folders in no layer of the contract: {unknown}"


def test_imports_go_down_the_layers():
    violations = layer_violations(collect())
    assert not violations, (f"{len(violations)} import(s) against the layer order "
                            f"({' < '.join(LAYERS)}; testing only from bench):\n  " + "\n  ".join(violations))


def test_no_import_cycle_at_module_level():
    found = cycles(collect())
    assert not found, (f"{len(found)} import cycle(s) at module level (a lazy import in a function may break one):"
                       "\n  " + "\n  ".join(" → ".join(c) for c in found))


def test_no_module_is_too_long():
    found = long_modules()
    assert not found, f"{len(found)} module(s) over {MAX_LINES} lines:\n  " + "\n  ".join(found)


def test_the_orchestrator_never_names_a_backend():
    found = backend_literals(ROOT / "run", "toxcmp.run")
    assert not found, (f"toxcmp/run/ names a backend {len(found)} time(s) (string literal 'local' or 'api'):\n  "
                       + "\n  ".join(found))


# ---- the checker itself ------------------------------------------------------------------------------------------


def _graph(spec: dict[str, list[str]]) -> dict[str, list[Import]]:
    """{module: [target, ...]}; a target ending in '()' is a lazy (function-level) import."""
    return {m: [Import(t.removesuffix("()"), 1, not t.endswith("()")) for t in targets] for m, targets in spec.items()}


def test_checker_accepts_downward_and_flags_upward_imports():
    ok = _graph({
        "toxcmp.domain.a": ["toxcmp.errors", "toxcmp.config", "toxcmp.__version__", "toxcmp.domain.b"],
        "toxcmp.report.console": ["toxcmp.analysis.scoring", "toxcmp.results.table", "toxcmp.domain.a"],
        "toxcmp.core": ["toxcmp.run.orchestrate", "toxcmp.run.cache()", "toxcmp.domain.a"],
        "toxcmp.bench.setup_check": ["toxcmp", "toxcmp.core()"],  # verify-setup classifies a text
        "toxcmp.cli.app": ["toxcmp.core", "toxcmp", "toxcmp.bench.benchmarks()"],
        "toxcmp.bench.benchmarks": ["toxcmp.testing.fake_server", "toxcmp.run.cache"],
        "toxcmp.testing.fake_server": ["toxcmp.domain.a"],
        "toxcmp.__main__": ["toxcmp.cli.app"],
    })
    assert layer_violations(ok) == []
    bad = _graph({
        "toxcmp.domain.a": ["toxcmp.report.html()"],  # lazy still counts
        "toxcmp.errors": ["toxcmp.domain.a"],
        "toxcmp.analysis.arms": ["toxcmp.results.table"],
        "toxcmp.run.orchestrate": ["toxcmp.testing.fake_server"],
        "toxcmp.run.arms": ["toxcmp"],  # the root's re-exports are the public API, above run
        "toxcmp.core": ["toxcmp.cli.app"],
        "toxcmp.testing.fake_server": ["toxcmp.bench.html"],
        "toxcmp.domain.b": ["toxcmp.stray"],
        "toxcmp.stray": [],
    })
    found = layer_violations(bad)
    assert found == [
        "toxcmp.analysis.arms:1 → toxcmp.results.table [analysis → results]",
        "toxcmp.core:1 → toxcmp.cli.app [core → cli]",
        "toxcmp.domain.a:1 → toxcmp.report.html [domain → report, lazy]",
        "toxcmp.domain.b:1 → toxcmp.stray [domain → ? (in no layer)]",
        "toxcmp.errors:1 → toxcmp.domain.a [base → domain]",
        "toxcmp.run.arms:1 → toxcmp [run → core]",
        "toxcmp.run.orchestrate:1 → toxcmp.testing.fake_server [run → testing]",
        "toxcmp.stray: in no layer (add it to the contract in tests/test_layers.py)",
        "toxcmp.testing.fake_server:1 → toxcmp.bench.html [testing → bench]",
    ]


def test_checker_finds_module_level_cycles_only():
    graph = _graph({
        "toxcmp.report.console": ["toxcmp.report.html"],
        "toxcmp.report.html": ["toxcmp.report.util"],
        "toxcmp.report.util": ["toxcmp.report.console"],
        "toxcmp.run.a": ["toxcmp.run.b"],
        "toxcmp.run.b": ["toxcmp.run.a()"],  # lazy: breaks the cycle
        "toxcmp.domain.x": ["toxcmp.domain.x", "toxcmp.errors"],  # itself, and a module outside the graph
        "toxcmp.cli": ["toxcmp.cli.app"],
        "toxcmp.cli.app": ["toxcmp.cli.common"],  # its own package is already running: no cycle
        "toxcmp.cli.common": [],
        "toxcmp.bench": ["toxcmp.bench.html"],
        "toxcmp.bench.html": ["toxcmp.analysis.y"],
        "toxcmp.analysis.y": ["toxcmp.bench.other"],  # runs toxcmp/bench/__init__.py first: a cycle
        "toxcmp.bench.other": [],
    })
    assert cycles(graph) == [["toxcmp.analysis.y", "toxcmp.bench", "toxcmp.bench.html", "toxcmp.analysis.y"],
                             ["toxcmp.report.console", "toxcmp.report.html", "toxcmp.report.util",
                              "toxcmp.report.console"]]


def test_checker_reads_a_package_on_disk(tmp_path):
    """A temp copy of a package with a bad import planted at each kind of import statement the collector handles."""
    pkg = tmp_path / "toxcmp"
    files = {
        "__init__.py": "__version__ = '0'\nfrom toxcmp.core import api\n",
        "errors.py": "",
        "core.py": "from toxcmp.run import orchestrate\n",
        "domain/__init__.py": "from . import parsing\n",
        "domain/parsing.py": ("from toxcmp import __version__\nfrom ..errors import X\n"
                              "def f():\n    from ..report.html import build\n    import toxcmp.run.orchestrate\n"),
        "domain/models.py": "from toxcmp import classify\n",
        "report/__init__.py": "",
        "report/html.py": ("from typing import TYPE_CHECKING\nfrom .console import render\n"
                           "if TYPE_CHECKING:\n    from toxcmp.cli.app import app\n"),
        "report/console.py": "from toxcmp.report import html\n",
        "run/__init__.py": "",
        "run/orchestrate.py": "from toxcmp.domain import models\nBACKEND = 'local'\nx = f'{BACKEND}api'\n",
        "cli/__init__.py": "",
        "cli/app.py": "from toxcmp import core, __version__\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = collect(pkg, "toxcmp")
    assert graph["toxcmp.domain"] == [Import("toxcmp.domain.parsing", 1, True)]
    assert graph["toxcmp.domain.parsing"] == [Import("toxcmp.__version__", 1, True), Import("toxcmp.errors", 2, True),
                                             Import("toxcmp.report.html", 4, False),
                                             Import("toxcmp.run.orchestrate", 5, False)]
    assert graph["toxcmp.cli.app"] == [Import("toxcmp.core", 1, True), Import("toxcmp.__version__", 1, True)]
    assert layer_violations(graph) == [
        "toxcmp.domain.models:1 → toxcmp [domain → core]",
        "toxcmp.domain.parsing:4 → toxcmp.report.html [domain → report, lazy]",
        "toxcmp.domain.parsing:5 → toxcmp.run.orchestrate [domain → run, lazy]",
        "toxcmp.report.html:4 → toxcmp.cli.app [report → cli, lazy]",
    ]
    # html ↔ console is a cycle, and so is a domain module reaching the public API through the root; html's
    # TYPE_CHECKING import of the CLI is not (it never runs)
    assert cycles(graph) == [["toxcmp", "toxcmp.core", "toxcmp.run.orchestrate", "toxcmp.domain.models", "toxcmp"],
                             ["toxcmp.report.console", "toxcmp.report.html", "toxcmp.report.console"]]
    assert backend_literals(pkg / "run", "toxcmp.run") == ["toxcmp.run.orchestrate:2: 'local'"]
    (pkg / "domain/parsing.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert long_modules(pkg, "toxcmp") == [f"toxcmp.domain.parsing: {MAX_LINES + 1} lines (limit {MAX_LINES})"]


@pytest.mark.parametrize("module, layer", [
    ("toxcmp.config", "base"), ("toxcmp.__version__", "base"), ("toxcmp", "core"), ("toxcmp.core", "core"),
    ("toxcmp.results", "results"), ("toxcmp.results.table", "results"), ("toxcmp.testing.fake_server", "testing"),
    ("toxcmp.__main__", "cli"), ("toxcmp.base", None), ("toxcmp.helpers", None),
])
def test_layer_of(module, layer):
    assert layer_of(module) == layer
