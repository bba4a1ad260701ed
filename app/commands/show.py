"""``nasir show SPACE[:ARCH]``: instantiate an architecture and print its analyses."""

from __future__ import annotations

import json

from nasir.errors import NasirError, located
from nasir.space import Assignment
from nasir.spaces import get_space

__all__ = ["add_parser", "resolve_arch", "split_arch"]


def split_arch(spec: str) -> tuple[str, str]:
    """``SPACE[:ARCH]`` → ``(space spec, arch)``; the space may itself be
    ``file.py:function`` or ``module:function`` (then ``file.py:function:ARCH``).

    >>> split_arch("nb201:resnet"), split_arch("my/s.py:build"), split_arch("s.py:build:small")
    (('nb201', 'resnet'), ('my/s.py:build', ''), ('s.py:build', 'small'))
    """
    from nasir.spaces import space_builder
    from nasir.userload import is_code_spec

    if ":{" in spec:
        head, _, body = spec.partition(":{")
        return head, "{" + body
    name, _, arch = spec.partition(":")
    try:
        space_builder(name)
        return name, arch
    except NasirError:
        pass
    if is_code_spec(spec):
        return spec, ""
    head, _, tail = spec.rpartition(":")
    if head and is_code_spec(head):
        return head, tail
    return name, arch


def resolve_arch(spec: str):
    """``SPACE``, ``SPACE:REFERENCE`` or ``SPACE:{label=value,…}`` → (space, assignment);
    ``SPACE`` is any space spec (built-in, registered, ``file.py:function`` …)."""
    name, arch = split_arch(spec)
    try:
        sp = get_space(name)
    except NasirError as e:
        raise located(e, spec) from None
    if not arch:
        if sp.references:
            arch = next(iter(sp.references))
        elif sp.decisions:
            raise NasirError(f"space {name} has no reference; name an assignment",
                             hint=f"write {name}:{{label=value, ...}}")
        else:
            return sp, sp.check({})
    if arch.startswith("{"):
        return sp, sp.check(Assignment.parse(arch))
    from nasir.spaces import get_reference, is_builtin

    if not is_builtin(name):
        return sp, sp.reference(arch)
    return get_reference(name, arch)  # the reference's own build options (e.g. AmoebaNet F=50)


def _run(args) -> int:
    from nasir.passes.analysis import analyze

    if not _is_space(args.target):
        return _show_run(args)
    sp, a = resolve_arch(args.target)
    g = sp.instantiate(a)
    info = analyze(g)
    out = {"space": sp.name, "assignment": a.to_json(), "nodes": len(g),
           "params": info["params"], "macs": info["macs"],
           "activation_bytes": info["activation_bytes"],
           "output_type": str(g.output.type)}
    try:
        from nasir.passes.hashing import graph_hash

        out["hash"] = graph_hash(g)
    except ImportError:  # pragma: no cover
        pass
    if args.json:
        print(json.dumps(out))
    elif args.ir:
        print(g.text(types=True))
    else:
        for k, v in out.items():
            print(f"{k:>16}: {v:,}" if isinstance(v, int) else f"{k:>16}: {v}")
    return 0


def _is_space(target: str) -> bool:
    """Whether ``target`` names a space (else it is taken for a run)."""
    import os

    from nasir.runtime.store import DB_NAME
    from nasir.spaces import space_builder

    if os.path.exists(os.path.join(target, DB_NAME)):
        return False
    try:
        space_builder(split_arch(target)[0])
        return True
    except NasirError:
        return ":" in target


def _show_run(args) -> int:
    try:
        from nasir.commands.runs import show_run
    except ImportError:
        raise NasirError(f"{args.target!r} is not a built-in space",
                         hint="write SPACE or SPACE:ARCH; see `nasir spaces`") from None
    return show_run(args)


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("show", help="analyse an architecture (or a run)",
                       description="Instantiate SPACE[:ARCH] and print params, MACs, nodes.")
    p.add_argument("target", help="SPACE, SPACE:REFERENCE, SPACE:{label=value,...} or a run; "
                                  "SPACE may be file.py:function or package.module:function")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--ir", action="store_true", help="print the typed IR")
    p.set_defaults(run=_run)
