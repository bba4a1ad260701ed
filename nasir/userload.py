"""Loading the user's code by spec: ``package.module:function`` or ``path/to/file.py:function``.

Spaces, data sets and evaluators can all live in the user's own files. A spec names a
callable either by an importable module (``mypkg.spaces:build``) or by a Python file
(``spaces/mine.py:build``, relative to ``base_dir`` — the experiment file's folder — else
the working folder). :func:`load_callable` returns the callable with a :class:`CodeSource`
that records where it came from (the file and the SHA-256 of its content), so a run can keep
a copy and notice later when the file changed.

A file is imported under a private module name derived from its path and content, with its
folder on ``sys.path`` so it can import its neighbours; importing it again with the same
content returns the same module. Code guarded by ``if __name__ == "__main__":`` does not run.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> with open(os.path.join(d, "mine.py"), "w") as fh:
...     _ = fh.write("def build(width=8):\\n    return width * 2\\n")
>>> fn, src = load_callable("mine.py:build", base_dir=d)
>>> fn(), src.kind, os.path.basename(src.file), len(src.sha256)
(16, 'file', 'mine.py', 64)
>>> try:
...     load_callable("mine.py:missing", base_dir=d, what="space function")
... except NasirError as e:
...     print(e.message)
space function 'missing' not found in mine.py
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from nasir.errors import NasirError

__all__ = ["CodeSource", "file_sha256", "importing", "is_code_spec", "load_callable",
           "load_file_module", "resolve_spec_path", "split_spec"]

_IMPORTING: list[str] = []


def importing() -> str | None:
    """The user file nasir is importing right now (``None`` when none)."""
    return _IMPORTING[-1] if _IMPORTING else None


@dataclass(frozen=True)
class CodeSource:
    """Where a user callable came from: ``kind`` is ``file`` or ``module``; ``file`` the
    absolute path of its source file (``None`` when unknown) and ``sha256`` its content hash."""

    spec: str
    kind: str
    target: str
    attr: str
    file: str | None
    sha256: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dict(self.__dict__)


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def split_spec(spec: str) -> tuple[str, str]:
    """``"a/b.py:fn"`` → ``("a/b.py", "fn")``; the attribute is after the *last* colon
    (so Windows drive letters survive).

    >>> split_spec("pkg.mod:build"), split_spec("spaces/x.py:make")
    (('pkg.mod', 'build'), ('spaces/x.py', 'make'))
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise NasirError(f"{spec!r} is not a MODULE:FUNCTION or FILE.py:FUNCTION spec",
                         where=f"spec {spec!r}",
                         hint="write e.g. mypkg.spaces:build or spaces/mine.py:build")
    return target, attr


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def is_code_spec(spec: str) -> bool:
    """Whether ``spec`` looks like ``MODULE:FUNCTION`` or ``FILE.py:FUNCTION``.

    >>> is_code_spec("x.py:build"), is_code_spec("my.mod:f"), is_code_spec("nb201")
    (True, True, False)
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        return False
    return _is_file_target(target) or all(p.isidentifier() for p in target.split("."))


def resolve_spec_path(spec: str, base_dir: str | None) -> str:
    """``spec`` with a relative file part made absolute against ``base_dir`` (else the
    working folder); module specs are returned unchanged."""
    target, attr = split_spec(spec)
    if not _is_file_target(target):
        return spec
    path = os.path.abspath(os.path.join(base_dir or os.getcwd(), os.path.expanduser(target)))
    return f"{path}:{attr}"


def load_file_module(path: str) -> ModuleType:
    """Import the Python file at ``path`` (cached by path and content)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise NasirError(f"no such file {path}", where=path,
                         hint="check the path (relative paths are taken from the experiment file's "
                              "folder, else the working folder)")
    digest = file_sha256(path)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"_nasir_user_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}_{digest[:12]}"
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise NasirError(f"cannot import {path}", where=path,
                         hint="name a Python source file (.py)")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    _IMPORTING.append(path)
    try:
        spec.loader.exec_module(mod)
    except NasirError:
        sys.modules.pop(name, None)
        raise
    except Exception as e:
        sys.modules.pop(name, None)
        raise NasirError(f"importing {path} failed: {type(e).__name__}: {e}",
                         where=_user_frame(e, path), hint="fix the error in that file") from None
    finally:
        _IMPORTING.pop()
    return mod


def _user_frame(e: BaseException, path: str) -> str:
    tb = e.__traceback__
    line = None
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}:{line}" if line else path


def load_callable(spec: str, *, base_dir: str | None = None,
                  what: str = "function") -> tuple[Callable[..., Any], CodeSource]:
    """The callable a ``MODULE:FUNCTION`` / ``FILE.py:FUNCTION`` spec names, and its source.

    Errors (missing file or module, import failure, missing or non-callable attribute) are
    one :class:`NasirError` naming the spec and what to do."""
    target, attr = split_spec(spec)
    file: str | None
    if _is_file_target(target):
        path = os.path.abspath(os.path.join(base_dir or os.getcwd(),
                                            os.path.expanduser(target)))
        if not os.path.isfile(path):
            raise NasirError(f"{what} file {target} not found", where=path,
                             hint="give a path relative to the experiment file's folder "
                                  "(or the working folder), or an absolute one")
        mod = load_file_module(path)
        kind, file = "file", path
        shown: str = os.path.basename(path)
    else:
        try:
            mod = importlib.import_module(target)
        except ImportError as e:
            raise NasirError(f"cannot import module {target!r} for the {what}: {e}",
                             where=spec, hint="install it, put it on PYTHONPATH, or name a "
                                              "file: path/to/file.py:FUNCTION") from None
        except NasirError:
            raise
        except Exception as e:
            raise NasirError(f"importing {target} failed: {type(e).__name__}: {e}",
                             where=spec) from None
        kind = "module"
        where_from = getattr(mod, "__file__", None)
        file = os.path.abspath(where_from) if where_from else None
        shown = target
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(mod) if not n.startswith("_")
                     and callable(getattr(mod, n, None))]
            raise NasirError(f"{what} {attr!r} not found in {shown}", where=spec,
                             hint=f"callables there: {', '.join(names[:12]) or '(none)'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise NasirError(f"{what} {spec!r} is not callable", where=spec,
                         hint="name a function")
    sha = file_sha256(file) if file and os.path.isfile(file) else None
    return obj, CodeSource(spec, kind, target, attr, file, sha)
