"""Weight-sharing supernets: one network for a whole search space.

:class:`Supernet` lowers a :class:`~nasir.space.Space` with its choice points. Each node of
the space body becomes a step; choice points become mixed ops whose candidates own their
weights, shared by every architecture that picks them. What a choice point means (its
options, which stay open, which region an option or repetition runs, which decisions a node
reaches) is read by the mixed space interpreter (:mod:`nasir.interpret.mixed`), whose
client the builder is; the builder says only what each point becomes here:

* ``choose`` (op choice): one sub-network per region;
* a node with ``$label`` attributes (value choice): one candidate per combination of its
  labels' values (candidates that do not verify are left out);
* ``repeat`` (depth): the deepest stack; shallower choices exit early;
* ``select`` (input choice): every pick of the operands, reduced like the space says;
  with ``per_input_ops=True`` a select feeding one op choice (a cell block's operand)
  becomes one mixed edge per candidate input, each with its own op candidates (DARTS,
  ENAS), so inputs of different resolutions need no pinning; with ``edge_alphas=True`` a
  block that sums two such operands over the same states becomes DARTS' cell node: one
  mixed op per incoming edge, the node the sum over every edge, with one logit per
  (edge, op) instead of input logits × op logits (:class:`CellEdges`);
* a projected cell output (``cell_output`` with ``project``, ENAS-micro): one 1×1
  projection over all states, sliced to the path's loose ends (single-path modes).

Architecture parameters (one logit vector per decision label, shared by every node using
the label; with ``edge_alphas`` one ``edges × ops`` matrix per cell node, shared by the
cells of its kind) weight the candidates according to ``mode``:

``darts``      softmax-weighted sum of all candidates (DARTS);
``gumbel``     Gumbel-softmax weighted sum with temperature ``tau`` (FBNet);
``gumbel_hard`` straight-through Gumbel-softmax, one path per forward (GDAS, Dong &
               Yang 2019): per decision the option ``k`` of largest Gumbel-softmax sample
               ``y = softmax((α + g) / τ)`` runs (Gumbel-max: drawn from
               ``softmax(α)``), passed through the gate ``1 + y_k − stop_grad(y_k)``
               (value 1), so only it runs and keeps activations, and the logits get
               ``∂L/∂α = ⟨∂L/∂out, o_k⟩ · ∂y_k/∂α`` — FBNet's Gumbel relaxation at the
               cost of a single path;
``binarized``  one path sampled from the softmax per forward; only it runs, so only its
               activations are kept (ProxylessNAS). When the logits require grad, the
               sampled output passes a straight-through gate ``1 + p - stop_grad(p)`` so
               the logits get a single-path gradient estimate; with ``binary_paths=2``
               (the paper's estimator) each decision samples two options from the
               softmax, the active one from the softmax of their two logits, the other
               runs without grad, and the two logits get
               ``∂L/∂α_i = Σ_j ∂L/∂g_j · p_j(δ_ij − p_i)`` over the pair, ``∂L/∂g_j`` the
               gradient of the binary gate of option ``j`` (:attr:`Supernet.last_pairs`
               names the pairs, for the paper's rescaling of the updated logits);
``single``     the path set by :meth:`Supernet.set_path` (an external sampler: ENAS, SPOS).

Mixed modes skip work that cannot change the output or a gradient: ``zero`` candidates
(``w · 0``; ``∂L/∂w = ⟨∂L/∂out, 0⟩ = 0``), candidates whose mixing weight is exactly 0 (a
logit at ``-inf``: pinned off, as DARTS-PT's selection does), and repeated weightless ops
on the same operand (every edge leaving a cell state pools it once). Results equal running
them up to floating-point summation order.

Every value in the body must have one type whatever is chosen (mixing sums outputs):
decisions that change a type (channel counts, a depth whose first layer strides) must be
pinned with ``fixed={label: value}``; the error names them. :meth:`Supernet.child` extracts
a standalone lowered module for an assignment with the supernet's weights; its output
equals the supernet's for the same path.

>>> import torch
>>> from nasir.spaces import get_space
>>> sp = get_space("nb201", input_shape=(3, 8, 8), channels=4, cells_per_stage=1)
>>> net = Supernet(sp, mode="single", seed=0).eval()
>>> a = sp.reference("best_cifar10")
>>> net.set_path(a)
>>> child = net.child(a).eval()
>>> x = torch.randn(2, 3, 8, 8)
>>> torch.equal(net(x), child(x))
True
"""


from nasir.backends.torch.supernet.cells import CellEdges
from nasir.backends.torch.supernet.mixing import MODES, ONE_PATH
from nasir.backends.torch.supernet.net import Supernet

__all__ = ["MODES", "ONE_PATH", "CellEdges", "Supernet"]
