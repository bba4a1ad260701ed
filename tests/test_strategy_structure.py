"""No strategy reads a space's body or parses decision labels (issue 20).

Strategies ask the decisions' metadata (``nasir.decision_meta``: ``positions``, ``groups``,
``Decision.meta``) and the passes' analyses (``nasir.passes.connectivity``,
``nasir.passes.layer_chain``). Every module under ``strategies/`` is read with ``ast``:

* no attribute ``.body`` (a space's body graph) is read, on any object;
* ``re``, ``regex`` and ``fnmatch`` are not imported (at any depth);
* no string method that parses (``startswith``, ``endswith``, ``split``, ``partition`` …)
  is called on a label (an expression ``….label`` or a name ``label`` / ``lb`` / ``…_label``),
  nor is a label searched for a substring (``"width" in d.label``);
* no space is recognised by its name (``….name == "…"``) or its paper
  (``….meta["paper"]`` / ``….meta.get("paper")``).

``ALLOWED`` would list ``(module, line text)`` exceptions with a reason; it is empty, and
an entry that no longer matches fails the test. The self-test feeds violating sources to
the checker, so the test is seen to fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ROOT / "strategies"

FORBIDDEN_MODULES = {"re", "regex", "fnmatch"}
PARSING_METHODS = {"startswith", "endswith", "split", "rsplit", "partition", "rpartition",
                   "removeprefix", "removesuffix", "find", "rfind", "index", "rindex",
                   "isdigit", "strip", "rstrip", "lstrip"}

#: (module path relative to the repo, a substring of the offending line) → why allowed
ALLOWED: dict[tuple[str, str], str] = {}


def _is_label(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "label"
    if isinstance(node, ast.Name):
        return node.id in ("label", "lb") or node.id.endswith("_label")
    return False


def _reads_meta_key(node: ast.AST, key: str) -> bool:
    """``….meta[key]`` or ``….meta.get(key, …)``."""
    def is_meta(e: ast.expr) -> bool:
        return isinstance(e, ast.Attribute) and e.attr == "meta"

    if isinstance(node, ast.Subscript) and is_meta(node.value):
        return isinstance(node.slice, ast.Constant) and node.slice.value == key
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get" and is_meta(node.func.value) and bool(node.args)
            and isinstance(node.args[0], ast.Constant) and node.args[0].value == key)


def violations(source: str, where: str = "<src>") -> list[tuple[int, str]]:
    """``(line, what)`` for every structure-reading construct in ``source``."""
    bad: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "body":
            bad.append((node.lineno, "reads .body (ask the decisions' metadata or a pass)"))
        elif isinstance(node, ast.Import):
            bad += [(node.lineno, f"imports {a.name}") for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and not node.level and \
                (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            bad.append((node.lineno, f"imports from {node.module}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in PARSING_METHODS and _is_label(node.func.value):
            bad.append((node.lineno, f"parses a label with .{node.func.attr}()"))
        elif isinstance(node, ast.Compare) and any(
                isinstance(x, ast.Attribute) and x.attr == "name"
                and isinstance(y, ast.Constant) and isinstance(y.value, str)
                for x in (node.left, *node.comparators)
                for y in (node.left, *node.comparators)):
            bad.append((node.lineno, "recognises something by its name"))
        elif isinstance(node, ast.Compare) and any(
                isinstance(o, ast.In | ast.NotIn) for o in node.ops) and any(
                _is_label(c) for c in node.comparators) and isinstance(
                node.left, ast.Constant) and isinstance(node.left.value, str):
            bad.append((node.lineno, "looks for a substring in a label"))
        elif _reads_meta_key(node, "paper"):
            bad.append((node.lineno, "reads a space's \"paper\" entry"))
    return bad


def test_no_strategy_reads_the_body_or_parses_labels() -> None:
    found = []
    used = set()
    files = sorted(STRATEGIES.rglob("*.py"))
    assert len(files) > 30, "the strategies package was found"
    for path in files:
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().splitlines()
        for line, what in violations(path.read_text(), rel):
            key = next((k for k in ALLOWED if k[0] == rel and k[1] in lines[line - 1]), None)
            if key is not None:
                used.add(key)
                continue
            found.append(f"{rel}:{line}: {what}: {lines[line - 1].strip()}")
    assert not found, "\n".join(found)
    assert used == set(ALLOWED), f"unneeded ALLOWED entries: {set(ALLOWED) - used}"


@pytest.mark.parametrize(("source", "what"), [
    ("for n in self.space.body.nodes(): pass", "reads .body"),
    ("def f():\n    import re\n    return re", "imports re"),
    ("from fnmatch import fnmatch", "imports from fnmatch"),
    ("ok = d.label.endswith('_pool')", "parses a label with .endswith()"),
    ("unit, _, role = lb.partition('_')", "parses a label with .partition()"),
    ("ws = [d for d in ds if 'filters' in d.label]", "looks for a substring in a label"),
    ("x = 'layer' if space.name == 'metaqnn' else 'prefix'", "recognises something by its name"),
    ("ok = str(space.meta.get('paper', '')).startswith('MnasNet')", "\"paper\" entry"),
    ("ok = sp.meta['paper'] == 'x'", "\"paper\" entry"),
])
def test_the_checker_finds_each_kind(source: str, what: str) -> None:
    found = violations(source)
    assert any(what in w for _, w in found), found


def test_the_checker_lets_metadata_queries_pass() -> None:
    src = ("from nasir.decision_meta import groups, positions\n"
           "blocks = groups(space.decisions, 'block', positions(space.decisions, cell=...))\n"
           "kind = d.meta.role\nmod, _, cls = STRATEGIES[name].partition(':')\n")
    assert violations(src) == []
