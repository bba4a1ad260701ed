"""Torch backend: training estimator on digits, failure handling, drop-path, memory model."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nasir.backends.torch import lower
from nasir.backends.torch.data import digits_splits
from nasir.backends.torch.droppath import DropPath, ScheduledDropPath, drop_path_operands
from nasir.backends.torch.estimator import LearningCurveStopper, TrainConfig, TrainingEstimator
from nasir.backends.torch.lowering import prepare
from nasir.backends.torch.memory import (
    ResourceError,
    check_memory,
    measure_training_step,
    predict_training_memory,
)
from nasir.errors import BackendError, NasirError
from nasir.spaces import get_space


def _nb201(arch="best_cifar10", channels=8):
    sp = get_space("nb201", input_shape=(1, 8, 8), channels=channels, cells_per_stage=1)
    return sp.instantiate(sp.reference(arch))


@pytest.mark.slow
def test_reference_network_learns_digits_to_90_percent():
    r = TrainingEstimator(TrainConfig(epochs=3, seed=0)).estimate(_nb201())
    assert r.ok, r.reason
    assert r.val_accuracy >= 0.90, r
    assert r.loss_curve[-1] < r.loss_curve[0]
    assert r.params > 0 and r.macs > 0 and r.train_time_s > 0


def test_digits_split_is_fixed_and_disjoint():
    a, b = digits_splits(seed=0), digits_splits(seed=0)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert (len(a.train), len(a.val), len(a.test)) == (1079, 359, 359)
    flat = {tuple(x.flatten().tolist()) for s in (a.train, a.val) for x in s.tensors[0]}
    assert len(flat) > 1300


def test_same_seed_same_curve_and_knobs():
    cfg = TrainConfig(epochs=1, data_fraction=0.25, seed=3, batch_size=32)
    g = _nb201(channels=4)
    r1 = TrainingEstimator(cfg).estimate(g)
    r2 = TrainingEstimator(cfg).estimate(g)
    assert r1.ok and r1.loss_curve == r2.loss_curve and r1.val_accuracy == r2.val_accuracy
    r3 = TrainingEstimator(cfg, seed=4).estimate(g)
    assert r3.loss_curve != r1.loss_curve
    narrow = TrainingEstimator(cfg, width_multiplier=0.5).estimate(g)
    big = TrainingEstimator(cfg, resolution=16).estimate(g)
    assert narrow.ok and big.ok, (narrow.reason, big.reason)
    assert narrow.params < r1.params and big.macs > 3 * r1.macs


def test_user_dataset_and_dataloader():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=gen)
    y = (x.mean((1, 2, 3)) > 0).long()
    ds = TensorDataset(x, y)
    est = TrainingEstimator(TrainConfig(epochs=2, batch_size=8),
                            data=(DataLoader(ds, batch_size=8), ds))
    r = est.estimate(_nb201(channels=4))
    assert r.ok and len(r.loss_curve) == 2 and r.test_accuracy is None


class _Exhausting(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        raise MemoryError("cannot allocate the sample")


def test_bad_candidates_fail_with_a_reason_and_never_raise():
    g = _nb201(channels=4)
    cfg = TrainConfig(epochs=1, data_fraction=0.1)
    diverged = TrainingEstimator(cfg, optimizer="sgd", lr=1e36).estimate(g)
    assert not diverged.ok and diverged.reason.startswith("diverged"), diverged.reason
    slow = TrainingEstimator(cfg, timeout_s=1e-9).estimate(g)
    assert not slow.ok and slow.reason.startswith("timeout")
    budget = TrainingEstimator(cfg, memory_budget_bytes=10_000).estimate(g)
    assert not budget.ok and "memory budget" in budget.reason and budget.epochs_run == 0
    oom = TrainingEstimator(cfg, data=(_Exhausting(), _Exhausting())).estimate(g)
    assert not oom.ok and oom.reason.startswith("out of memory")
    tiny = TrainingEstimator(cfg, resolution=1).estimate(g)
    assert not tiny.ok and tiny.reason.startswith("invalid candidate")


def test_bad_settings_raise():
    with pytest.raises(BackendError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(NasirError, match="optimizer"):
        TrainingEstimator(optimizer="lbfgs")
    with pytest.raises(BackendError, match="training data"):
        TrainingEstimator(data=[1, 2, 3])


def test_early_stopping_stops_hopeless_trials():
    cfg = TrainConfig(epochs=4, data_fraction=0.1,
                      early_stopping=LearningCurveStopper(min_epochs=1))
    est = TrainingEstimator(cfg)
    r = est.estimate(_nb201(channels=4), best=1.01)
    assert r.ok and r.stopped_early and r.epochs_run < 4
    assert est.best == r.val_accuracy


def test_drop_path_rule_and_schedule_and_aux_head():
    g = prepare(_nb201("best_cifar10", channels=4))
    ops = drop_path_operands(g)
    dropped = [n.inputs[k] for n, ks in ops.items() for k in ks]
    assert dropped and all(d.op.name not in ("identity", "zero", "input") for d in dropped)
    m = lower(g, drop_path=True)
    assert isinstance(m.drop_path, DropPath) and "self.drop_path(" in m.code
    assert list(m.state_dict()) == list(lower(g).state_dict())
    s = ScheduledDropPath(0.4)
    assert s.update(m, 2, 4) == pytest.approx(0.2) and m.drop_path.p == pytest.approx(0.2)
    m.train()
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    m.drop_path.p = 0.0
    a = m(x)
    m.drop_path.p = 0.9
    assert not torch.allclose(a, m(x))
    r = TrainingEstimator(TrainConfig(epochs=1, data_fraction=0.2, drop_path=0.3,
                                      aux_weight=0.4, test=True)).estimate(_nb201(channels=4))
    assert r.ok, r.reason
    assert r.test_accuracy is not None


@pytest.mark.parametrize("arch,batch,channels", [("best_cifar10", 16, 8), ("resnet", 32, 8),
                                                  ("resnet", 64, 16)])
def test_memory_prediction_within_20_percent(arch, batch, channels):
    # resnet's conv chain reaches the output only through ``none`` (zero) edges: its
    # saved tensors live until the forward drops it, which the model must follow
    torch.set_num_threads(1)  # tiny tensors: a second thread only spins on a busy machine
    g = _nb201(arch, channels=channels)
    m = lower(g)
    x, y = torch.randn(batch, 1, 8, 8), torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(m.parameters(), lr=0.01)

    def step():
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    step()
    opt.zero_grad(set_to_none=True)
    measured = measure_training_step(m, step).total
    predicted = predict_training_memory(g, batch).total
    assert 0.8 < predicted / measured < 1.2, (predicted, measured)


def test_memory_budget_refuses_clearly():
    g = _nb201()
    est = predict_training_memory(g, 64, "adam")
    assert est.optimizer > 0 and predict_training_memory(g, 64, "sgd").optimizer == 0
    with pytest.raises(ResourceError, match="exceeds the budget") as e:
        check_memory(est, est.total - 1)
    assert "batch size" in str(e.value)
    check_memory(est, est.total)
    with pytest.raises(BackendError):
        predict_training_memory(g, 0)
