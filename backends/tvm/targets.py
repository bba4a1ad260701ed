"""Compilation targets: a small registry of names, TVM JSON dicts, and old CLI strings.

A target is given as a registry name (``host``, ``cuda``, ``aarch64``, ``armv7``), as TVM's
JSON dict (``{"kind": "llvm", "mcpu": "skylake"}``, also as a JSON string), or as an old
TVM CLI string (``"llvm -mcpu=skylake"``), which is translated to the dict form.

>>> resolve_target("llvm -mcpu=skylake -mattr=+avx2,+fma").config
{'kind': 'llvm', 'mattr': ['+avx2', '+fma'], 'mcpu': 'skylake'}
>>> resolve_target("aarch64").cross
True
>>> resolve_target("tpu")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
nasir.errors.TargetError: unknown target 'tpu'
  where: tpu
  fix:   give a registry name (host, cuda, aarch64, armv7), a TVM JSON dict such as ...
"""

from __future__ import annotations

import json
import platform
import re
import reprlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from nasir.errors import TargetError

__all__ = ["KINDS", "REGISTRY", "TargetSpec", "host_cpu", "resolve_target"]

#: target kinds this backend compiles for
KINDS = ("llvm", "cuda")

#: registry name → TVM target dict (``"host"`` gets the detected ``mcpu`` when resolved)
REGISTRY: dict[str, dict[str, Any]] = {
    "host": {"kind": "llvm"},
    "cuda": {"kind": "cuda"},
    "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
    "armv7": {"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mattr": ["+neon"]},
}
_ALIASES = {"llvm": "host", "cpu": "host", "gpu": "cuda", "arm64": "aarch64", "arm": "armv7"}
#: cross compilers tried for exporting a shared library per triple prefix
_CROSS_CC = {"aarch64": ("aarch64-linux-gnu-g++", "aarch64-linux-gnu-gcc"),
             "armv7": ("arm-linux-gnueabihf-g++", "arm-linux-gnueabihf-gcc")}

_FORMS = ("give a registry name (host, cuda, aarch64, armv7), a TVM JSON dict such as "
          '{"kind": "llvm", "mcpu": "skylake"}, or a CLI string such as '
          f'"llvm -mcpu=skylake"; supported kinds: {", ".join(KINDS)}')


@lru_cache(maxsize=1)
def host_cpu() -> str:
    """LLVM's name for this machine's CPU (``llvm_get_system_cpu``), or ``"generic"``."""
    try:
        from tvm.target import codegen

        return str(codegen.llvm_get_system_cpu()) or "generic"
    except Exception:  # pragma: no cover - LLVM not built in
        return "generic"


def _host_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target: the TVM dict, the device kind, and whether it is cross-compiled.

    ``name`` is the registry name or ``"custom"``; ``key()`` is the canonical JSON used by
    the latency cache.
    """

    name: str
    config: dict[str, Any] = field(hash=False, compare=False)
    cross: bool = False

    @property
    def kind(self) -> str:
        """``llvm`` or ``cuda``."""
        return str(self.config["kind"])

    @property
    def device(self) -> str:
        """TVM device kind the compiled code runs on (``cpu`` or ``cuda``)."""
        return "cuda" if self.kind == "cuda" else "cpu"

    @property
    def host_cpu(self) -> bool:
        """Whether the code runs on this machine's CPU (not cross-compiled, not CUDA)."""
        return not self.cross and self.device == "cpu"

    def key(self) -> str:
        """Canonical JSON of the target dict (sorted keys)."""
        return json.dumps(self.config, sort_keys=True)

    def tvm(self) -> Any:
        """The ``tvm.target.Target``."""
        from tvm.target import Target

        return Target(dict(self.config))

    def cross_compiler(self) -> str | None:
        """Path of a C++ cross compiler for this triple, or ``None`` if none is installed."""
        triple = str(self.config.get("mtriple", ""))
        for prefix, names in _CROSS_CC.items():
            if triple.startswith(prefix):
                for cc in names:
                    found = shutil.which(cc)
                    if found:
                        return found
        return None

    def __str__(self) -> str:
        return self.name if self.name != "custom" else self.key()


def _parse_cli(text: str) -> dict[str, Any]:
    parts = text.split()
    out: dict[str, Any] = {"kind": parts[0]}
    for tok in parts[1:]:
        if not tok.startswith("-"):
            raise TargetError(f"cannot read target option {tok!r} in {text!r}", where=text,
                              hint=_FORMS)
        k, eq, v = tok.lstrip("-").partition("=")
        if not k:
            raise TargetError(f"empty option in target {text!r}", where=text, hint=_FORMS)
        if not eq:
            out[k] = True
        elif k in ("mattr", "libs", "keys", "cl-opt"):
            out[k] = [x for x in v.split(",") if x]
        elif v.lstrip("-").isdigit():
            out[k] = int(v)
        else:
            out[k] = v
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "kind", kv[0])))


def _normalise(spec: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, Mapping):
        return "custom", dict(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise TargetError(f"a target must be a name, a dict or a string, got "
                          f"{reprlib.repr(spec)}",
                          where="target", hint=_FORMS)
    text = spec.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except RecursionError:
            raise TargetError("target JSON is nested too deeply", where=text[:80],
                              hint=_FORMS) from None
        except json.JSONDecodeError as e:
            raise TargetError(f"target JSON is malformed: {e.msg} at column {e.colno}",
                              where=text, hint=_FORMS) from None
        if not isinstance(obj, dict):
            raise TargetError("target JSON must be an object", where=text, hint=_FORMS)
        return "custom", obj
    name = _ALIASES.get(text, text)
    if name in REGISTRY:
        return name, dict(REGISTRY[name])
    if " " in text or text in KINDS:
        return "custom", _parse_cli(text)
    raise TargetError(f"unknown target {text!r}", where=text, hint=_FORMS)


#: what a target option's text may hold: TVM 0.27 segfaults on, e.g., a backslash in mtriple
_SAFE_TEXT = re.compile(r"[A-Za-z0-9_.,+\-=:/ ]*")


#: architectures (the triple's first part) LLVM knows; TVM 0.27 segfaults on some unknown
#: ones that start like a known one (``aarch64ref-linux-gnu``), so others are refused first
_ARCH = re.compile(r"x86_64|x86-64|amd64|i[3-6]86|aarch64(_be|_32)?|arm64(e|_32)?|"
                   r"armv[0-9][0-9a-z.]*(eb)?|arm(eb)?|thumb(v[0-9][0-9a-z.]*)?(eb)?|"
                   r"riscv(32|64)|wasm(32|64)|mips(64)?(el)?(r6)?|powerpc(64)?(le)?|"
                   r"ppc(64)?(le)?|s390x|systemz|hexagon|nvptx(64)?|amdgcn|r600|"
                   r"sparc(v9|el)?|loongarch(32|64)|bpf(el|eb)?|msp430|avr|m68k|csky|ve")


def _check_values(cfg: Mapping[str, Any], where: str) -> None:
    """Refuse keys and text values TVM cannot take before handing the dict to TVM."""
    triple = cfg.get("mtriple")
    if isinstance(triple, str) and not _ARCH.fullmatch(triple.split("-")[0]):
        raise TargetError(f"unknown architecture {triple.split('-')[0]!r} in mtriple "
                          f"{triple!r}", where=where,
                          hint="write a triple such as x86_64-linux-gnu or aarch64-linux-gnu")
    for k, v in cfg.items():
        items = v if isinstance(v, list) else [v]
        if any(x is None or isinstance(x, list | dict) for x in items):
            raise TargetError(f"target option {reprlib.repr(k)} must be text, a number or a "
                              f"list of them, not {reprlib.repr(v)}", where=where, hint=_FORMS)
        if not isinstance(k, str) or not _SAFE_TEXT.fullmatch(k) or any(
                isinstance(x, str) and not _SAFE_TEXT.fullmatch(x) for x in items):
            raise TargetError(f"target option {reprlib.repr(k)} = {reprlib.repr(v)} has "
                              "characters TVM cannot take",
                              where=where, hint="use letters, digits and _ . , + - = : /")


def resolve_target(spec: str | Mapping[str, Any] | TargetSpec) -> TargetSpec:
    """Resolve a target name, dict, JSON string or old CLI string to a :class:`TargetSpec`.

    ``host`` (and a bare ``llvm`` dict without ``mcpu`` or ``mtriple``) gets the detected
    host CPU. Raises :class:`~nasir.errors.TargetError` listing the valid forms otherwise.

    >>> resolve_target({"kind": "cuda", "arch": "sm_80"}).device
    'cuda'
    """
    if isinstance(spec, TargetSpec):
        return spec
    name, cfg = _normalise(spec)
    kind = cfg.get("kind")
    where = reprlib.repr(spec) if isinstance(spec, Mapping) else str(spec)
    if kind not in KINDS:
        raise TargetError(f"unsupported target kind {reprlib.repr(kind)}", where=where,
                          hint=_FORMS)
    _check_values(cfg, where)
    if kind == "llvm" and "mtriple" not in cfg and "mcpu" not in cfg:
        cfg["mcpu"] = host_cpu()
    triple = str(cfg.get("mtriple", ""))
    cross = kind == "llvm" and bool(triple) and not triple.startswith(_host_arch())
    try:
        from tvm.target import Target

        Target(dict(cfg))
    except Exception as e:
        raise TargetError(f"TVM rejects target {json.dumps(cfg)}: {str(e).splitlines()[0]}",
                          where=where, hint=_FORMS) from None
    if name == "host" and cross:  # pragma: no cover - registry host is never cross
        cross = False
    return TargetSpec(name, cfg, cross)
