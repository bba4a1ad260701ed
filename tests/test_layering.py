"""The floors of the house, held by a test: each layer imports only its own and lower ones.

    core IR  <  passes  <  backends  <  strategies  <  runtime, CLI, benchmark runner

Imports are read with ``ast`` from every module's source — function-level imports and
``importlib.import_module("...")`` with a literal name included — so a lazy import inside a
function counts as much as one at the top. Benchmarks (scripts, not a layer) may use any
library layer but not the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: folder → the package it is installed as (pyproject's package-dir)
PACKAGE_DIRS = {"nasir": "nasir", "passes": "nasir.passes", "backends": "nasir.backends",
                "strategies": "nasir.strategies"}

CORE, PASSES, BACKENDS, STRATEGIES, TOP = range(5)
NAMES = ("core", "passes", "backends", "strategies", "top")

#: module prefix → layer; the longest matching prefix decides. Every module must match one,
#: so a new top-level module has to be placed here on purpose.
LAYERS: dict[str, int] = {
    # the IR ground floor: values, ops, graphs, their text/JSON forms, the DSL and spaces
    "nasir.errors": CORE, "nasir.loc": CORE, "nasir.types": CORE, "nasir.ops": CORE,
    "nasir.graph": CORE, "nasir.text": CORE, "nasir.serialize": CORE, "nasir.dsl": CORE,
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
    return ".".join([PACKAGE_DIRS[parts[0]], *parts[1:]]) if parts[0] in PACKAGE_DIRS else \
        ".".join(parts)


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
