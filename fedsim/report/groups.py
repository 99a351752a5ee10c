"""Runs that differ only in their seed, grouped; the keys that tell groups apart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from channels import ChannelConfig
from fedsim.errors import FedsimError
from fedsim.results.labels import differing_keys, flatten, label_of
from fedsim.results.rundir import RunData
from fedsim.results.sweepdir import load_runs

_LEVEL_KEYS = ("channel.scale", "channel.dispersion", "channel.gsnr_db")
#: Hitting times use a causal running median, so one lucky round does not count as reaching.
SMOOTH = 5


@dataclass
class Group:
    """Runs with identical config except the seed."""

    label: str
    values: dict[str, Any]  # the differing keys' values
    runs: list[RunData]
    flat: dict[str, Any] = field(default_factory=dict)  # one member's flattened config

    def matrix(self, metric: str, x: str = "round") -> tuple[np.ndarray, np.ndarray]:
        """x values ``[T]`` and per-seed values ``[S, T]`` (NaN where absent or non-finite)."""
        xs_all = sorted({float(r[x]) for run in self.runs for r in run.metrics
                         if isinstance(r.get(metric), int | float) and isinstance(r.get(x), int | float)})
        pos = {v: i for i, v in enumerate(xs_all)}
        Y = np.full((len(self.runs), len(xs_all)), np.nan)
        for s, run in enumerate(self.runs):
            for r in run.metrics:
                v, xv = r.get(metric), r.get(x)
                if isinstance(v, int | float) and isinstance(xv, int | float) and math.isfinite(v):
                    Y[s, pos[float(xv)]] = float(v)
        return np.asarray(xs_all), Y

    def has(self, metric: str) -> bool:
        return any(metric in r for run in self.runs for r in run.metrics)

    @property
    def alpha(self) -> float | None:
        """Effective tail index: 2 for Gaussian interference, None without interference."""
        try:
            channel = ChannelConfig.model_validate(self.runs[0].config.get("channel", {}))
        except ValueError:  # a run directory written by another version
            return None
        return None if channel.interference.name == "none" else channel.alpha

    @property
    def level(self) -> float | None:
        key = self.level_key
        return None if key is None else float(self.flat[key])

    @property
    def level_key(self) -> str | None:
        """The key that sets the interference level: scale, dispersion or GSNR (None: none set)."""
        return next((k for k in _LEVEL_KEYS if self.flat.get(k) is not None), None)


# ------------------------------------------------------------------------------ loading


def load_groups(paths: Sequence[str | Path]) -> tuple[list[Group], list[str]]:
    """Load runs (sweep folders expand to their variants) and group them; returns the groups
    and the config keys that differ between them."""
    if not paths:
        raise FedsimError("give at least one run directory or sweep folder")
    for p in paths:
        if not Path(p).exists():
            raise FedsimError(f"{p}: no such run directory or sweep folder")
    runs = load_runs(paths)
    runs = [r for r in runs if r.metrics]
    if not runs:
        raise FedsimError("none of these run directories has any metrics yet")
    flats = [flatten(r.config) for r in runs]
    differing = differing_keys(flats)
    by_key: dict[tuple, Group] = {}
    for run, f in zip(runs, flats, strict=True):
        vals = {k: f.get(k) for k in differing}
        key = tuple(repr(v) for v in vals.values())
        if key not in by_key:
            by_key[key] = Group(label_of(vals, differing) or run.label, vals, [], f)
        by_key[key].runs.append(run)
    return list(by_key.values()), differing


def sortable(v: Any) -> tuple:
    return (0, float(v)) if isinstance(v, int | float) else (1, str(v))
