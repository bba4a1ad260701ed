"""Search spaces by spec: built-in names, registered names, entry points and user code.

A *space spec* is one of

- a built-in name (``nb201``, ``mnasnet`` … — :data:`SPACES`);
- a name given to :func:`register_space` in this process;
- a name an installed package declares in the ``nasir.spaces`` entry-point group
  (``[project.entry-points."nasir.spaces"] myspace = "mypkg.spaces:build"``);
- ``package.module:function`` or ``path/to/file.py:function`` (relative to ``base_dir``,
  else the working folder): a function returning a :class:`~nasir.space.Space`.

A space function receives ``input_shape`` and ``num_classes`` when it takes them (the
runner passes the data's), and any other options by keyword.

>>> list(SPACES)[:3]
['nb201', 'mobilenet_v2', 'mnasnet']
>>> get_space("nb201").size
15625
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from importlib import metadata
from typing import Any

from nasir.errors import NasirError, SpecError
from nasir.ops.tensor import InputOp
from nasir.space import Space
from nasir.userload import CodeSource, is_code_spec, load_callable

__all__ = ["ENTRY_POINT_GROUP", "SPACES", "build_space_spec", "get_reference", "get_space",
           "is_builtin", "list_spaces", "reference_names", "reference_options",
           "register_space", "space_builder"]

#: entry-point group installed packages declare their spaces in
ENTRY_POINT_GROUP = "nasir.spaces"

#: name → module with a ``build(**options) -> Space`` function (imported lazily)
SPACES: dict[str, str] = {
    "nb201": "nasir.spaces.nb201",
    "mobilenet_v2": "nasir.spaces.mobilenet_v2",
    "mnasnet": "nasir.spaces.mnasnet",
    "tiny_mnasnet": "nasir.spaces.tiny_mnasnet",
    "proxylessnas": "nasir.spaces.proxyless",
    "tiny_proxyless": "nasir.spaces.tiny_proxyless",
    "fbnet": "nasir.spaces.fbnet",
    "mobilenet_v3": "nasir.spaces.mobilenet_v3",
    "efficientnet": "nasir.spaces.efficientnet",
    "nasnet": "nasir.spaces.nasnet",
    "pnas": "nasir.spaces.pnas",
    "darts": "nasir.spaces.darts",
    "enas_macro": "nasir.spaces.enas",
    "enas_micro": "nasir.spaces.enas_micro",
    "metaqnn": "nasir.spaces.metaqnn",
    "nasrl": "nasir.spaces.nasrl",
}


@lru_cache(maxsize=64)
def _cached(name: str, items: tuple) -> Space:
    mod = importlib.import_module(SPACES[name])
    return mod.build(**dict(items))


_REGISTERED: dict[str, Callable[..., Space]] = {}


def register_space(name: str, build: Callable[..., Space]) -> None:
    """Make ``name`` a space spec for ``build`` in this process (a fresh process — a resumed
    run, ``nasir report`` — rebuilds the space from the copy the run keeps).

    >>> from nasir.spaces import nb201
    >>> register_space("my_nb201", nb201.build)
    >>> get_space("my_nb201", channels=8).name
    'nb201'
    """
    if not isinstance(name, str) or not name or ":" in name or name in SPACES:
        raise SpecError(f"cannot register a space as {name!r}", where=f"register_space({name!r})",
                        hint="use a new name without ':' that is not a built-in space")
    if not callable(build):
        raise SpecError(f"register_space({name!r}, ...) needs a function returning a Space",
                        where=f"register_space({name!r})", hint="pass the space function itself")
    _REGISTERED[name] = build


def _entry_point(name: str) -> Any:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata of some installed package
        return None
    for ep in eps:
        if ep.name == name:
            return ep
    return None


def is_builtin(spec: str) -> bool:
    """Whether ``spec`` is a built-in space name."""
    return spec in SPACES


def space_builder(spec: str, base_dir: str | None = None
                  ) -> tuple[Callable[..., Space], CodeSource | None]:
    """The function a space spec names and, for user code, where it came from."""
    if spec in SPACES:
        return importlib.import_module(SPACES[spec]).build, None
    if spec in _REGISTERED:
        fn = _REGISTERED[spec]
        return fn, None
    if is_code_spec(spec):
        return load_callable(spec, base_dir=base_dir, what="space function")
    ep = _entry_point(spec)
    if ep is not None:
        try:
            fn = ep.load()
        except Exception as e:
            raise SpecError(f"space {spec!r} (entry point {ep.value}) cannot be loaded: "
                            f"{type(e).__name__}: {e}", where=f"entry point {ep.value}") from None
        return fn, load_callable(ep.value, what="space function")[1]
    known = list(SPACES) + list(_REGISTERED)
    raise SpecError(f"unknown space {spec!r}", where=f"space spec {spec!r}",
                    hint=f"built-in spaces: {', '.join(known)}; or name your own: "
                         "path/to/file.py:function or package.module:function")


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _input_shape(sp: Space) -> tuple[int, ...] | None:
    ins = sp.body.inputs
    if not ins:
        return None
    op = ins[0].op
    if not isinstance(op, InputOp):  # a space body's inputs are input ops; no shape otherwise
        return None
    return tuple(int(v) for v in op.shape)


def build_space_spec(spec: str, options: Mapping[str, Any] | None = None, *,
                     base_dir: str | None = None, input_shape: Sequence[int] | None = None,
                     num_classes: int | None = None) -> tuple[Space, dict[str, Any],
                                                              CodeSource | None]:
    """Build the space ``spec`` names for data of ``input_shape`` / ``num_classes``.

    Returns ``(space, options, source)`` where ``options`` are the build options actually
    used (the data's shape and classes added when the function takes them). A space that
    cannot take the data (an explicit option that disagrees, or a space whose input or
    output does not fit) is a :class:`SpecError`.

    >>> sp, opts, _ = build_space_spec("nb201", {"channels": 8}, input_shape=(1, 8, 8),
    ...                                num_classes=10)
    >>> opts
    {'channels': 8, 'input_shape': [1, 8, 8], 'num_classes': 10}
    """
    fn, source = space_builder(spec, base_dir)
    opts = dict(options or {})
    data: dict[str, list[int] | int] = {}
    if input_shape is not None:
        data["input_shape"] = list(input_shape)
    if num_classes is not None:
        data["num_classes"] = int(num_classes)
    for key, want in data.items():
        if key in opts:
            have = list(opts[key]) if key == "input_shape" else opts[key]
            if have != want:
                raise SpecError(f"space option {key}={have} does not fit the data ({key} "
                                f"{want})", where=f"space {spec} option {key}",
                                hint=f"drop the option (the data sets it) or use data "
                                     f"with {key} {have}")
        elif _takes(fn, key):
            opts[key] = want
    sp = get_space(spec, base_dir=base_dir, **opts)
    _check_fits(sp, spec, input_shape, num_classes)
    return sp, opts, source


def _check_fits(sp: Space, spec: str, input_shape: Sequence[int] | None,
                num_classes: int | None) -> None:
    have = _input_shape(sp)
    if input_shape is not None and have is not None and tuple(have) != tuple(input_shape):
        raise SpecError(f"space {spec} takes inputs of shape {list(have)} but the data has "
                        f"{list(input_shape)}", where=f"space {spec}",
                        hint="give the space function an input_shape parameter (the runner "
                             "passes the data's), or use matching data")
    if num_classes is None or not sp.references:
        return
    a = sp.reference(next(iter(sp.references)))
    out = sp.instantiate(a).output.type
    shape = getattr(out, "shape", None)
    if shape is not None and tuple(shape) != (int(num_classes),):
        raise SpecError(f"space {spec} outputs shape {list(shape)} but the data has "
                        f"{num_classes} classes", where=f"space {spec}",
                        hint="give the space function a num_classes parameter (the runner "
                             "passes the data's), or use matching data")


def get_space(name: str, *, base_dir: str | None = None, **options: Any) -> Space:
    """Build (and cache, for built-ins) the space a spec names; options such as
    ``input_shape``, ``num_classes`` are passed to its function."""
    if name in SPACES:
        items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                             for k, v in options.items()))
        try:
            return _cached(name, items)
        except TypeError as e:
            raise SpecError(f"bad option for space {name}: {e}", where=name) from None
    fn, _ = space_builder(name, base_dir)
    try:
        inspect.signature(fn).bind(**options)
    except TypeError as e:
        raise SpecError(f"bad option for space {name}: {e}", where=name) from None
    except ValueError:  # no signature (a builtin): let the call say
        pass
    try:
        sp = fn(**options)
    except NasirError:
        raise
    except Exception as e:
        raise SpecError(f"space function {name} failed: {type(e).__name__}: {e}",
                        where=name) from None
    if not isinstance(sp, Space):
        raise SpecError(f"space function {name} returned {type(sp).__name__}, not a Space",
                        where=name, hint="return SpaceBuilder.build(...)")
    return sp


def list_spaces() -> list[str]:
    """Names of the built-in spaces."""
    return list(SPACES)


def reference_options(name: str) -> dict[str, dict[str, Any]]:
    """Build options under which a space's named references reproduce their papers.

    A space module may define ``REFERENCE_OPTIONS`` (reference name -> ``build`` options),
    e.g. AmoebaNet-A's ``filters=50`` in the NASNet space. A reference listed there that the
    default build cannot express (ENAS's 24-layer macro network) exists only in that build.

    >>> reference_options("nasnet")["amoebanet_a"]
    {'filters': 50}
    """
    if name not in SPACES:
        raise SpecError(f"unknown space {name!r}", where=f"space {name!r}",
                        hint=f"built-in spaces: {', '.join(SPACES)}")
    mod = importlib.import_module(SPACES[name])
    return {k: dict(v) for k, v in getattr(mod, "REFERENCE_OPTIONS", {}).items()}


def reference_names(name: str) -> list[str]:
    """Every named reference of a space: the default build's, then those that need options."""
    names = list(get_space(name).references)
    return names + [r for r in reference_options(name) if r not in names]


def get_reference(name: str, ref: str, **options: Any) -> tuple[Space, Any]:
    """``(space, assignment)`` of reference ``ref``, the space built with the reference's
    own options (see :func:`reference_options`) updated by ``options``.

    >>> sp, a = get_reference("nasnet", "amoebanet_a", input_shape=(3, 32, 32))
    >>> sp.meta["macro"]["filters"], a["normal_b0_op_a"]
    (50, 'avg_pool_3x3')
    """
    opts = {**reference_options(name).get(ref, {}), **options}
    sp = get_space(name, **opts)
    return sp, sp.reference(ref)
