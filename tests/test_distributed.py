"""Data-parallel supernet training (issue 22): 2 CPU processes (gloo) train a DARTS-style
supernet — architecture steps and weight steps alternating, BatchNorm in training mode —
to the same loss curve and the same final parameters and running statistics as 1 process
with the same global batches. Leaving out the BatchNorm synchronisation or the gradient
averaging breaks the equality (checked too, so the comparison is known to be able to fail).
Failures of a rank are NasirErrors and leave no process behind."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nasir.backends.torch.distributed import Replica, sync_batchnorm
from nasir.backends.torch.launch import launch
from nasir.backends.torch.supernet import Supernet
from nasir.errors import NasirError
from nasir.spaces import get_space
from nasir.strategies.oneshot.common import frozen_logits, set_arch_grads
from nasir.strategies.oneshot.data_parallel import DataParallelJob

N, BATCH = 33, 12  # 3 global batches an epoch, the last one 9 (shards 5 + 4)


def _batches(seed: int, steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        out += list(torch.randperm(N, generator=g).split(BATCH))
    return out[:steps]


def train(replica: Replica, variants: list[dict[str, Any]], scratch: torch.Tensor | None = None
          ) -> list[dict[str, Any]]:
    """DARTS first order on a tiny NB201 supernet: per global batch an α step on the
    architecture half, then a weight step (momentum SGD, clipped) on the weight half.
    A variant may leave out ``sync_bn`` or ``average`` and sets ``steps``. ``scratch`` is
    changed in place (each rank must get its own copy: an optimizer adopts loaded tensors)."""
    if scratch is not None:
        scratch.add_(1.0)
    out = []
    for v in variants:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        xs, ys = torch.randn(2, N, 1, 8, 8, generator=g), torch.randint(0, 10, (2, N), generator=g)
        xs, ys = xs.to(replica.device), ys.to(replica.device)
        net = Supernet(get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1),
                       mode="darts", seed=0, affine=False).to(replica.device)
        if v.get("sync_bn", True):
            sync_batchnorm(net)
        wopt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
        aopt = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.5, 0.999),
                                weight_decay=1e-3)
        average = replica.average_gradients if v.get("average", True) else (lambda ps: None)
        curve = []
        for iw, ia in zip(_batches(2, v["steps"]), _batches(3, v["steps"])):
            xa, ya = replica.shard(xs[1][ia], ys[1][ia])
            aopt.zero_grad()
            la = replica.mean_loss(F.cross_entropy(net(xa), ya, reduction="sum"), len(ia))
            set_arch_grads(net, la)
            average(net.arch_parameters())
            aopt.step()
            xw, yw = replica.shard(xs[0][iw], ys[0][iw])
            wopt.zero_grad()
            with frozen_logits(net):
                lw = replica.mean_loss(F.cross_entropy(net(xw), yw, reduction="sum"), len(iw))
                lw.backward()
            average(net.weight_parameters())
            torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
            wopt.step()
            curve.append((replica.mean(la), replica.mean(lw)))
        out.append({"curve": curve, "state": {k: t.detach().cpu().clone()
                                              for k, t in net.state_dict().items()}})
    return out


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """Largest difference of the loss curves (over the steps both ran) and of the final
    state (parameters and running statistics)."""
    curve = max(abs(x - y) for p, q in zip(a["curve"], b["curve"]) for x, y in zip(p, q))
    state = max(float((a["state"][k] - b["state"][k]).abs().max()) for k in a["state"])
    return curve, state


def test_two_processes_train_like_one() -> None:
    variants = [{"steps": 3}, {"steps": 1, "sync_bn": False}, {"steps": 1, "average": False}]
    one = train(Replica(), variants[:1])[0]
    scratch = torch.zeros(3)
    two = launch(train, 2, (variants, scratch), timeout_s=240)
    assert scratch.tolist() == [0.0] * 3
    same, no_bn, no_avg = two[0]
    curve, state = _max_diff(one, same)
    assert curve < 1e-5 and state < 1e-5, (curve, state)
    assert _max_diff(same, two[1][0]) == (0.0, 0.0)  # rank order; the same weights
    # the comparison can fail: without either half the runs drift apart
    assert min(_max_diff(one, no_bn)) > 1e-3
    assert min(_max_diff(one, no_avg)) > 1e-3
    assert len(one["curve"]) == 3 and one["curve"][-1][1] < one["curve"][0][1]


def crash(replica: Replica, how: str) -> int:
    """Rank 1 fails (``raise`` / ``exit`` / ``hang``) while rank 0 waits in a collective."""
    if replica.rank == 1:
        if how == "raise":
            raise ValueError("rank one broke")
        if how == "exit":
            os._exit(3)
        time.sleep(120)
    replica.barrier()
    return replica.rank


@pytest.mark.parametrize(("how", "text"), [
    ("raise", "rank 1 of 2 failed: ValueError: rank one broke"),
    ("exit", "rank 1 of 2 failed: the process died (exit code 3)"),
    ("hang", "timed out after 5 s"),
])
def test_a_failing_rank_is_a_nasir_error_and_stops_the_others(how: str, text: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(NasirError) as e:
        launch(crash, 2, (how,), timeout_s=5 if how == "hang" else 120)
    assert text in str(e.value)
    if how == "raise":
        assert "in crash" in str(e.value)  # the rank's traceback
    assert not mp.active_children()
    assert time.monotonic() - t0 < 60



@pytest.mark.slow
def test_ray_actors_train_like_one_process() -> None:
    ray = pytest.importorskip("ray")
    from nasir.backends.torch.launch_ray import launch_ray

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        one = train(Replica(), [{"steps": 2}])[0]
        two = launch_ray(train, 2, ([{"steps": 2}],), timeout_s=240)
        curve, state = _max_diff(one, two[0][0])
        assert curve < 1e-5 and state < 1e-5, (curve, state)
        with pytest.raises(NasirError, match="rank 1 of 2 failed: ValueError: rank one broke"):
            launch_ray(crash, 2, ("raise",), timeout_s=120)
        # a DARTS job on one pool of actors for both epochs, against one process
        ref = darts_job()
        losses = [ref.step()["loss"] for _ in range(2)]
        job = DataParallelJob(darts_job(), darts_job, 2, launcher="ray", timeout_s=240)
        assert abs(job.step()["loss"] - losses[0]) < 1e-5
        assert abs(job.step()["loss"] - losses[1]) < 1e-5 and job._pool is None  # closed
        assert job.result()["assignment"] == ref.result()["assignment"]
    finally:
        ray.shutdown()


def darts_job() -> Any:
    """A 2-epoch DARTS (second order) job on the tiny NB201 space and 5 % of digits."""
    from nasir.strategies import make_strategy

    sp = get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1)
    return make_strategy("darts", sp, seed=0, epochs=2, data_fraction=0.05).job()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA GPUs (NCCL: one GPU a rank); run with -m gpu")
def test_nccl_two_gpus_train_like_one() -> None:
    one = train(Replica(device=torch.device("cuda", 0)), [{"steps": 3}])[0]
    two = launch(train, 2, ([{"steps": 3}],), device="cuda", timeout_s=240)
    curve, state = _max_diff(one, two[0][0])
    assert curve < 1e-4 and state < 1e-4, (curve, state)  # cuDNN sums in its own order
