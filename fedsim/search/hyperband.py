"""Successive halving and Hyperband (Li, Jamieson, DeSalvo, Rostamizadeh and Talwalkar, JMLR 2018).

The resource is one fidelity key whose levels ``l_0 < … < l_smax`` stand for resources
``1, η, …, η^smax`` (so ``R = η^smax`` in units of the cheapest level). Hyperband runs the brackets
``s = smax, …, 0``; bracket s starts

    n = ⌈(smax + 1) / (s + 1) · η^s⌉ configurations at resource r = R · η^(−s)

and successive halving keeps the best ``⌊n_i / η⌋`` of rung i for rung i + 1, where
``n_i = ⌊n · η^(−i)⌋`` and ``r_i = r · η^i`` (level ``smax − s + i``). Successive halving alone
(``sh``) is the most exploratory bracket, ``s = smax``. Brackets repeat with fresh configurations
until the evaluation budget is spent; the last rung is cut short where the budget ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from channels.rng import numpy_generator
from fedsim.search.space import FidelitySpace, SearchSpace

__all__ = ["bracket_schedule", "hyperband_search"]

STREAM = "search-hyperband"
Evaluate = Callable[[list[tuple[np.ndarray, dict[str, Any]]]], list[float]]


def bracket_schedule(smax: int, eta: int) -> list[list[tuple[int, float, int]]]:
    """Hyperband's brackets, ``s = smax`` first: per rung ``(n_i, r_i, level)``, integers exact."""
    big_r = eta**smax
    out = []
    for s in range(smax, -1, -1):
        n = -(-((smax + 1) * eta**s) // (s + 1))  # ceiling in integers
        out.append([(n // eta**i, big_r * eta ** (i - s), smax - s + i) for i in range(s + 1)])
    return out


def hyperband_search(space: SearchSpace, fidelity: FidelitySpace, budget: int, seed: int, evaluate: Evaluate,
                     *, eta: int = 3, key: str | None = None, only_sh: bool = False) -> None:
    """Run Hyperband (or successive halving) brackets until ``budget`` evaluations are spent."""
    key = key or fidelity.keys[0]
    levels = next(d for d in fidelity.dims if d.key == key).size
    schedule = bracket_schedule(levels - 1, eta)
    if only_sh:
        schedule = schedule[:1]
    used, k = 0, 0
    while used < budget:
        rungs = schedule[k % len(schedule)]
        rng = numpy_generator(seed, STREAM, k)
        points = space.sample(rng, rungs[0][0])
        for i, (_, _, level) in enumerate(rungs):
            points = points[: budget - used]
            if len(points) == 0:
                break
            scores = np.asarray(evaluate([(pt, fidelity.at_level(key, level)) for pt in points]), dtype=float)
            used += len(points)
            if i + 1 < len(rungs):
                keep = rungs[i + 1][0]
                order = np.argsort(-scores, kind="stable")[:keep]
                points = points[np.sort(order)] if keep else points[:0]
        k += 1
