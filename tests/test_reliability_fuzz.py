"""Hypothesis-driven fuzzing of everything nasir reads from a user.

Each *kind* of input starts from valid examples and mutates them (keys dropped, values
swapped for random JSON, text sliced, garbage and deep nesting inserted, options drawn from
the real parsers' vocabularies). The contract checked for every generated input: it is
either accepted, or it raises a :class:`~nasir.errors.NasirError` that carries a location
(``where`` or ``loc``) — never another exception type, a hang or a crash. CLI arguments may
also end in argparse's usage error (``SystemExit(2)``).

``make test`` runs ``FUZZ_EXAMPLES`` (default 200) examples per kind;
``benchmarks/reliability_fuzz.py`` reuses :data:`KINDS` with 10,000 per kind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasir.errors import NasirError

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
HANG_S = 20.0


class Hang(Exception):
    """An input took longer than ``HANG_S`` seconds."""


class NoLocation(AssertionError):
    """A NasirError without ``where`` or ``loc``."""


def has_location(e: NasirError) -> bool:
    """Whether the error says where: a ``where`` or a source ``loc``."""
    return bool(e.where) or (e.loc is not None and bool(str(e.loc)))


@contextlib.contextmanager
def _deadline(seconds: float):
    def _raise(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(fn: Callable[[], Any]) -> str:
    """Run one input: ``accepted``, ``nasir_error`` or ``usage_error``; anything else raises
    (the original exception, :class:`Hang` or :class:`NoLocation`)."""
    with _deadline(HANG_S):
        try:
            fn()
        except NasirError as e:
            if not has_location(e):
                raise NoLocation(f"{type(e).__name__} without a location: {e}") from e
            return "nasir_error"
        except SystemExit as e:
            if e.code == 2:
                return "usage_error"
            if e.code == 0:
                return "accepted"
            raise
    return "accepted"


# -- generators ------------------------------------------------------------------------------

SPECIAL = [None, True, False, 0, -1, 1, 2**63, -(2**70), 1e308, -0.0, float("nan"),
           float("inf"), "", " ", "%x", "$x", "@g", "{", "[", "\x00", "é", [], {}, [[]],
           {"$ref": "x"}, {"$ref": 3}, [1, "a", None], "conv3x3", "nor_conv_3x3", "input",
           "relu", "choose", "op", "value", "depth", "inf", "nan", "1e999"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.sampled_from(SPECIAL).map(copy.deepcopy),  # never shared
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["name", "op", "kind", "options",
                                                              "label", "inputs", "attrs"]),
                      inner, max_size=3),
    max_leaves=8)


def _paths(obj: Any, max_depth: int = 40) -> list[tuple]:
    out: list[tuple] = []
    todo: list[tuple[Any, tuple]] = [(obj, ())]
    while todo:
        node, prefix = todo.pop()
        out.append(prefix)
        if len(prefix) >= max_depth:
            continue
        if isinstance(node, dict):
            todo += [(v, (*prefix, k)) for k, v in node.items()]
        elif isinstance(node, list):
            todo += [(v, (*prefix, i)) for i, v in enumerate(node)]
    return sorted(out, key=len)


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def mutate_json(data: st.DataObject, base: Any, max_mutations: int = 3) -> Any:
    """A copy of ``base`` with 1..``max_mutations`` random structural mutations."""
    obj = copy.deepcopy(base)
    nested = False
    for _ in range(data.draw(st.integers(1, max_mutations))):
        paths = _paths(obj)
        path = paths[data.draw(st.integers(0, len(paths) - 1))]
        op = data.draw(st.sampled_from(["replace", "delete", "insert", "wrap", "dup",
                                        "retype", "nest"]))
        if not path:
            if op in ("replace", "retype"):
                obj = data.draw(json_values)
            elif op == "wrap":
                obj = [obj]
            continue
        parent, key = _get(obj, path[:-1]), path[-1]
        cur = parent[key]
        if op == "replace":
            parent[key] = data.draw(json_values)
        elif op == "delete":
            del parent[key]
        elif op == "insert":
            if isinstance(cur, dict):
                cur[data.draw(st.text(max_size=6) | st.sampled_from(
                    ["name", "op", "loc", "type", "regions", "attrs", "meta"]))] = \
                    data.draw(json_values)
            elif isinstance(cur, list):
                cur.insert(data.draw(st.integers(0, len(cur))), data.draw(json_values))
            else:
                parent[key] = data.draw(json_values)
        elif op == "wrap":
            parent[key] = [cur] if data.draw(st.booleans()) else {"x": cur}
        elif op == "dup" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(cur))
        elif op == "retype":
            parent[key] = (str(cur) if not isinstance(cur, str) else
                           data.draw(st.sampled_from([0, 1.5, None, [cur], {cur: cur}])))
        elif op == "nest" and not nested:
            nested = True  # once per input: the generator itself must not recurse on it
            deep: Any = cur
            for _ in range(data.draw(st.sampled_from([2, 50, 5000]))):
                deep = [deep]
            parent[key] = deep
            break  # the last mutation: the generator itself must not recurse into it
    return obj


TEXT_BITS = ["{", "}", "[", "]", "(", ")", "=", ",", ":", "<", "%", "$", "@", '"', "\\",
             "#", "\n", " ", "graph", "space", "decision", "constraint", "reference", "meta",
             "return", "loc", "input", "choose", "%x", "$k", "@g", "op", "value", "depth",
             "1e999", "-inf", "nan", "true", "null", '"\\q"', '"\\u12"', "\x00", "é", "9" * 30]


def mutate_text(data: st.DataObject, base: str, max_mutations: int = 3) -> str:
    """``base`` with 1..``max_mutations`` text mutations (slices, inserts, deep nesting)."""
    s = base
    for _ in range(data.draw(st.integers(1, max_mutations))):
        n = len(s)
        i = data.draw(st.integers(0, n))
        j = data.draw(st.integers(i, min(n, i + 40)))
        op = data.draw(st.sampled_from(["delete", "insert", "replace", "dup", "truncate",
                                        "nest", "swap"]))
        if op == "delete":
            s = s[:i] + s[j:]
        elif op == "insert":
            s = s[:i] + data.draw(st.sampled_from(TEXT_BITS) | st.text(max_size=4)) + s[i:]
        elif op == "replace":
            s = s[:i] + data.draw(st.sampled_from(TEXT_BITS)) + s[j:]
        elif op == "dup":
            s = s[:j] + s[i:j] + s[j:]
        elif op == "truncate":
            s = s[:i]
        elif op == "nest":
            k = data.draw(st.sampled_from([3, 100, 5000]))
            s = s[:i] + "[" * k + "1" + "]" * k + s[i:]
        elif op == "swap" and j > i:
            s = s[:i] + s[i:j][::-1] + s[j:]
    return s


# -- the kinds ----------------------------------------------------------------------------------

def _small_spaces():
    from nasir.spaces import get_space

    return [get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1),
            get_space("tiny_mnasnet")]


_CACHE: dict[str, Any] = {}


def _cached(key: str, make: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def case_space_json(data: st.DataObject) -> Callable[[], Any]:
    """A mutated JSON space, read by ``Space.from_json`` (from text half the time)."""
    from nasir.space import Space

    bases = _cached("space_json", lambda: [sp.to_json() for sp in _small_spaces()])
    obj = mutate_json(data, data.draw(st.sampled_from(bases)))
    if data.draw(st.booleans()):
        return lambda: Space.from_json(obj)
    from nasir.serialize import graph_from_json

    return lambda: graph_from_json(obj.get("body") if isinstance(obj, dict) else obj)


def case_space_text(data: st.DataObject) -> Callable[[], Any]:
    """A mutated text space (``parse_space``) or graph (``parse_graph``)."""
    from nasir.space_text import parse_space
    from nasir.text import parse_graph

    bases = _cached("space_text", lambda: [sp.text() for sp in _small_spaces()] + [
        sp.instantiate(next(iter(sp.references.values()))).text(types=True, locs=True)
        for sp in _small_spaces()])
    k = data.draw(st.integers(0, 3))
    text = mutate_text(data, bases[k])
    return (lambda: parse_space(text)) if k < 2 else (lambda: parse_graph(text))


def case_assignment(data: st.DataObject) -> Callable[[], Any]:
    """A mutated assignment, as text (``Assignment.parse``) or JSON, checked and
    instantiated against its space."""
    from nasir.space import Assignment

    spaces = _cached("spaces", _small_spaces)
    sp = data.draw(st.sampled_from(spaces))
    ref = next(iter(sp.references.values()))
    if data.draw(st.booleans()):
        text = mutate_text(data, ref.text())

        def run() -> Any:
            return sp.instantiate(sp.check(Assignment.parse(text)))
        return run
    obj = mutate_json(data, ref.to_json())

    def run_json() -> Any:
        return sp.instantiate(sp.check(obj))
    return run_json


def _experiment_bases() -> list[dict[str, Any]]:
    return [
        {"space": {"name": "nb201", "options": {"channels": 4}}, "estimator": {"kind": "nb201"},
         "strategy": {"name": "evolution", "options": {"population": 4, "sample": 2}},
         "reward": {"kind": "accuracy"}, "objectives": {"accuracy": "max", "params": "min"},
         "executor": {"kind": "pool", "workers": 2, "trial_timeout_s": 5},
         "budget": {"trials": 8, "wall_time_s": 60}, "seed": 3, "constraints": {"params": 1e6}},
        {"name": "hw", "space": {"name": "tiny_mnasnet"}, "estimator": {
            "kind": "training", "options": {"epochs": 1}, "latency": "on"},
         "target": {"kind": "host", "spec": "llvm -mcpu=generic", "repeats": 3},
         "reward": {"kind": "mnasnet", "target": 0.5, "metric": "latency_ms", "mode": "soft"},
         "strategy": {"name": "random"}, "executor": {"kind": "inprocess"}},
    ]


def prepare_experiment(exp: Any) -> None:
    """What a search does with an experiment before its first trial, without running one:
    the driver (space, strategy, reward; its constructor does not touch the store) and a
    worker's context (space and estimator)."""
    from nasir.runtime.driver import Driver
    from nasir.runtime.worker import build_context

    Driver(None, exp)  # type: ignore[arg-type]
    build_context(exp.to_dict(), None)


def _toml(obj: Any) -> str:
    """A rough TOML writer (tables and scalars), good enough to make inputs to mutate."""
    lines: list[str] = []

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {val(x)}" for k, x in v.items()) + "}"
        return repr(v) if v is not None else '""'

    for k, v in obj.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {val(v)}")
    for k, v in obj.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{json.dumps(str(kk))} = {val(x)}" for kk, x in v.items()]
    return "\n".join(lines) + "\n"


def case_experiment(data: st.DataObject) -> Callable[[], Any]:
    """A mutated experiment file (TOML or JSON text, or a mutated object), loaded with
    ``load_experiment`` and prepared as a search would."""
    from nasir.runtime.experiment import load_experiment

    base = data.draw(st.sampled_from(_experiment_bases()))
    form = data.draw(st.sampled_from(["json-object", "json-text", "toml-text"]))
    if form == "json-object":
        try:
            text, ext = json.dumps(mutate_json(data, base)), ".json"
        except RecursionError:  # too deep for json.dumps: write the nesting by hand
            text, ext = "[" * 5000 + "]" * 5000, ".json"
    elif form == "json-text":
        text, ext = mutate_text(data, json.dumps(base, indent=1)), ".json"
    else:
        text, ext = mutate_text(data, _toml(base)), ".toml"
    folder = _cached("tmp", tempfile.mkdtemp)

    def run() -> Any:
        path = os.path.join(folder, "exp" + ext)
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(text)
        prepare_experiment(load_experiment(path))
    return run


def case_target(data: st.DataObject) -> Callable[[], Any]:
    """A target string, JSON string or dict (mutated from valid ones)."""
    from nasir.backends.tvm.targets import resolve_target

    texts = ["host", "cuda", "aarch64", "armv7", "llvm -mcpu=skylake -mattr=+avx2,+fma",
             '{"kind": "llvm", "mcpu": "skylake"}', "llvm -mtriple=aarch64-linux-gnu"]
    dicts = [{"kind": "llvm", "mcpu": "skylake"}, {"kind": "cuda", "arch": "sm_80"},
             {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}]
    if data.draw(st.booleans()):
        spec: Any = mutate_text(data, data.draw(st.sampled_from(texts)))
    else:
        spec = mutate_json(data, data.draw(st.sampled_from(dicts)))
    return lambda: resolve_target(spec)


#: commands that run in full under fuzzing; the others are parsed only (they would start a
#: search, compile with TVM or run a benchmark)
CLI_RUN = ("spaces", "show", "opt", "runs", "report", "export", "resume")


def _cli_vocab() -> dict[str, list[str]]:
    from nasir.cli import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    out = {}
    for name, sp in sub.choices.items():
        out[name] = [s for a in sp._actions for s in a.option_strings]
    return out


CLI_VALUES = ["nb201", "tiny_mnasnet", "nb201:resnet", "nb201:{edge_0_1=\"none\"}",
              "nb201:{", "mnasnet:", ":", "random", "evolution", "pool", "inprocess",
              "training", "nb201", "accuracy", "mnasnet", "host", "rpc", "llvm -mcpu=x",
              "1", "0", "-1", "2.5", "nan", "inf", "1e999", "x=1", "=", "population=3",
              "accuracy:max", "params<=100", "params<=", "latency_ms:up", "127.0.0.1:1",
              "", "--", "-", "latest", "/nonexistent/run", "{}", "[", "é", "%s"]


def case_cli(data: st.DataObject) -> Callable[[], Any]:
    """Random argv drawn from the real parsers' options and a list of tricky values."""
    from nasir.cli import build_parser

    vocab = _cached("cli", _cli_vocab)
    cmd = data.draw(st.sampled_from(sorted(vocab)))
    argv = [cmd]
    if data.draw(st.booleans()):  # a plausible positional first
        argv.append(data.draw(st.sampled_from(CLI_VALUES)))
    for _ in range(data.draw(st.integers(0, 4))):
        kind = data.draw(st.integers(0, 5))
        if kind == 0 and vocab[cmd]:
            argv.append(data.draw(st.sampled_from(vocab[cmd])))
        elif kind <= 3 and vocab[cmd]:
            argv += [data.draw(st.sampled_from(vocab[cmd])),
                     data.draw(st.sampled_from(CLI_VALUES) if kind < 3 else st.text(max_size=6))]
        else:
            argv.append(data.draw(st.sampled_from(CLI_VALUES) | st.text(max_size=6)))
    argv = [a for a in argv if a not in ("-h", "--help")] or [cmd]
    root = _cached("tmp", tempfile.mkdtemp)

    def run() -> Any:
        with contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(argv)
        if cmd in ("search", "demo"):
            from nasir.commands.search import experiment_from_args

            prepare_experiment(experiment_from_args(args))
        elif cmd in CLI_RUN:
            if hasattr(args, "root") and args.root is None:
                args.root = root  # never list or touch the real runs folder
            if cmd == "export" and getattr(args, "out", None):
                args.out = os.path.join(root, "export")
            with contextlib.redirect_stdout(io.StringIO()):
                args.run(args)
    return run


#: kind → (what it covers, case builder)
KINDS: dict[str, tuple[str, Callable[[st.DataObject], Callable[[], Any]]]] = {
    "space_json": ("Space.from_json / graph_from_json", case_space_json),
    "space_text": ("parse_space / parse_graph", case_space_text),
    "assignment": ("Assignment.parse, Space.check, Space.instantiate", case_assignment),
    "experiment": ("load_experiment (TOML/JSON) + search preparation", case_experiment),
    "target": ("resolve_target (names, CLI strings, JSON, dicts)", case_target),
    "cli": ("nasir CLI argv (argparse + command bodies)", case_cli),
}


def fuzz(kind: str, examples: int, record: Callable[[str, BaseException | None], None],
         raise_other: bool = True) -> None:
    """Run ``examples`` hypothesis examples of ``kind``; ``record(outcome, exc)`` is called for
    each (outcome ``accepted``/``nasir_error``/``usage_error``/``other``)."""
    make = KINDS[kind][1]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        fn = make(data)
        try:
            res = outcome(fn)
        except Exception as e:
            record("other", e)
            if raise_other:
                raise
            return
        record(res, None)

    run()


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_inputs_give_nasir_errors_with_a_location(kind):
    counts: dict[str, int] = {}

    def record(res: str, exc: BaseException | None) -> None:
        counts[res] = counts.get(res, 0) + 1

    fuzz(kind, FUZZ_EXAMPLES, record)
    assert counts.get("other", 0) == 0
    # the generators do make bad inputs: most examples are refused
    assert counts.get("nasir_error", 0) + counts.get("usage_error", 0) > 0, counts


def test_the_fuzz_check_can_fail():
    with pytest.raises(KeyError):
        outcome(lambda: {}["x"])
    with pytest.raises(NoLocation):
        outcome(lambda: (_ for _ in ()).throw(NasirError("no location")))
    assert outcome(lambda: (_ for _ in ()).throw(NasirError("x", where="$.a"))) == "nasir_error"
