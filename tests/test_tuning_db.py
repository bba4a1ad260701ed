"""The per-target MetaSchedule tuning database: real TVM, tiny graphs, tiny budgets.

A workload is tuned once, kept across instances and processes, and a later compile of a
network holding it tunes nothing; concurrent writers lose no record; ``nasir export`` builds
from the database; bad folders and corrupt records are clear ``StoreError`` s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from nasir.backends.tvm.compile import compile_graph
from nasir.backends.tvm.targets import resolve_target
from nasir.backends.tvm.tuning_db import TuningDatabase
from nasir.errors import BackendError, NasirError, StoreError
from nasir.text import parse_graph

CONV = """graph @g {
  %x = input() {shape=[4, 8, 8]}
  %1 = conv2d(%x) {out_channels=8, kernel=3}
  %2 = relu(%1)
  return %2
}"""


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A database in which the conv+relu workload was tuned with 2 candidates."""
    root = str(tmp_path_factory.mktemp("tuning"))
    g = parse_graph(CONV)
    c = compile_graph(g, "host", db=TuningDatabase("host", root), trials_per_workload=2,
                      cost_model="random")
    return root, g, c


def test_first_compile_tunes_the_missing_workload(tuned):
    root, _, c = tuned
    s = c.tuning
    assert (s.workloads, s.hits, s.tuned, s.waited) == (1, 0, 1, 0)
    assert s.trials >= 1 and s.tuning_s > 0 and s.cost_model == "random"
    db = TuningDatabase("host", root)
    (key,) = db.keys()
    entry = db.read(key)
    assert entry["records"] and entry["trials"] == 2 and "conv2d" in entry["task"]


def test_second_compile_from_a_new_instance_hits_and_tunes_nothing(tuned):
    root, g, _ = tuned
    c = compile_graph(g, "host", db=TuningDatabase("host", root), trials_per_workload=2)
    assert (c.tuning.hits, c.tuning.tuned, c.tuning.trials) == (1, 0, 0)
    assert c.tuning.hit_rate == 1.0 and c.tuned
    plain = compile_graph(g, "host")  # the scheduled code computes the same numbers
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(c.run([x])[0], plain.run([x])[0], rtol=1e-4, atol=1e-4)


def test_records_persist_across_processes(tuned):
    root, _, _ = tuned
    code = ("import json, sys; from nasir.text import parse_graph; "
            "from nasir.backends.tvm.compile import compile_graph; "
            "from nasir.backends.tvm.tuning_db import TuningDatabase; "
            f"c = compile_graph(parse_graph({CONV!r}), 'host', "
            "db=TuningDatabase('host', sys.argv[1]), trials_per_workload=2); "
            "print(json.dumps(c.tuning.to_json()))")
    out = subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    stats = json.loads(out.strip().splitlines()[-1])
    assert (stats["hits"], stats["tuned"], stats["trials"]) == (1, 0, 0)


def _record(secs: float, tag: int) -> list:
    return [[[["Tag", [], [str(tag)], []]], []], [secs], {"kind": "llvm"}, []]


_WRITER = """
import sys
from nasir.backends.tvm.targets import TargetSpec
from nasir.backends.tvm.tuning_db import TuningDatabase
root, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = TuningDatabase(TargetSpec("custom", {"kind": "llvm", "mcpu": "x", "num-cores": 1}), root,
                    top_k=1000)
for i in range(first, first + n):
    db.save("42", ["42", "wl"], [[[[["Tag", [], [str(i)], []]], []], [1.0 + i], {}, []]],
            trials=1)
"""


def test_a_build_loads_each_workloads_fastest_record_only(tuned):
    root, _, _ = tuned
    db = TuningDatabase("host", root)
    (key,) = db.keys()
    recs = db.read(key)["records"]
    assert len(db.load([key]).get_all_tuning_records()) == len(recs)
    (best,) = db.load([key], top=1).get_all_tuning_records()
    assert best.as_json()[1] == pytest.approx(recs[0][1])  # the fastest, stored first


def test_concurrent_writers_lose_nothing(tmp_path):
    """Two processes and three threads (each its own instance) merge into one workload."""
    from nasir.backends.tvm.targets import TargetSpec

    spec = TargetSpec("custom", {"kind": "llvm", "mcpu": "x", "num-cores": 1})
    root = str(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, root, str(1000 * (k + 1)), "25"])
             for k in range(2)]

    def write(first: int) -> None:
        db = TuningDatabase(spec, root, top_k=1000)
        for i in range(first, first + 25):
            db.save("42", ["42", "wl"], [_record(1.0 + i, i)], trials=1)

    threads = [threading.Thread(target=write, args=(100 * k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    entry = TuningDatabase(spec, root, top_k=1000).read("42")
    assert entry["trials"] == 5 * 25 and len(entry["records"]) == 5 * 25
    secs = [r[1][0] for r in entry["records"]]
    assert secs == sorted(secs)  # best first
    assert not [f for f in os.listdir(TuningDatabase(spec, root).path + "/workloads")
                if f.startswith(".tmp")]


def test_top_k_keeps_the_fastest(tmp_path):
    db = TuningDatabase("host", str(tmp_path), top_k=2)
    db.save("7", ["7", "wl"], [_record(3.0, 1), _record(1.0, 2)])
    db.save("7", ["7", "wl"], [_record(2.0, 3), _record(0.5, 2)])  # tag 2 again: one copy
    assert [r[1][0] for r in db.read("7")["records"]] == [0.5, 2.0]


def test_bad_folder_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as e:
        TuningDatabase("host", str(blocker))
    assert e.value.where == str(blocker) and "writable folder" in (e.value.hint or "")


def test_corrupt_record_names_the_file(tuned, tmp_path):
    root, g, _ = tuned
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(root, copy)
    db = TuningDatabase("host", copy)
    (key,) = db.keys()
    path = os.path.join(db.path, "workloads", f"{key}.json")
    with open(path, "w") as fh:
        fh.write('{"format": 1, "key": "')
    with pytest.raises(StoreError) as e:
        compile_graph(g, "host", db=TuningDatabase("host", copy))
    assert e.value.where == path and "delete the file" in (e.value.hint or "")
    with open(os.path.join(root, os.path.basename(db.path), "workloads", f"{key}.json")) as fh:
        entry = json.load(fh)
    entry["records"] = [["not a trace"]]
    with open(path, "w") as fh:
        json.dump(entry, fh)
    with pytest.raises(StoreError) as e:
        compile_graph(g, "host", db=TuningDatabase("host", copy))
    assert e.value.where == path


def test_database_of_another_target_is_refused(tmp_path):
    g = parse_graph(CONV)
    other = TuningDatabase({"kind": "llvm", "mcpu": "skylake"}, str(tmp_path))
    with pytest.raises(BackendError, match="is for"):
        compile_graph(g, resolve_target({"kind": "llvm", "mcpu": "znver3"}), db=other)
    assert TuningDatabase("host", str(tmp_path)).path != other.path


def test_export_builds_from_the_database(tuned, tmp_path):
    from test_runtime_export import _run

    from nasir.runtime.export import export_trial
    from nasir.spaces import get_space

    root, _, _ = tuned
    before = len(TuningDatabase("host", root))
    sp = get_space("tiny_mnasnet")
    (trial,) = _run(str(tmp_path / "run"), [dict(sp.reference("small"))])
    man = export_trial(str(tmp_path / "run"), trial, str(tmp_path / "db"),
                       formats=("json", "torch", "tvm"), tuning="db", tuning_db=root)
    t = man["tvm_tuning"]
    assert t["db"] == TuningDatabase("host", root).path and t["workloads"] > 1
    assert man["tvm_max_abs_diff"] < 1e-3
    assert t["tuned"] == 0 and len(TuningDatabase("host", root)) == before  # trials 0
    with pytest.raises(NasirError, match="unknown tuning") as e:
        export_trial(str(tmp_path / "run"), trial, str(tmp_path / "x"), tuning="fast")
    assert e.value.where == "--tuning"


def test_export_tuning_modes_pick_the_database(tuned, tmp_path):
    from nasir.runtime.export import _tuning_db

    root, _, _ = tuned
    spec = resolve_target("host")
    assert _tuning_db(spec, {}, ("none", root, 0)) is None
    assert _tuning_db(spec, {}, ("auto", root, 0)).path == TuningDatabase("host", root).path
    empty = str(tmp_path / "empty")
    assert _tuning_db(spec, {}, ("auto", empty, 0)) is None  # nothing tuned: untuned build
    assert _tuning_db(spec, {"latency": {"tuned": True}}, ("auto", empty, 0)) is not None
    assert _tuning_db(spec, {}, ("db", empty, 0)) is not None
