"""Files nasir reads are never unpickled generally: crafted pickles are refused, unrun."""

from __future__ import annotations

import os
import pathlib
import pickle
import re

import pytest

from nasir.errors import NasirError

ROOT = pathlib.Path(__file__).resolve().parents[1]


class _Evil:
    """Unpickling this runs ``os.system("touch MARKER")`` — if anything unpickles it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_bytes(marker: pathlib.Path) -> bytes:
    return pickle.dumps({"weights": _Evil(str(marker))})


def test_the_marker_pickle_really_runs_code_when_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(_evil_bytes(marker))  # the control: a general unpickler runs it
    assert marker.exists()


def test_nb201_table_refuses_a_crafted_pickle(tmp_path):
    from nasir.bench import NB201Table

    marker, path = tmp_path / "pwned", tmp_path / "data.anb"
    path.write_bytes(_evil_bytes(marker))
    with pytest.raises(NasirError, match="refusing to unpickle"):
        NB201Table.load(str(path))
    assert not marker.exists()


def test_run_folder_files_refuse_crafted_pickles(tmp_path):
    """The run store, the latency cache / table (SQLite) and kept torch weights."""
    from nasir.backends.tvm.cache import LatencyCache
    from nasir.backends.tvm.lut import LatencyLUT
    from nasir.runtime.driver import run_search
    from nasir.runtime.experiment import Experiment
    from nasir.runtime.store import RunStore

    marker = tmp_path / "pwned"
    evil = _evil_bytes(marker)
    # a pickle where the run store should be
    bad_run = tmp_path / "bad_run"
    bad_run.mkdir()
    (bad_run / "run.sqlite").write_bytes(evil)
    with pytest.raises(NasirError):
        RunStore.open(str(bad_run))
    # a pickle as the latency cache and as a latency table
    (tmp_path / "latency.sqlite").write_bytes(evil)
    with pytest.raises(NasirError):
        LatencyCache(str(tmp_path / "latency.sqlite"))
    (tmp_path / "lut.sqlite").write_bytes(evil)
    with pytest.raises(NasirError):
        LatencyLUT(str(tmp_path / "lut.sqlite"), "host")
    # a crafted torch file as a trial's kept weights: export refuses it (weights_only=True)
    import torch

    run = str(tmp_path / "run")
    run_search(Experiment.from_dict({
        "space": {"name": "nb201", "options": {"input_shape": [3, 8, 8], "channels": 4,
                                               "cells_per_stage": 1}},
        "estimator": {"kind": "nb201"}, "strategy": {"name": "random"},
        "reward": {"kind": "accuracy"}, "objectives": {"accuracy": "max"},
        "executor": {"kind": "inprocess"}, "budget": {"trials": 1}}), run)
    st = RunStore.open(run)
    best = st.best()
    st.close()
    os.makedirs(os.path.join(run, "weights"))
    torch.save({"w": _Evil(str(marker))}, os.path.join(run, "weights", f"{best['hash']}.pt"))
    from nasir.runtime.export import export_trial

    with pytest.raises(NasirError, match="refusing to load kept weights"):
        export_trial(run, best, str(tmp_path / "out"), formats=("torch",))
    assert not marker.exists()


def test_every_torch_load_uses_weights_only():
    calls = []
    for d in ("nasir", "passes", "backends", "strategies", "app", "benchmarks"):
        for f in (ROOT / d).rglob("*.py"):
            text = f.read_text(encoding="utf-8")
            for m in re.finditer(r"torch\.load\(", text):
                end = text.find("\n", text.find(")", m.end()))
                calls.append((f, text[m.start():end]))
    assert calls, "found no torch.load call at all: the scan is broken"
    bad = [f"{f.relative_to(ROOT)}: {c}" for f, c in calls if "weights_only=True" not in c]
    assert not bad, bad
    # and no general unpickling of files anywhere. The one exception is inter-process
    # messages between the data-parallel launchers and the rank processes / Ray actors they
    # started themselves:
    # bytes it wrote into its own pipe (multiprocessing's Connection.recv would unpickle them
    # just the same; plain bytes keep tensors from being shared) — never a file or a
    # user's data. The exception names the module and the call, so a new use fails.
    ipc = {"backends/torch/launch.py": ("pickle.loads(data)", "pickle.loads(r.recv_bytes())"),
           "backends/torch/launch_ray.py": ("pickle.loads(payload)",
                                            "pickle.loads(ray.get(ref))")}
    loads = []
    for d in ("nasir", "passes", "backends", "strategies", "app"):
        for f in (ROOT / d).rglob("*.py"):
            text = f.read_text(encoding="utf-8")
            for allowed in ipc.get(str(f.relative_to(ROOT)), ()):
                assert allowed in text, f"stale IPC exception {allowed!r} in {f}"
                text = text.replace(allowed, "")
            if re.search(r"pickle\.loads?\(|np\.load\([^)]*allow_pickle=True", text):
                loads.append(f)
    assert not loads, loads
