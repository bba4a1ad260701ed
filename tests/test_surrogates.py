"""Surrogate models, lookup tables and the fused numba scorer."""

from __future__ import annotations

import numpy as np
import pytest

from nasir.errors import BackendError, NasirError, SpecError
from nasir.passes import analyze
from nasir.passes.encodings import encode
from nasir.passes.sampling import UniformSampler
from nasir.spaces import get_space
from nasir.strategies.surrogates import (
    MLPEnsemble,
    Ridge,
    Scorer,
    TermTable,
    mnasnet_terms,
    onehot,
    proxy_latency_ms,
)
from nasir.strategies.surrogates.data import sizes_of, training_set
from nasir.strategies.surrogates.kernel import group_decisions
from nasir.strategies.surrogates.models import transform_targets
from nasir.strategies.surrogates.tables import additive_terms, lut_terms, metric_terms


@pytest.fixture(scope="module")
def mnas():
    return get_space("mnasnet", input_shape=(3, 32, 32), num_classes=10)


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def _rows(space, n, seed=0):
    return UniformSampler(space).sample_indices(np.random.default_rng(seed), n)


# -- models ----------------------------------------------------------------------------------

def test_ensemble_learns_and_is_deterministic():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 2, size=(80, 8)).astype(float)
    y = X @ rng.normal(size=8) + 0.5 * X[:, 0] * X[:, 1]
    a = MLPEnsemble(members=3, hidden=16, epochs=200, seed=7).fit(X, y)
    b = MLPEnsemble(members=3, hidden=16, epochs=200, seed=7).fit(X, y)
    c = MLPEnsemble(members=3, hidden=16, epochs=200, seed=8).fit(X, y)
    assert np.array_equal(a.weights().w1, b.weights().w1)
    assert not np.array_equal(a.weights().w1, c.weights().w1)
    mean, std = a.predict(X)
    assert np.corrcoef(mean, y)[0, 1] > 0.95
    assert (std >= 0).all() and std.max() > 0
    members = a.member_predictions(X)
    assert members.shape == (3, 80)
    assert np.allclose(members.mean(0), mean)


def test_ridge_and_rank_targets():
    X = np.eye(4)[[0, 1, 2, 3, 0, 1]]
    y = np.array([1.0, 2.0, 3.0, 4.0, 1.0, 2.0])
    r = Ridge(alpha=1e-9).fit(X, y)
    assert np.allclose(r.predict(X)[0], y, atol=1e-6)
    t = transform_targets(np.array([10.0, 90.0, 91.0, 92.0]), "rank")
    assert np.all(np.diff(t) > 0) and abs(t.sum()) < 1e-12
    ranked = Ridge(alpha=1e-9, target="rank").fit(X, y).predict(X)[0]
    assert np.all(np.diff(ranked[:4]) > 0)


@pytest.mark.parametrize("bad", [
    lambda: MLPEnsemble(members=0),
    lambda: MLPEnsemble().fit(np.zeros((1, 3)), np.zeros(1)),
    lambda: MLPEnsemble().fit(np.zeros((3, 3)), np.zeros(2)),
    lambda: MLPEnsemble().fit(np.zeros((3, 3)), np.array([0, 1, np.nan])),
    lambda: MLPEnsemble().predict(np.zeros((2, 3))),
    lambda: Ridge(alpha=-1),
    lambda: transform_targets(np.zeros(3), "log"),
])
def test_model_errors_are_nasir_errors(bad):
    with pytest.raises(NasirError):
        bad()


def test_training_set_handles_failures_and_repeats(nb201):
    a, b = nb201.reference("resnet"), nb201.reference("all_conv3x3")
    idx, y = training_set(nb201, [(a, 0.5), (b, 0.9), (a, 0.7), (b, float("-inf"))])
    assert idx.tolist() == [nb201.indices(a), nb201.indices(b)]
    assert y[0] == 0.7 and y[1] < 0.7


# -- encodings and tables ----------------------------------------------------------------------

def test_onehot_matches_the_encoding_pass(nb201, mnas):
    for sp in (nb201, mnas):
        rows = _rows(sp, 20)
        want = encode(sp, [sp.from_indices(r) for r in rows], "onehot")
        assert np.array_equal(onehot(rows, sizes_of(sp)), want)


def test_mnasnet_macs_table_is_exact(mnas):
    table = mnasnet_terms(mnas)
    rows = np.concatenate([_rows(mnas, 12, seed=3),
                           [mnas.indices(mnas.reference(r)) for r in mnas.references]])
    for row in rows:
        want = analyze(mnas.instantiate(mnas.from_indices(row)))["macs"]
        assert table.evaluate(row[None])[0] == want


def test_mnasnet_macs_are_not_additive(mnas):
    assert additive_terms(mnas, lambda sp, a: analyze(sp.instantiate(a))["macs"]) is None


def test_nb201_macs_table_is_exact(nb201):
    table = metric_terms(nb201, "macs")
    for row in _rows(nb201, 6, seed=5):
        assert table.evaluate(row[None])[0] == analyze(
            nb201.instantiate(nb201.from_indices(row)))["macs"]


def test_term_table_layouts():
    t = TermTable.from_terms([([0, 1], np.arange(6.0).reshape(2, 3)),
                              ([1], np.array([10.0, 20, 30]))], constant=1.0)
    idx = np.array([[1, 2], [0, 0]])
    assert t.evaluate(idx).tolist() == [1 + 5 + 30, 1 + 0 + 10]
    assert t.same_layout(TermTable(t.pos, t.stride, t.base, t.values * 2))
    assert not t.same_layout(TermTable.dense(np.zeros((2, 3))))
    assert group_decisions(np.array([5, 5, 5, 5, 5, 5]), cap=125) == [[0, 1, 2], [3, 4, 5]]


def test_lut_adapter_matches_the_lut_prediction(mnas, tmp_path):
    from nasir.backends.tvm.lut import FREE_OPS, LatencyLUT, layer_key, layers

    lut = LatencyLUT(str(tmp_path / "lut.db"), "host")
    rng = np.random.default_rng(0)
    picks = [mnas.from_indices(r) for r in _rows(mnas, 3, seed=9)]
    for a in picks:
        for n in layers(mnas.instantiate(a)):
            # real keys from the LUT's own layer_key; stand-in latencies (no TVM compile);
            # free ops get 0 as LatencyLUT.ensure stores them
            v = 0.0 if n.op.name in FREE_OPS else float(rng.uniform(0.01, 1.0))
            lut._lat.setdefault(layer_key(n), v)
    table = lut_terms(mnas, lut, missing="nan")
    for a in picks:
        got = table.evaluate(np.array([mnas.indices(a)]))[0]
        assert got == pytest.approx(lut.predict(mnas.instantiate(a)), rel=1e-12)
    with pytest.raises(BackendError, match="not in the latency table"):
        lut_terms(mnas, lut)
    lut.close()


# -- the kernel -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnas_scorer(mnas):
    sizes = sizes_of(mnas)
    rows = _rows(mnas, 120, seed=11)
    macs = mnasnet_terms(mnas)
    y = np.log(macs.evaluate(rows)) + np.random.default_rng(0).normal(0, 0.1, len(rows))
    X = onehot(rows, sizes)
    ens = MLPEnsemble(members=4, hidden=8, epochs=60, seed=2).fit(X, y)
    ridge = Ridge(1.0).fit(X, y)
    return Scorer(sizes, ens, ridge, mnasnet_terms(mnas, proxy_latency_ms()), macs)


def test_kernel_numpy_python_agree(mnas, mnas_scorer):
    rows = _rows(mnas, 3000, seed=12)
    fast, vec = mnas_scorer.score(rows), mnas_scorer.score_numpy(rows, chunk=700)
    slow = mnas_scorer.score_python(rows[:150])
    assert fast.allclose(vec)
    head = type(fast)(*(getattr(fast, k)[:150] for k in
                        ("mean", "std", "ridge", "latency_ms", "macs")))
    assert head.allclose(slow)
    assert np.array_equal(fast.macs, mnasnet_terms(mnas).evaluate(rows).astype(np.int64))
    ens_mean, ens_std = mnas_scorer_predict(mnas_scorer, mnas, rows[:50])
    assert np.allclose(fast.mean[:50], ens_mean, atol=1e-4)
    assert np.allclose(fast.std[:50], ens_std, atol=1e-4)


def mnas_scorer_predict(scorer, space, rows):
    """The ensemble's own float32 forward, member by member (independent of the kernel)."""
    X = onehot(rows, sizes_of(space))
    h = np.maximum(X @ scorer.w1 + scorer.b1, 0) * scorer.w2
    preds = h.reshape(len(rows), len(scorer.b2), scorer.hidden).sum(-1) + scorer.b2
    return preds.mean(1), preds.std(1)


def test_kernel_without_models_and_bad_rows(nb201):
    sc = Scorer(sizes_of(nb201), macs=metric_terms(nb201, "macs"))
    r = sc.score(_rows(nb201, 10))
    assert (r.mean == 0).all() and (r.ridge == 0).all() and (r.macs > 0).all()
    with pytest.raises(SpecError, match="option indices"):
        sc.score(np.zeros((3, 4), np.int64))
    with pytest.raises(SpecError, match="out of range"):
        sc.score(np.full((1, 6), 9))
    with pytest.raises(SpecError, match="features"):
        Scorer(sizes_of(nb201), MLPEnsemble(members=1, hidden=2, epochs=1).fit(
            np.zeros((3, 4)), np.arange(3.0)))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_kernel_reads_narrow_rows_on_any_thread_count(mnas, mnas_scorer, dtype):
    rows = _rows(mnas, 5000, seed=13)
    ref = mnas_scorer.score_python(rows[:200])
    narrow = rows.astype(dtype)
    one = mnas_scorer.score(narrow, threads=1)
    for threads in (None, 2):
        many = mnas_scorer.score(narrow, threads=threads)
        for k in ("mean", "std", "ridge", "latency_ms", "macs"):
            assert np.array_equal(getattr(one, k), getattr(many, k)), k
    assert one.allclose(mnas_scorer.score(rows, threads=1))
    assert one.allclose(mnas_scorer.score_numpy(narrow, chunk=700))
    head = type(one)(*(getattr(one, k)[:200] for k in ("mean", "std", "ridge", "latency_ms",
                                                        "macs")))
    assert head.allclose(ref)
    assert mnas_scorer.index_dtype() == np.int8


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_kernel_finds_the_first_bad_row_in_every_width(mnas, mnas_scorer, dtype):
    rows = _rows(mnas, 6000, seed=14).astype(dtype)
    big = [2**32 + 1] if dtype == np.int64 else []  # int32 truncation would make it 1
    for value in [-1, np.iinfo(dtype).min, np.iinfo(dtype).max, *big]:
        bad = rows.copy()
        bad[4500, 3] = value
        bad[5999, 0] = -1
        for threads in (1, 2):
            with pytest.raises(SpecError, match=r"\(row 4500\)"):
                mnas_scorer.score(bad, threads=threads)
        with pytest.raises(SpecError, match=r"\(row 4500\)"):
            mnas_scorer.score_numpy(bad, chunk=1000)
    with pytest.raises(SpecError, match="threads must be"):
        mnas_scorer.score(rows, threads=0)


_SECOND = """
import numpy as np
from nasir.strategies.surrogates import kernel as K
K.Scorer(np.array([2, 3])).score(np.zeros((2, 2), np.int64))
print(K.cache_dir(), sum(K._score_kernel.stats.cache_hits.values()))
"""


@pytest.mark.slow
def test_compiled_kernel_is_cached_on_disk(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "nb")}
    runs = [subprocess.run([sys.executable, "-c", _SECOND], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs[0] == [str(tmp_path / "nb"), "0"]
    assert runs[1] == [str(tmp_path / "nb"), "1"]
    assert any(p.endswith(".nbi") for _, _, fs in os.walk(tmp_path / "nb") for p in fs)
