"""Paper presets: each seed system of the NAS literature as one experiment, as data.

A :class:`Preset` names the paper, the space (in its paper mode where it has one), the
strategy, the estimator and the reward with the paper's settings, the paper's budget (how
many architectures it trained) and what ``--trials`` / ``--epochs`` scale, and a list of
``deviations``: every way the run differs from the paper, and why. ``nasir search --preset
NAME`` runs one (other flags still override it); ``nasir presets`` lists them. What a
preset is, and how ``--trials`` / ``--epochs`` scale it:
:mod:`nasir.runtime.preset_schema`; the eleven presets themselves:
:mod:`nasir.runtime.paper_presets`.

>>> p = get_preset("metaqnn")
>>> e = p.experiment(trials=27, epochs=2)
>>> e.strategy.options["budget"], e.budget.trials, e.estimator.options["epochs"]
(27, 27, 2)
>>> get_preset("darts").experiment(epochs=2).estimator.options["epochs"]
24
>>> try:
...     get_preset("nas")
... except ConfigError as err:
...     print(err.one_line())  # doctest: +ELLIPSIS
unknown preset 'nas' (where: --preset) — fix: valid presets: nasrl, nasnet, metaqnn, ...
"""

from __future__ import annotations

from functools import cache

from nasir.runtime.experiment import ConfigError
from nasir.runtime.paper_presets import PAPER_PRESETS
from nasir.runtime.preset_schema import Preset, Scale

__all__ = ["Preset", "Scale", "all_presets", "get_preset", "papers_table", "preset_names"]


@cache
def _registry() -> dict[str, Preset]:
    return {p.name: p for p in PAPER_PRESETS}


def all_presets() -> list[Preset]:
    """Every preset, in the order the literature introduced the systems."""
    return list(_registry().values())


def preset_names() -> list[str]:
    """The preset names (``nasir search --preset NAME``)."""
    return list(_registry())


def get_preset(name: str) -> Preset:
    """The preset ``name``; an unknown name is one :class:`ConfigError` naming the valid
    ones."""
    presets = _registry()
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}", where="--preset",
                          hint=f"valid presets: {', '.join(presets)}")
    return presets[name]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def papers_table() -> str:
    """The Markdown table of ``docs/papers.md``: system × (paper setting, nasir default,
    deviations), generated from the presets (a test keeps the document equal to it)."""
    rows = ["| preset | system | paper setting | nasir default | deviations |",
            "|---|---|---|---|---|"]
    for p in all_presets():
        dev = (f"{len(p.deviations)}: " + " · ".join(
            f"({k}) {d}" for k, d in enumerate(p.deviations, 1))) if p.deviations else "0"
        rows.append(f"| `{p.name}` | {_cell(p.system)} | {_cell(p.paper_setting)} | "
                    f"{_cell(p.summary())} | {_cell(dev)} |")
    return "\n".join(rows) + "\n"
