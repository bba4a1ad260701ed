"""Window arithmetic shared by the convolution and pooling ops: :func:`pair`,
:func:`conv_out`, :func:`resolve_padding` (the one "same"-padding rule every backend uses),
and the checks and output-size inference of a windowed op.
"""

from __future__ import annotations

from nasir.ops.base import Op, Ref, concrete
from nasir.types import TensorType

__all__ = ["conv_out", "pair", "resolve_padding"]

#: a window attribute: one int for both axes or a (height, width) pair; in a space, a Ref
#: for the whole value or for either entry
IntOrPair = int | tuple[int | Ref, int | Ref] | Ref


def pair(v: IntOrPair) -> tuple[int, int]:
    """``3 -> (3, 3)``; a 2-tuple is returned as is."""
    if type(v) is int:  # the hot case (shape inference): no call
        return (v, v)
    if isinstance(v, tuple):
        a, b = v
        if isinstance(a, int) and isinstance(b, int):
            return (a, b)
        return (int(concrete(a)), int(concrete(b)))
    n = int(concrete(v))
    return (n, n)


def conv_out(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    """Output length of a convolution or pooling window along one axis."""
    num = size + 2 * p - d * (k - 1) - 1
    if ceil:
        return -(-num // s) + 1
    return num // s + 1


def _check_pair(op: Op, field: str, minimum: int) -> None:
    v = getattr(op, field)
    vals = v if isinstance(v, tuple) else (v,)
    if isinstance(v, tuple) and len(v) != 2:
        raise op._bad(field, f"must be an int or a pair of ints, got {v!r}")
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, int) or x < minimum:
            raise op._bad(field, f"must be an int >= {minimum} or a pair of them, got {v!r}")


def resolve_padding(kernel: IntOrPair, dilation: IntOrPair,
                    padding: IntOrPair | None) -> tuple[int, int]:
    """The (height, width) padding of a window op: ``padding`` as given, or for ``None``
    the padding that keeps the size at stride 1 ("same", ``dilation·(kernel−1)//2``) —
    the one rule every backend and the shape inference use.

    >>> resolve_padding(3, 1, None), resolve_padding((5, 3), 2, None), resolve_padding(3, 1, 0)
    ((1, 1), (4, 2), (0, 0))
    """
    if padding is not None:
        return pair(padding)
    kh, kw = pair(kernel)
    dh, dw = pair(dilation)
    return (dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2


def _spatial(op: Op, ins: tuple[TensorType, ...], k, s, p, d, ceil=False) -> tuple[int, int]:
    t = op._want_rank(ins, 3)
    kh, kw = pair(k)
    sh, sw = pair(s)
    dh, dw = pair(d)
    ph, pw = resolve_padding(k, d, p)
    h = conv_out(t.shape[1], kh, sh, ph, dh, ceil)
    w = conv_out(t.shape[2], kw, sw, pw, dw, ceil)
    if h < 1 or w < 1:
        raise op._fail(
            f"window {kh}x{kw} stride {sh} leaves no output on a {t.shape[1]}x{t.shape[2]} map",
            ins,
            hint="use a larger input resolution or fewer stride-2 layers",
        )
    return h, w
