"""Both backends lower from one preparation and cover the same primitive ops; padding is
the op's own rule."""

from __future__ import annotations

import pytest
import torch

from nasir.backends.torch.lowering import lower, lowerable_ops
from nasir.backends.torch.lowering import prepare as torch_prepare
from nasir.backends.tvm.relax_lowering import LOWERINGS, _unary_table
from nasir.backends.tvm.relax_lowering import prepare as tvm_prepare
from nasir.errors import BackendError
from nasir.ops import OPS, Conv2dOp, MaxPool2dOp, UserOp, conv_out
from nasir.spaces import get_space


def test_both_backends_reject_a_space_body_with_the_same_error():
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    msgs = []
    for prepare in (torch_prepare, tvm_prepare):
        with pytest.raises(BackendError) as e:
            prepare(sp.body)
        msgs.append(e.value.message)
    assert msgs[0] == msgs[1] and "choice points" in msgs[0]
    g = sp.instantiate(sp.reference("resnet"))
    assert torch_prepare(g).text() == tvm_prepare(g).text()


def test_every_primitive_op_has_a_lowering_rule_in_both_backends():
    prim = {n for n, c in OPS.items()
            if not c.composite and not c.space_only and not issubclass(c, UserOp)}
    assert prim - set(lowerable_ops()) == set()
    assert prim - (set(LOWERINGS) | set(_unary_table()) | {"input"}) == set()


@pytest.mark.parametrize("kernel,dilation,padding,stride", [
    (3, 1, None, 1), (5, 2, None, 2), ((3, 5), 1, None, 1), (3, 1, 0, 2), (3, 1, (2, 1), 1)])
def test_padding_is_the_ops_rule_and_torch_agrees_with_shape_inference(kernel, dilation,
                                                                         padding, stride):
    from nasir.graph import Graph
    from nasir.ops import InputOp

    op = Conv2dOp(out_channels=2, kernel=kernel, stride=stride, padding=padding,
                  dilation=dilation)
    g = Graph("c")
    x = g.add(InputOp(shape=(1, 11, 9)))
    g.set_output(g.add(op, [x]))
    y = lower(g, seed=0)(torch.zeros(1, 1, 11, 9))
    ph, pw = op.pads()
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    assert tuple(y.shape[2:]) == (conv_out(11, kh, stride, ph, dilation),
                                  conv_out(9, kw, stride, pw, dilation))
    assert MaxPool2dOp(kernel=3).strides() == (3, 3) and MaxPool2dOp(3, 1, 1).pads() == (1, 1)
