"""NetAdapt through the runner: each iteration's per-layer proposals are trials.

The registry's ``netadapt``. The run's space is the start network's width space
(:mod:`nasir.backends.torch.width_space`; ``nasir search --space S --strategy netadapt``
derives it from ``S``), so every network NetAdapt visits is an ordinary assignment: hashed, stored,
measured and exported by the runner. The paper's Algorithm 1 (as :class:`NetAdaptSearch`
runs it in one process) becomes a sequence of trials, each with
:meth:`~nasir.strategies.base.Strategy.trial_inputs` (:mod:`nasir.runtime.inherit`):

1. trial 1, ``stage=pretrain``: the start network trained ``pretrain_epochs`` by the run's
   training estimator, which keeps its weights as ``weights/HASH.pt``;
2. iteration ``i``: per layer, the largest filter count meeting the target by the latency
   *table* (``Res_{i-1} − ΔR_i``, as :class:`NetAdaptSearch`); each is a trial,
   ``stage=short_term``, that starts from the current network's weights cut to the
   proposal (largest-norm filters kept) and fine-tunes ``short_term_epochs`` (SGD, lr
   1e-3 …); the run's latency estimator measures it;
3. once the iteration's trials are fed back, the winner (``pick``: ``accuracy``, the
   paper's; ``ratio``, the official code's) is the next current network; ``propose``
   raises :class:`~nasir.strategies.base.AwaitFeedback` until then;
4. when the table latency meets the budget (or after ``max_iters``), one trial,
   ``stage=long_term``, fine-tunes the final network ``long_term_epochs`` from its weights;
   then the search ends (:class:`~nasir.strategies.dedup.SpaceExhausted`).

Choice, target and budget use the table, as the paper's per-layer look-up tables do, so a
run's decisions do not depend on measurement noise and a resumed run decides as an
uninterrupted one; the trials' ``latency_ms`` is what the runner measured. ``latency``:
``"lut"`` (a :class:`~nasir.backends.tvm.lut.LatencyLUT` on the host, at ``lut`` or the
one-shot default path) or ``"macs"`` (ms = MACs · 1e-6; a stand-in without TVM).

>>> from nasir.backends.torch.width_space import build
>>> sp = build(base="tiny_mnasnet", start="small", input_shape=(1, 8, 8), num_classes=10)
>>> s = NetAdapt(sp, latency="macs", budget_ratio=0.9, short_term_epochs=1)
>>> a = s.propose(1)[0]; s.trial_inputs(0)["stage"]
'pretrain'
>>> s.feedback(a, {"status": "ok", "accuracy": 0.5})
>>> props = [s.propose(1)[0] for _ in range(len(s.queue))]
>>> sorted({s.trial_inputs(k)["stage"] for k in range(1, 1 + len(props))})
['short_term']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from nasir.backends.torch.width_space import SPEC, derived_spec
from nasir.errors import SpecError
from nasir.graph import Graph
from nasir.space import Assignment, Space
from nasir.strategies.base import AwaitFeedback, Strategy
from nasir.strategies.dedup import SpaceExhausted
from nasir.strategies.oneshot.netadapt import FINETUNE, PICKS

__all__ = ["LATENCY_MODELS", "NetAdapt"]

#: how the strategy predicts latency to choose filter counts
LATENCY_MODELS = ("lut", "macs")


def _macs_ms(g: Graph) -> float:
    from nasir.passes.analysis import analyze

    return analyze(g)["macs"] * 1e-6


class NetAdapt(Strategy):
    """The paper's NetAdapt as trials of the runner (see the module docstring); ``space``
    must be a width space (:func:`~nasir.backends.torch.width_space.build`). Options as
    :class:`~.netadapt.NetAdaptSearch`'s; ``train``: overrides of the fine-tuning's
    training settings; ``device`` is accepted and unused (trials train where the run's
    estimator trains). ``start``, ``filter_step`` and ``layers`` shape the width space
    (:func:`~nasir.backends.torch.width_space.derived_spec` moves them into its spec)."""

    name: ClassVar[str] = "netadapt"
    #: only the training estimator starts a trial from the weights it inherits
    estimators: ClassVar[tuple[str, ...] | None] = ("training",)
    #: the final fine-tuning trial repeats the last winner's architecture on purpose (its
    #: inputs differ); every other trial is a new architecture
    distinct_proposals: ClassVar[bool] = False
    #: the run searches the start network's width space (preflight derives it)
    derives_space: ClassVar[bool] = True
    #: how the end-of-search note names the method
    title: ClassVar[str] = "NetAdapt"

    def __init__(self, space: Space, seed: int = 0, objective: str = "accuracy", *,
                 budget_ms: float | None = None, budget_ratio: float = 0.5,
                 latency: str = "lut", lut: Any = None,
                 latency_fn: Callable[[Graph], float] | None = None,
                 reduction_ratio: float = 0.025, reduction_decay: float = 0.96,
                 max_iters: int = 30, short_term_epochs: int = 1, long_term_epochs: int = 5,
                 pretrain_epochs: int = 5, pick: str = "accuracy",
                 train: Mapping[str, Any] | None = None, device: str | None = None) -> None:
        super().__init__(space, seed, objective)
        if self.derives_space and not isinstance(space.meta.get("netadapt"), Mapping):
            raise SpecError(f"netadapt runs on a width space, not {space.name}",
                            hint=f"nasir search derives it (space {SPEC}); in Python use "
                                 "NetAdaptSearch(space).search()")
        for nm, v in (("max_iters", max_iters), ("short_term_epochs", short_term_epochs),
                      ("pretrain_epochs", pretrain_epochs)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(f"netadapt: {nm} must be an int >= 1 under the runner, "
                                f"got {v!r}")
        if isinstance(long_term_epochs, bool) or not isinstance(long_term_epochs, int) \
                or long_term_epochs < 0:
            raise SpecError(f"netadapt: long_term_epochs must be an int >= 0, "
                            f"got {long_term_epochs!r}")
        for nm, x in (("budget_ratio", budget_ratio), ("reduction_ratio", reduction_ratio),
                      ("reduction_decay", reduction_decay), ("budget_ms", budget_ms or 1)):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0:
                raise SpecError(f"netadapt: {nm} must be a number > 0, got {x!r}")
        if pick not in PICKS:
            raise SpecError(f"netadapt: unknown pick {pick!r}", hint=f"use one of {PICKS}")
        if latency not in LATENCY_MODELS:
            raise SpecError(f"netadapt: unknown latency {latency!r}",
                            hint=f"use one of {LATENCY_MODELS}")
        self.budget_ms, self.budget_ratio = budget_ms, float(budget_ratio)
        self.ratio, self.decay = float(reduction_ratio), float(reduction_decay)
        self.max_iters, self.pick = max_iters, pick
        self.short_term_epochs, self.long_term_epochs = short_term_epochs, long_term_epochs
        self.pretrain_epochs = pretrain_epochs
        self.train: dict[str, Any] = {**FINETUNE, **dict(train or {})}
        self._latency_fn = latency_fn
        if latency_fn is None and latency == "macs":
            self._latency_fn = _macs_ms
        self.latency, self.lut = latency, lut
        self._lat: dict[Assignment, float] = {}
        self._hash_cache: dict[Assignment, str] = {}
        #: per proposed trial (proposal order): its assignment, inputs and what it tries
        self.trials: list[dict[str, Any]] = []
        #: proposals of the current iteration not yet proposed
        self.queue: list[dict[str, Any]] = []
        self._fed = 0
        self.current: dict[str, Any] | None = None  # the network of the last iteration
        self.iterations: list[dict[str, Any]] = []
        self.lat0 = self.budget = 0.0
        self.stop: str | None = None
        self.done = False

    @classmethod
    def derived_space(cls, space: Mapping[str, Any], options: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's width space over the user's ``space`` config, and the options left
        (:func:`~nasir.backends.torch.width_space.derived_spec`; the runner's preflight asks)."""
        if not cls.derives_space:
            return dict(space), dict(options)
        return derived_spec(space, options)

    # -- latency and weights ------------------------------------------------------------
    def table_ms(self, a: Assignment) -> float:
        """The latency model's prediction for ``a`` (cached)."""
        if a not in self._lat:
            from nasir.backends.torch.lowering import prepare

            if self._latency_fn is None:
                from nasir.strategies.oneshot.common import latency_function

                lut = self.lut
                if isinstance(lut, str):
                    from nasir.backends.tvm.lut import LatencyLUT

                    lut = LatencyLUT(lut, "host")
                self._latency_fn = latency_function(None, lut)[0]
            self._lat[a] = float(self._latency_fn(prepare(self.space.instantiate(a))))
        return self._lat[a]

    def _weights(self, a: Assignment) -> str:
        from nasir.passes.hashing import assignment_hash

        if a not in self._hash_cache:
            self._hash_cache[a] = assignment_hash(self.space, a)
        return f"weights/{self._hash_cache[a]}.pt"

    def trial_inputs(self, k: int) -> dict[str, Any]:
        """Trial ``k``'s stage, the weights it starts from and its training settings."""
        return dict(self.trials[k]["inputs"]) if k < len(self.trials) else {}

    # -- proposals -------------------------------------------------------------------------
    def _add(self, kind: str, a: Assignment, inputs: dict[str, Any], **info: Any) -> None:
        self.queue.append({"kind": kind, "assignment": a, "inputs": inputs, **info})

    def _start(self) -> None:
        a = self.start_assignment()
        self._add("start", a, {"train": {"epochs": self.pretrain_epochs},
                               "stage": "pretrain"})

    def start_assignment(self) -> Assignment:
        """The network the search starts from (the width space's ``start``)."""
        return self.space.reference("start")

    def _iterate(self) -> None:
        """Queue the next iteration's proposals, or the final trial."""
        cur = self.current
        assert cur is not None
        it = len(self.iterations) + 1
        if cur["latency_table_ms"] <= self.budget or it > self.max_iters:
            self.stop = self.stop or ("budget met" if cur["latency_table_ms"] <= self.budget
                                      else "max_iters")
            return self._final()
        target = cur["latency_table_ms"] - self.lat0 * self.ratio * self.decay ** (it - 1)
        a = cur["assignment"]
        choices = {}
        for d in self.space.decisions:
            last = None
            for k in sorted((o for o in d.options if o < a[d.label]), reverse=True):
                b = a.replace(**{d.label: k})
                lat = self.table_ms(b)
                last = (k, b, lat, lat <= target)
                if last[3]:
                    break
            if last is not None and (last[3] or last[2] < cur["latency_table_ms"]):
                choices[d.label] = last
        pool = [n for n, c in choices.items() if c[3]] or list(choices)
        if not pool:
            self.stop = "no layer can lower the latency"
            return self._final()
        inputs = {"inherit": {"weights": self._weights(a), "parent": a.to_json()},
                  "train": {**self.train, "epochs": self.short_term_epochs},
                  "stage": "short_term"}
        for n in pool:
            k, b, lat, met = choices[n]
            self._add("proposal", b, inputs, iter=it, target_ms=target, layer=n,
                      filters=k, was=a[n], latency_table_ms=lat, met_target=met)

    def _final(self) -> None:
        cur = self.current
        assert cur is not None
        if self.long_term_epochs == 0:
            self.done = True
            return
        a = cur["assignment"]
        self._add("final", a, {"inherit": {"weights": self._weights(a)},
                               "train": {**self.train, "epochs": self.long_term_epochs},
                               "stage": "long_term"})

    def _propose(self, n: int) -> list[Assignment]:
        if n != 1:
            raise SpecError("netadapt proposes one trial at a time", hint="propose(1)")
        if not self.trials and not self.queue:
            self._start()
        if not self.queue:
            if self.done:
                final = [k + 1 for k, t in enumerate(self.trials) if t["kind"] == "final"]
                raise SpaceExhausted(f"{self.title} finished ({self.stop}) after "
                                     f"{len(self.iterations)} iterations" + (
                                         f"; the adapted network is trial {final[0]} "
                                         "(long-term fine-tuned)" if final else ""))
            raise AwaitFeedback("NetAdapt picks the iteration's network from the feedback "
                                "of all its proposals")
        t = self.queue.pop(0)
        self.trials.append(t)
        return [t["assignment"]]

    # -- feedback -------------------------------------------------------------------------
    def _feedback(self, a: Assignment, metrics: dict[str, Any]) -> None:
        t = self.trials[self._fed]
        self._fed += 1
        t["metrics"] = {k: metrics.get(k) for k in ("status", "accuracy", "latency_ms")}
        if self.queue or self._fed < len(self.trials):
            return  # the iteration's other proposals are still to come
        ok = metrics.get("status", "ok") == "ok" and metrics.get("accuracy") is not None
        if t["kind"] == "final":
            self.done = True
            return
        if t["kind"] == "start":
            if not ok:
                self.stop, self.done = "the start network failed to train", True
                return
            self.lat0 = self.table_ms(a)
            self.budget = self.budget_ms if self.budget_ms is not None \
                else self.budget_ratio * self.lat0
            self.current = self._net(t)
            return self._iterate()
        self._pick()

    def _net(self, t: Mapping[str, Any]) -> dict[str, Any]:
        a = t["assignment"]
        return {"assignment": a, "accuracy": float(t["metrics"]["accuracy"]),
                "latency_table_ms": self.table_ms(a),
                "latency_ms": t["metrics"].get("latency_ms")}

    def _pick(self) -> None:
        cur = self.current
        assert cur is not None
        it = len(self.iterations) + 1
        props = [t for t in self.trials if t.get("iter") == it
                 and t["metrics"].get("status", "ok") == "ok"
                 and t["metrics"].get("accuracy") is not None]
        if not props:
            self.stop = "every proposal failed to train"
            return self._final()

        def score(t: Mapping[str, Any]) -> tuple[float, float]:
            acc, lat = float(t["metrics"]["accuracy"]), t["latency_table_ms"]
            if self.pick == "ratio":
                return (-(cur["accuracy"] - acc + 1e-6) / (cur["latency_table_ms"] - lat + 1e-5),
                        -lat)
            return acc, -lat

        best = max(props, key=score)
        self.current = self._net(best)
        self.iterations.append({"iter": it, "target_ms": best["target_ms"],
                                "layer": best["layer"], "filters": best["filters"],
                                "met_target": best["met_target"], **self.current,
                                "assignment": best["assignment"].to_json()})
        self._iterate()

    def state(self) -> dict[str, Any]:
        """The base state plus the iterations' chosen networks, the budget and the stop."""
        return {**super().state(), "iterations": list(self.iterations),
                "start_latency_table_ms": self.lat0, "budget_ms": self.budget,
                "stop": self.stop, "latency": self.latency}
