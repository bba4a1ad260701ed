"""A run keeps what it needs to rebuild its space, in any process, from any folder.

At start, ``RUN/space/`` gets ``source.json`` (the spec, its options, where the code came
from and the SHA-256 of the file), a copy of the user's file when the space comes from one,
and ``space.txt`` — the space in nasir's text form. Later (``resume``, ``show``, ``report``,
``export``, each worker) :func:`load_run_space` rebuilds it:

- a built-in space is built from its name and options;
- a space from user code is built from the user's file when its content is unchanged;
  when the file changed or is gone, the stored copy is used and a note says so;
- a space that cannot be rebuilt from code (a name registered in the process that made
  the run, a :class:`~nasir.space.Space` handed to :func:`nasir.optimize`) is parsed from
  ``space.txt``.

A rebuilt space is compared with ``space.txt`` (source locations aside); if it differs, the
stored text wins, with a note.

>>> import tempfile
>>> from nasir.spaces import get_space
>>> d = tempfile.mkdtemp()
>>> exp = {"space": {"name": "nb201", "options": {}}}
>>> keep_space(d, exp, get_space("nb201"), None)
>>> load_run_space(exp, d).size
15625
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from typing import Any

from nasir.errors import NasirError
from nasir.space import Space
from nasir.userload import CodeSource, file_sha256, is_code_spec, load_file_module, split_spec

__all__ = ["SPACE_DIR", "keep_space", "load_run_space", "space_fingerprint"]

SPACE_DIR = "space"
_LOC = re.compile(r' loc\("(?:[^"\\]|\\.)*"\)')


def space_fingerprint(sp: Space) -> str:
    """The space's text form without source locations (what must match on rebuild)."""
    return _LOC.sub("", sp.text())


def keep_space(run_dir: str, exp: Mapping[str, Any], space: Space,
               source: CodeSource | None) -> None:
    """Write ``RUN/space/``: ``source.json``, ``space.txt`` and a copy of the user's file."""
    folder = os.path.join(run_dir, SPACE_DIR)
    os.makedirs(folder, exist_ok=True)
    spec = dict(exp.get("space") or {})
    record: dict[str, Any] = {"spec": spec.get("name"), "options": spec.get("options") or {},
                              "kind": "builtin", "text": "space.txt"}
    from nasir.spaces import is_builtin

    if not is_builtin(str(record["spec"])):
        record["kind"] = "code" if source is not None else "text"
    if source is not None:
        record["source"] = source.to_json()
        if source.file and os.path.isfile(source.file):
            copy = os.path.basename(source.file)
            shutil.copyfile(source.file, os.path.join(folder, copy))
            record["copy"] = copy
    ops = _user_op_files(space)
    if ops:
        record["user_ops"] = {}
        for name, path in ops.items():
            copy = f"op_{name}_{os.path.basename(path)}"
            shutil.copyfile(path, os.path.join(folder, copy))
            record["user_ops"][name] = {"file": path, "copy": copy}
    with open(os.path.join(folder, "space.txt"), "w") as fh:
        fh.write(space.text())
    tmp = os.path.join(folder, "source.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(record, fh, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(folder, "source.json"))


def _user_op_files(space: Space) -> dict[str, str]:
    """User ops (``nasir.ops.user_op``) the space uses → the file that declares each."""
    from nasir.ops import OPS
    from nasir.ops.user import UserOp

    used = set(re.findall(r"= (\w+)\(", space.text()))
    out: dict[str, str] = {}
    for name in sorted(used):
        cls = OPS.get(name)
        if isinstance(cls, type) and issubclass(cls, UserOp):
            loc = getattr(cls.definition, "loc", None)
            file = getattr(loc, "file", None)
            if file and os.path.isfile(file):
                out[name] = os.path.abspath(file)
    return out


def _import_user_ops(record: Mapping[str, Any], folder: str) -> None:
    """Import the files declaring the run's user ops (the original, else the kept copy) so
    the stored text form parses in a fresh process."""
    from nasir.ops import OPS

    for name, where in dict(record.get("user_ops") or {}).items():
        if name in OPS:
            continue
        path = where["file"] if os.path.isfile(where["file"]) else os.path.join(
            folder, where["copy"])
        load_file_module(path)


def _from_copy(record: Mapping[str, Any], folder: str) -> Space:
    src = record["source"]
    mod = load_file_module(os.path.join(folder, record["copy"]))
    _, attr = split_spec(src["spec"])
    obj: Any = mod
    for part in attr.split("."):
        obj = getattr(obj, part)
    sp = obj(**dict(record.get("options") or {}))
    if not isinstance(sp, Space):
        raise NasirError(f"the stored copy of {src['spec']} did not return a Space",
                         where=os.path.join(folder, record["copy"]))
    return sp


def _from_code(record: Mapping[str, Any], folder: str, notes: list[str]) -> Space | None:
    from nasir.spaces import get_space

    src = record.get("source") or {}
    file, sha = src.get("file"), src.get("sha256")
    unchanged = bool(file) and os.path.isfile(str(file)) and file_sha256(str(file)) == sha
    if unchanged or not record.get("copy"):
        try:
            return get_space(str(record["spec"]), **dict(record.get("options") or {}))
        except NasirError:
            if not record.get("copy"):
                return None
    what = "changed since the run began" if file and os.path.isfile(file) else "is gone"
    notes.append(f"space file {file} {what}; using the copy the run kept "
                 f"({os.path.join(folder, record['copy'])})")
    return _from_copy(record, folder)


def load_run_space(exp: Mapping[str, Any], run_dir: str | None,
                   notes: list[str] | None = None) -> Space:
    """The space of the run in ``run_dir`` (see the module docstring); ``notes`` collects
    what a user should be told (a changed file, a fallback to the stored text)."""
    from nasir.spaces import get_space

    notes = notes if notes is not None else []
    spec = dict(exp.get("space") or {})
    name, options = str(spec.get("name", "tiny_mnasnet")), dict(spec.get("options") or {})
    folder = os.path.join(run_dir, SPACE_DIR) if run_dir else None
    path = os.path.join(folder, "source.json") if folder else None
    if path is None or not os.path.isfile(path):
        return get_space(name, **options)  # a run made before runs kept their space
    with open(path) as fh:
        record = json.load(fh)
    if record.get("kind") == "builtin":
        return get_space(name, **options)
    assert folder is not None
    sp: Space | None = None
    if record.get("kind") == "code" or is_code_spec(name):
        sp = _from_code(record, folder, notes)
    elif record.get("kind") != "text":
        try:
            sp = get_space(name, **options)
        except NasirError:
            sp = None
    with open(os.path.join(folder, record.get("text", "space.txt"))) as fh:
        text = fh.read()
    if sp is not None and space_fingerprint(sp) == _LOC.sub("", text):
        return sp
    from nasir.space_text import parse_space

    _import_user_ops(record, folder)
    if sp is not None:
        notes.append(f"space {name} no longer builds the space the run began with; "
                     f"using the stored text form ({os.path.join(folder, 'space.txt')})")
    return parse_space(text)
