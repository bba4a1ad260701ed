"""Training where users train (#18): devices, mixed precision, batches on the device, OOM.

Every CUDA path has a CPU test of the same code: the device is passed through and reported,
a CUDA request without a GPU is a clear error, bf16 / fp16 autocast and channels-last run
on the CPU, the on-device batch iterator is the DataLoader's order batch for batch, an out
of memory error is injected into the training step, and the free-memory check takes an
injected free-memory query. The ``gpu`` tests at the end run the real thing on a GPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from nasir.backends.torch import estimator as estimator_mod
from nasir.backends.torch.batches import DeviceBatches, device_loader, held_tensors
from nasir.backends.torch.data import digits_splits
from nasir.backends.torch.datasets.tensors import ImageTensors
from nasir.backends.torch.device import (
    WORKER_DEVICE_ENV,
    determinism,
    grad_scaler,
    resolve_amp,
    resolve_device,
    worker_device,
)
from nasir.backends.torch.estimator import TrainConfig, TrainingEstimator
from nasir.errors import BackendError, NasirError
from nasir.spaces import get_space

CPU = torch.device("cpu")
HAS_CUDA = torch.cuda.is_available()


def gpu(test):
    """Marked ``gpu`` and skipped, with how to run it, where PyTorch sees no CUDA GPU."""
    skip = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU; on a GPU machine: "
                              "pytest -m gpu tests/test_torch_device.py")
    return pytest.mark.gpu(skip(test))


def _space(classes: int = 10):
    return get_space("nb201", input_shape=(1, 8, 8), channels=4, cells_per_stage=1,
                     num_classes=classes)


def _graph():
    sp = _space()
    return sp.instantiate(sp.reference("resnet"))


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without CUDA or MPS, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# -- devices --------------------------------------------------------------------------------
def test_resolve_device_names_and_auto(no_gpu):
    assert resolve_device("cpu") == resolve_device(None) == resolve_device("auto") == CPU
    with pytest.raises(BackendError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_cuda_or_mps_without_one_is_a_clear_error(no_gpu, monkeypatch):
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(BackendError, match="no CUDA GPU") as e:
            resolve_device(spec)
        assert "--device cpu" in str(e.value)
    with pytest.raises(BackendError, match="no MPS"):
        resolve_device("mps")
    with pytest.raises(BackendError, match="no CUDA GPU"):
        TrainingEstimator(TrainConfig(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(BackendError, match="sees 2 GPU"):
        resolve_device("cuda:2")


def test_worker_device_env_wins(monkeypatch):
    monkeypatch.delenv(WORKER_DEVICE_ENV, raising=False)
    assert worker_device("auto") == "auto" and worker_device(None) == "auto"
    monkeypatch.setenv(WORKER_DEVICE_ENV, "cpu")
    assert worker_device("cuda") == "cpu"
    monkeypatch.setenv(WORKER_DEVICE_ENV, "tpu")
    with pytest.raises(BackendError, match="unknown device"):
        worker_device("cpu")


def test_amp_settings(monkeypatch):
    cuda = torch.device("cuda")  # a device object needs no GPU
    assert resolve_amp("auto", CPU) is None and resolve_amp("off", cuda) is None
    assert resolve_amp("bf16", CPU) is torch.bfloat16
    assert resolve_amp("fp16", CPU) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp("auto", cuda) is torch.float16
    with pytest.raises(BackendError, match="bf16"):
        resolve_amp("bf16", cuda)
    with pytest.raises(BackendError, match="amp='fp8'"):
        TrainConfig(amp="fp8")
    assert grad_scaler(CPU, torch.bfloat16) is None
    assert grad_scaler(CPU, torch.float16) is not None


def test_bad_device_settings_raise_when_made():
    with pytest.raises(BackendError, match="unknown device"):
        TrainConfig(device="gpu0")
    with pytest.raises(BackendError, match="num_workers"):
        TrainConfig(num_workers=-1)
    with pytest.raises(BackendError, match="channels_last"):
        TrainConfig(channels_last="yes")  # type: ignore[arg-type]


def test_determinism_flags_are_restored():
    before = torch.are_deterministic_algorithms_enabled()
    with determinism(True, CPU):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled() == before


# -- the estimator on a device --------------------------------------------------------------
@pytest.mark.parametrize("options,amp", [({}, "off"), ({"amp": "bf16"}, "bf16"),
                                         ({"amp": "fp16"}, "fp16"),
                                         ({"channels_last": True}, "off"),
                                         ({"deterministic": True}, "off")])
def test_estimator_reports_its_device_and_precision(options, amp):
    cfg = TrainConfig(epochs=1, data_fraction=0.2, device="cpu", test=True, **options)
    r = TrainingEstimator(cfg).estimate(_graph())
    assert r.ok, r.reason
    assert (r.device, r.amp) == ("cpu", amp)
    assert r.to_json()["device"] == "cpu" and r.loss_curve[0] == r.loss_curve[0]
    assert r.test_accuracy is not None


def test_held_batches_train_exactly_like_a_dataloader():
    """The estimator's on-device batches and a DataLoader with the same seed give the same
    training, bit for bit: the iterator replaced the DataLoader without moving a number."""
    s = digits_splits()
    train = Subset(s.train, list(range(0, 600, 2)))
    cfg = TrainConfig(epochs=2, batch_size=32, seed=5)
    held = TrainingEstimator(cfg, data=(train, s.val))
    assert isinstance(held._loaders()[0], DeviceBatches)
    gen = torch.Generator().manual_seed(5)
    loaded = TrainingEstimator(cfg, data=(DataLoader(train, 32, shuffle=True, generator=gen),
                                          DataLoader(s.val, 256)))
    a, b = held.estimate(_graph()), loaded.estimate(_graph())
    assert a.ok and b.ok
    assert a.loss_curve == b.loss_curve and a.val_curve == b.val_curve


# -- on-device batches ----------------------------------------------------------------------
def _images(n: int = 37) -> ImageTensors:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
    return ImageTensors(x.numpy(), (torch.arange(n) % 5).numpy(), mean=(0.4, 0.5, 0.6),
                        std=(0.2, 0.25, 0.3))


def test_device_batches_are_seeded_and_cover_every_sample_once_per_epoch():
    ds = _images()

    def order(seed: int) -> list[list[int]]:
        b = device_loader(ds, 8, shuffle=True, generator=torch.Generator().manual_seed(seed),
                          device=CPU)
        return [[int(v) for v in torch.cat([y for _, y in b])] for _ in range(3)]

    # labels repeat (n % 5): identify samples by their pixels instead
    x = ds.images.flatten(1).float()
    b = device_loader(ds, 8, shuffle=True, generator=torch.Generator().manual_seed(1),
                      device=CPU)
    assert len(b) == 5
    for _ in range(2):
        seen = torch.cat([xb for xb, _ in b])
        raw = (seen * ds.std + ds.mean) * 255.0
        idx = torch.cdist(raw.flatten(1).round(), x).argmin(1)
        assert sorted(idx.tolist()) == list(range(len(ds)))
    assert order(1) == order(1) and order(1) != order(2)
    assert order(1)[0] != order(1)[1]  # a new order every epoch


def test_device_batches_equal_dataloader_batches():
    ds = _images()
    sub = Subset(Subset(ds, list(range(3, 37))), list(range(0, 34, 2)))
    for data in (ds, sub, TensorDataset(torch.randn(21, 1, 3, 3), torch.arange(21))):
        for shuffle in (True, False):
            gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
            held = device_loader(data, 4, shuffle=shuffle, generator=gen_a, device=CPU)
            plain = DataLoader(data, 4, shuffle=shuffle, generator=gen_b)
            for _ in range(2):
                pairs = list(zip(held, plain, strict=True))
                assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1])
                           and p[0].stride() == q[0].stride() for p, q in pairs)


def test_loaders_sharing_a_generator_interleave_as_dataloaders_do():
    ds = TensorDataset(torch.randn(20, 1, 2, 2), torch.arange(20))

    def draw(make) -> list[int]:
        g = torch.Generator().manual_seed(0)
        w, a = make(g), make(g)
        out, it = [], iter(a)
        for _ in range(2):
            for _, y in w:
                out += y.tolist()
                try:
                    out += next(it)[1].tolist()
                except StopIteration:
                    it = iter(a)
        return out

    assert draw(lambda g: device_loader(ds, 6, shuffle=True, generator=g, device=CPU)) == \
        draw(lambda g: DataLoader(ds, 6, shuffle=True, generator=g))


class _Lazy(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(i)), i


def test_other_data_goes_through_a_dataloader():
    assert held_tensors(_Lazy()) is None
    loader = device_loader(_Lazy(), 4, shuffle=False, generator=None, device=CPU)
    assert isinstance(loader, DataLoader) and loader.num_workers == 0
    given = DataLoader(_Lazy(), 2)
    assert device_loader(given, 4, shuffle=True, generator=None, device=CPU) is given


# -- out of memory --------------------------------------------------------------------------
def _oom_step(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_fails_the_trial_and_frees_memory(monkeypatch):
    released = []
    monkeypatch.setattr(estimator_mod, "release_memory", released.append)
    monkeypatch.setattr(TrainingEstimator, "_step", _oom_step)
    est = TrainingEstimator(TrainConfig(epochs=1, data_fraction=0.1, device="cpu"))
    r = est.estimate(_graph(), keep_state=True)
    assert not r.ok and r.reason.startswith("out of memory: CUDA out of memory"), r.reason
    assert released == [CPU] and est.last_state is None and not r.infeasible
    monkeypatch.undo()
    assert est.estimate(_graph()).ok  # the next candidate trains


def test_candidate_above_free_memory_is_infeasible_not_run():
    asked = []

    def free(device):
        asked.append(device)
        return 10_000

    est = TrainingEstimator(TrainConfig(epochs=1, data_fraction=0.1), free_memory=free)
    r = est.estimate(_graph())
    assert asked == [CPU] and not r.ok and r.infeasible
    assert r.reason.startswith("infeasible: predicted ") and "> free 10,000 B" in r.reason
    assert r.epochs_run == 0 and r.predicted_memory_bytes > 10_000
    roomy = TrainingEstimator(TrainConfig(epochs=1, data_fraction=0.1),
                              free_memory=lambda d: 1 << 40)
    assert roomy.estimate(_graph()).ok
    bf16 = TrainingEstimator(TrainConfig(epochs=1, amp="bf16"), free_memory=free)
    smaller = int(bf16.estimate(_graph()).reason.split("predicted ")[1].split(" B")[0]
                  .replace(",", ""))
    assert smaller < r.predicted_memory_bytes  # 16-bit activations


def _run(tmp_path, **over):
    from nasir.runtime.driver import run_search
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.store import RunStore

    exp = Experiment.from_dict({
        "space": {"name": "nb201", "options": {"channels": 4, "cells_per_stage": 1}},
        "estimator": {"kind": "training", "options": {"epochs": 1, "data_fraction": 0.1},
                      "latency": "off"},
        "strategy": {"name": "random"}, "reward": {"kind": "accuracy"},
        "objectives": {"accuracy": "max"}, "executor": {"kind": "inprocess"},
        "budget": {"trials": 3}, "device": "cpu", **over})
    summary = run_search(exp, str(tmp_path / "run"))
    st = RunStore.open(str(tmp_path / "run"))
    try:
        return summary, st.trials()
    finally:
        st.close()


def test_run_goes_on_after_an_out_of_memory_trial(tmp_path, monkeypatch):
    real = TrainingEstimator._step
    calls = []

    def first_fails(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            _oom_step()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TrainingEstimator, "_step", first_fails)
    summary, trials = _run(tmp_path)
    assert summary["counts"].get("failed") == 1 and summary["counts"].get("done") == 2
    failed = next(t for t in trials if t["status"] == "failed")
    assert "out of memory" in failed["error"]
    done = [t for t in trials if t["status"] == "done"]
    assert all(t["metrics"]["device"] == "cpu" and t["metrics"]["amp"] == "off" for t in done)


def test_run_records_candidates_that_cannot_fit_as_infeasible(tmp_path, monkeypatch):
    monkeypatch.setattr(estimator_mod, "device_free_memory", lambda device: 1_000)
    summary, trials = _run(tmp_path)
    assert summary["counts"].get("infeasible") == 3, summary["counts"]
    assert all(t["error"].startswith("InfeasibleTrial: training not run: infeasible: "
                                     "predicted") for t in trials)


# -- the runtime hands the device on --------------------------------------------------------
def test_build_estimator_passes_the_device(monkeypatch, no_gpu):
    from nasir.runtime.estimators import build_estimator

    monkeypatch.delenv(WORKER_DEVICE_ENV, raising=False)
    exp = {"space": {"name": "nb201"}, "estimator": {"kind": "training"}, "device": "cpu",
           "target": {"kind": "host"}, "objectives": {"accuracy": "max"}}
    assert build_estimator(exp).parts[1].impl.config.device == "cpu"
    with pytest.raises(NasirError, match="no CUDA GPU"):
        build_estimator({**exp, "device": "cuda"})
    monkeypatch.setenv(WORKER_DEVICE_ENV, "cpu")  # a pool worker's own device wins
    assert build_estimator({**exp, "device": "cuda"}).parts[1].impl.config.device == "cpu"
    opts = {**exp, "estimator": {"kind": "training", "options": {"device": "auto"}}}
    assert build_estimator(opts).parts[1].impl.config.device == "auto"


def test_preflight_stops_a_cuda_run_without_a_gpu(no_gpu):
    from nasir.runtime.experiment import ConfigError, Experiment
    from nasir.runtime.preflight import prepare

    with pytest.raises(ConfigError, match="no CUDA GPU"):
        prepare(Experiment.from_dict({"device": "cuda", "space": {"name": "nb201"}}))
    prepare(Experiment.from_dict({"device": "cuda", "space": {"name": "nb201"},
                                  "estimator": {"kind": "nb201"}}))  # nothing trains


def test_user_evaluator_and_oneshot_estimator_get_the_device(tmp_path):
    from nasir.runtime.evaluator import FunctionEstimator
    from nasir.runtime.evaluator import resolve_device as ev_resolve
    from nasir.runtime.weight_sharing import OneShotEstimator

    f = tmp_path / "ev.py"
    f.write_text("def objective(trial):\n"
                 "    p = next(trial.build_module().parameters())\n"
                 "    return {'accuracy': 0.5, 'on': str(p.device), 'asked': trial.device}\n")
    sp = _space()
    m = FunctionEstimator(f"{f}:objective", device="cpu").evaluate(sp, sp.reference("resnet"),
                                                                   seed=0)
    assert (m["device"], m["on"], m["asked"]) == ("cpu", "cpu", "cpu")
    assert ev_resolve("cpu") == "cpu"
    one = OneShotEstimator({"epochs": 1, "data_fraction": 0.1, "bn_batches": 1}, device="cpu")
    m = one.evaluate(sp, sp.reference("resnet"), seed=0)
    assert m["device"] == m["supernet_device"] == "cpu"


def test_oneshot_strategies_take_the_run_device(no_gpu):
    import numpy as np

    from nasir.runtime.driver import strategy_options
    from nasir.runtime.experiment import Experiment
    from nasir.strategies import make_strategy
    from nasir.strategies.oneshot.fbnet import FBNetSearch

    exp = Experiment.from_dict({"device": "cpu", "strategy": {"name": "darts"}})
    assert strategy_options(exp, "darts") == {"device": "cpu"}
    assert strategy_options(exp, "random") == {}
    sp = _space()
    s = make_strategy("darts", sp, seed=0, epochs=2, warmup=1, data_fraction=0.1,
                      **strategy_options(exp, "darts"))
    s.propose(1)
    assert s.result.extra["device"] == "cpu"
    rows = {d.label: np.array([1.0, 1.0, 50.0, 90.0, 20.0]) for d in sp.decisions}
    r = FBNetSearch(sp, epochs=2, warmup=1, data_fraction=0.1, latency_rows=rows,
                    device="cpu").search()
    assert r.extra["device"] == "cpu"
    for name in ("darts", "enas", "fbnet", "proxylessnas"):
        with pytest.raises(NasirError, match="no CUDA GPU"):
            make_strategy(name, sp, seed=0, device="cuda")


# -- on a GPU ------------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("amp", ["auto", "off"])
def test_gpu_training_reports_cuda(amp):
    cfg = TrainConfig(epochs=2, data_fraction=0.5, device="cuda", amp=amp, test=True)
    r = TrainingEstimator(cfg).estimate(_graph())
    assert r.ok, r.reason
    assert r.device.startswith("cuda") and r.amp == ("off" if amp == "off" else
                                                    ("bf16" if torch.cuda.is_bf16_supported()
                                                     else "fp16"))
    cpu = TrainingEstimator(TrainConfig(epochs=2, data_fraction=0.5, test=True)).estimate(
        _graph())
    assert abs(r.val_accuracy - cpu.val_accuracy) < 0.2  # the same training, other kernels



@gpu
def test_gpu_batches_equal_cpu_batches_and_huge_candidate_is_infeasible():
    ds = _images()
    gpu = device_loader(ds, 8, shuffle=True, generator=torch.Generator().manual_seed(0),
                        device=torch.device("cuda"))
    cpu = device_loader(ds, 8, shuffle=True, generator=torch.Generator().manual_seed(0),
                        device=CPU)
    assert isinstance(gpu, DeviceBatches) and gpu.images.is_cuda
    assert all(torch.allclose(a[0].cpu(), b[0]) and torch.equal(a[1].cpu(), b[1])
               for a, b in zip(gpu, cpu, strict=True))
    r = TrainingEstimator(TrainConfig(epochs=1, device="cuda", batch_size=4096,
                                      resolution=512, width_multiplier=64.0)).estimate(_graph())
    assert not r.ok and (r.infeasible or r.reason.startswith("out of memory")), r.reason
    assert TrainingEstimator(TrainConfig(epochs=1, device="cuda", data_fraction=0.1)
                             ).estimate(_graph()).ok  # the device is usable afterwards


@gpu
def test_gpu_oneshot_searches_run_on_cuda():
    import numpy as np

    from nasir.strategies.oneshot.darts import DartsSearch
    from nasir.strategies.oneshot.enas import EnasSearch
    from nasir.strategies.oneshot.proxylessnas import ProxylessSearch

    sp = _space()
    rows = {d.label: np.array([1.0, 1.0, 50.0, 90.0, 20.0]) for d in sp.decisions}
    for r in (DartsSearch(sp, epochs=2, warmup=1, data_fraction=0.1, device="cuda").search(),
              EnasSearch(sp, epochs=1, data_fraction=0.1, controller_steps=2,
                         derive_samples=2, device="cuda").search(),
              ProxylessSearch(sp, epochs=2, warmup=1, data_fraction=0.1, latency_rows=rows,
                              target_us=100.0, device="cuda").search()):
        assert r.extra["device"].startswith("cuda")
