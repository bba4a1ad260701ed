"""The floors of the house, held by a test: each layer imports only its own and lower ones.

    core IR  <  passes  <  backends  <  strategies  <  runtime, CLI, benchmark runner

Imports are read with ``ast`` from every module's source — function-level imports and
``importlib.import_module("...")`` with a literal name included — so a lazy import inside a
function counts as much as one at the top. Benchmarks (scripts, not a layer) may use any
library layer but not the CLI.

Within and across layers the module import graph has no cycles (``test_no_import_cycles``):
an edge A → B is an import in A, at any depth, of B or of a name in B (``from B import x``;
an imported name resolves to the longest module it starts with). Two kinds of import are
not edges: those under ``if TYPE_CHECKING:`` (they never run), and a package ``__init__``'s
imports of its own submodules (re-exporting them is what an ``__init__`` is for; a cycle
through one shows up as the submodules' own edges). Edges from a submodule to its parent
package are kept — no cycle today runs through one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: folder → the package it is installed as (pyproject's package-dir)
PACKAGE_DIRS = {"nasir": "nasir", "passes": "nasir.passes", "backends": "nasir.backends",
                "strategies": "nasir.strategies", "app/runtime": "nasir.runtime",
                "app/commands": "nasir.commands", "app/cli": "nasir.cli",
                "app/bench": "nasir.bench"}

CORE, PASSES, BACKENDS, STRATEGIES, TOP = range(5)
NAMES = ("core", "passes", "backends", "strategies", "top")

#: module prefix → layer; the longest matching prefix decides. Every module must match one,
#: so a new top-level module has to be placed here on purpose.
LAYERS: dict[str, int] = {
    # the IR ground floor: values, ops, graphs, their text/JSON forms, the DSL and spaces
    "nasir.errors": CORE, "nasir.loc": CORE, "nasir.types": CORE, "nasir.ops": CORE,
    "nasir.graph": CORE, "nasir.node": CORE, "nasir.graph_walks": CORE, "nasir.text": CORE,
    "nasir.graph_rewrite": CORE,
    "nasir.serialize": CORE, "nasir.dsl": CORE,
    "nasir.printer": CORE, "nasir.graph_json": CORE, "nasir.space_printer": CORE,
    "nasir.space": CORE, "nasir.space_count": CORE, "nasir.space_text": CORE,
    "nasir.decision_meta": CORE, "nasir.schema": CORE, "nasir.interpret": CORE,
    "nasir.spaces": CORE, "nasir.userload": CORE,
    # numbers every layer ranks by (moved here from strategies)
    "nasir.metrics": CORE, "nasir.pareto": CORE,
    "nasir.passes": PASSES,
    "nasir.backends": BACKENDS,
    "nasir.strategies": STRATEGIES,
    # the roof: the experiment runtime, the CLI, the benchmark runner (runs strategies
    # against a table), and the package façade (lazy re-export of nasir.optimize)
    "nasir.runtime": TOP, "nasir.commands": TOP, "nasir.cli": TOP, "nasir.__main__": TOP,
    "nasir.bench": TOP, "nasir.__init__": TOP,
}

#: (importer prefix, imported prefix) → why it is allowed for now. Each entry is a known
#: violation too big to fix in the change that added the test; the test fails when an
#: entry is no longer needed, so the list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int | None:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    for k in (2, 1):  # the folder (one or two levels: app/runtime) the package maps
        folder = "/".join(parts[:k])
        if len(parts) >= k and folder in PACKAGE_DIRS:
            return ".".join([PACKAGE_DIRS[folder], *parts[k:]])
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in ``source``, at any depth."""
    found: list[tuple[str, int]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            # ``from nasir import strategies`` imports a subpackage
            found += [(f"{name}.{a.name}", node.lineno) for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    return [(n, ln) for n, ln in found if n == "nasir" or n.startswith("nasir.")]


def _allowed(importer: str, imported: str) -> tuple[str, str] | None:
    for key in ALLOWED:
        a, b = key
        if (importer == a or importer.startswith(a + ".")) and (
                imported == b or imported.startswith(b + ".")):
            return key
    return None


def violations(sources: dict[str, tuple[str, bool]]) -> tuple[list[str], set]:
    """Layering violations among ``{module: (source, is_package)}`` and the allow-list
    entries used."""
    bad, used = [], set()
    for mod, (src, is_pkg) in sorted(sources.items()):
        here = layer_of(mod)
        if here is None:
            bad.append(f"{mod}: in no layer (add it to LAYERS in tests/test_layering.py)")
            continue
        for name, line in imports(src, mod, is_pkg):
            there = layer_of(name)
            if name == "nasir" or there is None or there <= here:
                continue
            key = _allowed(mod, name)
            if key is not None:
                used.add(key)
                continue
            bad.append(f"{mod}:{line} ({NAMES[here]}) imports {name} ({NAMES[there]})")
    return bad, used


def library_sources() -> dict[str, tuple[str, bool]]:
    out = {}
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            name = module_name(path)
            if name == "nasir":
                name = "nasir.__init__"
            out[name] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return out


def test_every_layer_imports_only_its_own_and_lower_ones():
    bad, used = violations(library_sources())
    assert not bad, "layering violations:\n  " + "\n  ".join(bad)
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"allow-list entries no longer needed (remove them): {stale}"


#: (importer, imported) → why: import edges that close a cycle, known when the cycle check
#: was added and too big to untangle in that change. Each entry must close a cycle on its own
#: (with the other entries removed, a path imported → importer remains): the test fails
#: when one no longer does, so the list only shrinks. All are function-level imports today.
ALLOWED_CYCLES: dict[tuple[str, str], str] = {}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """:func:`imports` less those under ``if TYPE_CHECKING:`` (its ``else`` still counts)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            node.body = [ast.Pass()]
    return imports(ast.unparse(tree), module, is_package)


def import_graph(sources: dict[str, tuple[str, bool]]) -> nx.DiGraph:
    """Module → module import edges among ``sources`` (the rule is in the module docstring)."""
    mods = set(sources)

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in mods:
                return candidate
            if candidate == "nasir" and "nasir.__init__" in mods:
                return "nasir.__init__"
            parts.pop()
        return None

    g = nx.DiGraph()
    for mod, (src, is_pkg) in sources.items():
        g.add_node(mod)
        package = "nasir" if mod == "nasir.__init__" else mod
        for name, line in runtime_imports(src, package, is_pkg):
            there = resolve(name)
            if there is None or there == mod or (is_pkg and there.startswith(package + ".")):
                continue
            if not g.has_edge(mod, there):
                g.add_edge(mod, there, line=line)
    return g


def import_cycles(g: nx.DiGraph, allowed: dict[tuple[str, str], str]) -> tuple[list[str], list]:
    """Cycles left once the ``allowed`` edges are dropped, and the allowed edges that close
    no cycle on their own (stale)."""
    rest = g.copy()
    rest.remove_edges_from([e for e in allowed if rest.has_edge(*e)])
    found = []
    for comp in nx.strongly_connected_components(rest):
        if len(comp) > 1:
            cyc = nx.find_cycle(rest.subgraph(comp))
            found.append(" -> ".join(f"{a}:{rest.edges[a, b]['line']}" for a, b in cyc)
                         + f" -> {cyc[0][0]}")
    stale = [e for e in allowed if not g.has_edge(*e) or not nx.has_path(rest, e[1], e[0])]
    return sorted(found), sorted(stale)


def test_no_import_cycles():
    found, stale = import_cycles(import_graph(library_sources()), ALLOWED_CYCLES)
    assert not found, ("import cycles (make one direction a call-time argument, or move the "
                       "shared part down):\n  " + "\n  ".join(found))
    assert not stale, f"ALLOWED_CYCLES entries no longer needed (remove them): {stale}"


@pytest.mark.parametrize(("sources", "expect"), [
    ({"nasir.a": ("def f():\n    from nasir.b import x\n", False),
      "nasir.b": ("import nasir.a\n", False)}, ["nasir.a:2 -> nasir.b:1 -> nasir.a"]),
    ({"nasir.a": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import nasir.b\n",
                  False),
      "nasir.b": ("import nasir.a\n", False)}, []),
    ({"nasir.p": ("from nasir.p.a import x\n", True),
      "nasir.p.a": ("from nasir.p import y\n", False)}, []),
])
def test_the_cycle_check_sees_cycles(sources, expect):
    assert import_cycles(import_graph(sources), {})[0] == expect


def test_a_stale_cycle_allowance_is_reported():
    g = import_graph({"nasir.a": ("import nasir.b\n", False), "nasir.b": ("", False)})
    assert import_cycles(g, {("nasir.a", "nasir.b"): "gone"})[1] == [("nasir.a", "nasir.b")]


def test_benchmarks_do_not_import_the_cli():
    bad = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for name, line in imports(path.read_text(encoding="utf-8"), f"benchmarks.{path.stem}"):
            if name in ("nasir.cli", "nasir.commands") or name.startswith("nasir.commands."):
                bad.append(f"benchmarks/{path.name}:{line} imports {name}")
    assert not bad, "benchmarks use the library, not the CLI:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize(("module", "source", "expect"), [
    ("nasir.graph", "def f():\n    from nasir.strategies.pareto import pareto_front\n",
     "nasir.graph:2 (core) imports nasir.strategies.pareto (strategies)"),
    ("nasir.passes.base", "import nasir.backends.torch\n",
     "nasir.passes.base:1 (passes) imports nasir.backends.torch (backends)"),
    ("nasir.backends.torch.x", "from nasir import strategies\n",
     "nasir.backends.torch.x:1 (backends) imports nasir.strategies (strategies)"),
    ("nasir.strategies.base", "from ..runtime import store\n",
     "nasir.strategies.base:1 (strategies) imports nasir.runtime (top)"),
    ("nasir.ops.base", "importlib.import_module('nasir.runtime.store')\n",
     "nasir.ops.base:1 (core) imports nasir.runtime.store (top)"),
    ("nasir.newthing", "", "nasir.newthing: in no layer"),
])
def test_the_checker_sees_violations(module, source, expect):
    bad, _ = violations({module: (source, False)})
    assert any(b.startswith(expect) for b in bad), bad


def test_allowed_imports_pass():
    assert violations({"nasir.runtime.x": ("import nasir.strategies\nimport nasir.graph\n",
                                           False)})[0] == []


def test_pyproject_lists_every_package():
    """A wheel installs only the packages pyproject names (``packages``, explicit because
    of ``package-dir``): a new package folder missing there works in an editable checkout
    and is absent from an installed nasir."""
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert conf["package-dir"] == {pkg: folder for folder, pkg in PACKAGE_DIRS.items()}
    listed = set(conf["packages"])
    found = set()
    for folder, package in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *rel)))
    missing, extra = sorted(found - listed), sorted(listed - found)
    assert not missing, f"packages missing from pyproject's packages: {missing}"
    assert not extra, f"pyproject lists packages with no folder: {extra}"
