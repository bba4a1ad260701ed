"""User ops: a candidate the op set lacks (GELU, LayerNorm, attention) from a torch module.

:func:`user_op` declares a new op from a torch module factory and a shape rule. The result
is an op class like the built-in ones — typed, frozen attributes with a check on creation,
registered in :data:`~nasir.ops.OPS` under its name — so graphs and spaces that use it
print and parse back in the text and JSON forms once the module defining it is imported.

The op is opaque to the passes: shape/type inference calls the shape rule; parameters are
the module's parameters; MACs come from the declared rule or, without one, from
``torch.utils.flop_counter.FlopCounterMode`` on a batch of one (MACs = FLOPs / 2, so
element-wise ops count 0 as they do for the built-in ops); hashing uses the op's name and
attributes; canonicalization keeps it (it is not zero-preserving). The torch backend
makes the module a submodule named like the node; the TVM backend imports it through
``torch.export`` and TVM's Relax importer.

>>> import torch
>>> from nasir.types import TensorType
>>> Gelu = user_op("doc_gelu", module=lambda t, approximate: torch.nn.GELU(approximate),
...                shape=lambda t, **attrs: t.shape, attrs={"approximate": "none"})
>>> op = Gelu(approximate="tanh")
>>> t = TensorType((4, 8, 8))
>>> op.infer((t,)), op.params((t,), t), op.macs((t,), t)
(f32[4,8,8], 0, 0)
>>> from nasir.text import parse_graph
>>> g = parse_graph('graph @g {\\n  %x = input() {shape=[4, 8, 8]}\\n'
...                 '  %1 = doc_gelu(%x) {approximate="tanh"}\\n  return %1\\n}')
>>> g.nodes()[1].op == op
True
>>> Gelu(approximate=1)
Traceback (most recent call last):
...
nasir.errors.SpecError: doc_gelu: attribute approximate must be str, got 1
  fix:   declared by user_op 'doc_gelu' at <doctest nasir.ops.user[2]>:1
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from nasir.errors import NasirError, SpecError, VerifyError
from nasir.loc import SourceLoc
from nasir.ops.base import OPS, Op, Ref, register_op
from nasir.types import TensorType

__all__ = ["UserOp", "UserOpDef", "UserOpProbe", "user_op"]

#: ``module(in_type, **attrs) -> torch.nn.Module`` (``in_type``: per-sample TensorType)
ModuleFactory = Callable[..., Any]
#: ``shape(in_type, **attrs) -> tuple of ints`` (or a TensorType), per sample
ShapeRule = Callable[..., Any]
#: ``macs(in_shape, out_shape, **attrs) -> int`` (per-sample shapes as tuples)
MacsRule = Callable[..., int]

_PLAIN = (bool, int, float, str, tuple, type(None))
_TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64"}


def _where(fn: Callable[..., Any]) -> str:
    """``file:line`` where a user's function is defined (for error messages)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", repr(fn))
    path = code.co_filename
    try:
        rel = os.path.relpath(path)
        path = path if rel.startswith("..") else rel
    except ValueError:
        pass
    return f"{path}:{code.co_firstlineno}"


@dataclass(frozen=True)
class UserOpDef:
    """What :func:`user_op` was given: the rules, the attribute types and where."""

    module: ModuleFactory
    shape: ShapeRule
    macs: MacsRule | None
    types: Mapping[str, type]
    loc: SourceLoc | None


@dataclass(frozen=True)
class UserOpProbe:
    """Facts measured once per input type by building and running the module."""

    params: int
    macs: int
    out_shape: tuple[int, ...]
    #: floating-point state-dict entries: name -> shape (what backends treat as weights)
    state: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class UserOp(Op):
    """Base of the op classes :func:`user_op` makes; one input, opaque to the passes."""

    name: ClassVar[str] = "user_op"
    #: set by :func:`user_op` on each subclass
    definition: ClassVar[UserOpDef]

    def check(self) -> None:
        for key, typ in self.definition.types.items():
            v = getattr(self, key)
            if typ is type(None):
                if not isinstance(v, _PLAIN):
                    raise self._bad(key, f"must be a plain value, got {v!r}")
                continue
            ok = isinstance(v, typ) and (typ is bool or not isinstance(v, bool))
            if typ is float and isinstance(v, int) and not isinstance(v, bool):
                ok = True
            if not ok:
                raise self._bad(key, f"must be {typ.__name__}, got {v!r}",
                                hint=f"declared by user_op {self.name!r} at "
                                     f"{self.definition.loc}")

    def _rule_error(self, what: str, fn: Callable[..., Any], err: str) -> VerifyError:
        return VerifyError(f"{self.name}: {what} (defined at {_where(fn)}) {err}",
                           hint=f"fix the rule of user op {self.name!r} (declared at "
                                f"{self.definition.loc})")

    def infer(self, ins: tuple[TensorType, ...]) -> TensorType:
        t = ins[0]
        rule = self.definition.shape
        try:
            out = rule(t, **self.attrs())
        except NasirError:
            raise
        except Exception as e:
            raise self._rule_error("the shape rule", rule,
                                   f"raised {type(e).__name__}: {e} on input {t}") from None
        if isinstance(out, TensorType):
            return out
        shape = tuple(out) if isinstance(out, tuple | list) else None
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                            for d in shape):
            raise self._rule_error("the shape rule", rule,
                                   f"returned {out!r} for input {t}; it must return the "
                                   "per-sample output shape, a tuple of positive ints")
        return TensorType(shape, t.dtype)

    # -- the module ----------------------------------------------------------------
    def build_module(self, in_type: TensorType, seed: int | None = None) -> Any:
        """A new module from the user's factory (its own initialisation; drawn from a
        generator seeded with ``seed`` when given)."""
        import torch

        fn = self.definition.module
        try:
            if seed is None:
                m = fn(in_type, **self.attrs())
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    m = fn(in_type, **self.attrs())
        except NasirError:
            raise
        except Exception as e:
            raise self._rule_error("the module factory", fn,
                                   f"raised {type(e).__name__}: {e} on input {in_type}") from None
        if not isinstance(m, torch.nn.Module):
            raise self._rule_error("the module factory", fn,
                                   f"returned {type(m).__name__}, not a torch.nn.Module")
        return m

    def probe(self, in_type: TensorType) -> UserOpProbe:
        """Build the module once for ``in_type`` (cached): parameters, MACs, the output
        shape it really gives (checked against the shape rule) and its weight shapes."""
        cache = self.__dict__.get("_probe")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_probe", cache)
        hit = cache.get(in_type)
        if hit is None:
            hit = cache[in_type] = self._measure(in_type)
        return hit

    def _measure(self, in_type: TensorType) -> UserOpProbe:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        want = self.infer((in_type,))
        m = self.build_module(in_type, seed=0).eval()
        dtype = getattr(torch, _TORCH_DTYPES.get(in_type.dtype, "float32"))
        x = torch.randn((1, *in_type.shape), generator=torch.Generator().manual_seed(0),
                        dtype=dtype)
        try:
            # fused kernels the flop counter does not know stay off: autograd on (no
            # nn.MultiheadAttention fast path) and the math backend of attention
            with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]), \
                    FlopCounterMode(display=False) as fc:
                y = m(x)
        except Exception as e:
            raise self._rule_error("the module from the factory", self.definition.module,
                                   f"failed on a batch of input {in_type}: "
                                   f"{type(e).__name__}: {e}") from None
        got = tuple(y.shape[1:]) if isinstance(y, torch.Tensor) else None
        if got != want.shape:
            raise self._rule_error(
                "the module from the factory", self.definition.module,
                f"returns per-sample shape {list(got) if got else type(y).__name__} but the "
                f"shape rule ({_where(self.definition.shape)}) says {list(want.shape)}")
        state = {k: tuple(v.shape) for k, v in m.state_dict().items()
                 if v.is_floating_point()}
        params = sum(p.numel() for p in m.parameters())
        return UserOpProbe(int(params), int(fc.get_total_flops()) // 2, got, state)

    # -- analyses ------------------------------------------------------------------
    def params(self, ins: tuple[TensorType, ...], out: TensorType) -> int:
        return self.probe(ins[0]).params

    def macs(self, ins: tuple[TensorType, ...], out: TensorType) -> int:
        rule = self.definition.macs
        if rule is None:
            return self.probe(ins[0]).macs
        try:
            v = rule(ins[0].shape, out.shape, **self.attrs())
        except Exception as e:
            raise self._rule_error("the MACs rule", rule,
                                   f"raised {type(e).__name__}: {e}") from None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self._rule_error("the MACs rule", rule, f"returned {v!r}, not an int >= 0")
        return v

    def __reduce__(self) -> tuple:
        # by name, like the text form: the defining module must be imported to unpickle
        return (_user_op_instance, (self.name, self.attrs()))


def _user_op_instance(name: str, attrs: dict[str, Any]) -> Op:
    from nasir.ops.base import get_op

    return get_op(name)(**attrs)


_RESERVED = frozenset(dir(UserOp)) | {"definition"}


def _caller() -> SourceLoc | None:
    f = sys._getframe(2)
    path = f.f_code.co_filename
    try:
        rel = os.path.relpath(path)
        path = path if rel.startswith("..") else rel
    except ValueError:
        pass
    return SourceLoc(path, f.f_lineno)


def _attr_fields(name: str, attrs: Mapping[str, Any]) -> tuple[list, dict[str, type]]:
    fields: list = []
    types: dict[str, type] = {}
    for key, default in attrs.items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_") \
                or key in _RESERVED:
            raise SpecError(f"user op {name!r}: bad attribute name {key!r}",
                            hint="use a plain identifier that does not start with '_' and "
                                 "is not a name Op already uses (name, arity, check, ...)")
        if isinstance(default, list):
            default = tuple(default)
        if not isinstance(default, _PLAIN) or isinstance(default, Ref):
            raise SpecError(f"user op {name!r}: attribute {key} has default {default!r}",
                            hint="defaults are plain values: int, float, bool, str, a "
                                 "tuple of them, or None (any plain value)")
        typ = type(default)
        types[key] = typ
        fields.append((key, typ | Ref, dataclasses.field(default=default)))
    return fields, types


def user_op(name: str, *, module: ModuleFactory, shape: ShapeRule,
            macs: MacsRule | None = None, attrs: Mapping[str, Any] | None = None,
            doc: str | None = None) -> type[UserOp]:
    """Declare and register a one-input op lowered from a torch module; returns its class.

    Args:
        name: the op's name in the text form (letters, digits, ``_``; not a built-in op).
        module: ``module(in_type, **attrs)`` returns a new ``torch.nn.Module`` for a
            per-sample input type ``in_type``; it is called with batched tensors.
        shape: ``shape(in_type, **attrs)`` returns the per-sample output shape.
        macs: ``macs(in_shape, out_shape, **attrs)`` returns the multiply-accumulates per
            sample; without it torch's flop counter measures a batch of one.
        attrs: attribute name → default value; the default's type is the attribute's type
            (an int, float, bool, str or tuple; ``None`` admits any plain value). Values
            may be :class:`~nasir.ops.Ref` from ``SpaceBuilder.value`` in a space.
        doc: the class docstring.

    Declaring the same name again from the same file (a re-import) replaces the old op;
    from elsewhere it is a :class:`~nasir.errors.SpecError`.
    """
    loc = _caller()
    if not isinstance(name, str) or not name.isidentifier():
        raise SpecError(f"user op name {name!r} is not an identifier", loc=loc,
                        hint="use letters, digits and '_' (e.g. 'gelu', 'layer_norm')")
    for what, fn in (("module", module), ("shape", shape), ("macs", macs)):
        if fn is not None and not callable(fn):
            raise SpecError(f"user op {name!r}: {what} must be callable, got {fn!r}", loc=loc)
    old = OPS.get(name)
    if old is not None:
        old_def = getattr(old, "definition", None)
        same_file = (old_def is not None and old_def.loc is not None and loc is not None
                     and old_def.loc.file == loc.file)
        if not same_file:
            where = f"the user op declared at {old_def.loc}" if old_def else "a built-in op"
            raise SpecError(f"op name {name!r} is already taken by {where}", loc=loc,
                            hint="give the user op another name")
        del OPS[name]
    fields, types = _attr_fields(name, attrs or {})
    cls_name = "".join(p.capitalize() for p in name.split("_")) + "Op"
    definition = UserOpDef(module, shape, macs, types, loc)
    cls = dataclasses.make_dataclass(
        cls_name, fields, bases=(UserOp,), frozen=True,
        namespace={"name": name, "definition": definition,
                   "__doc__": doc or f"User op {name!r} (declared at {loc})."})
    cls.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)
    return register_op(cls)
