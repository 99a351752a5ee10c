"""Baselines at an equal budget: random search, and TPE through ``optuna`` (the ``search`` extra).

Both evaluate at full fidelity, ``batch`` candidates together (a batch is one parallel sweep in
live mode). Random search draws grid points without replacement while the grid has enough of them,
from a generator keyed by the search seed. TPE asks optuna's seeded
:class:`optuna.samplers.TPESampler` for a batch of integer grid indices, one per dimension, and
tells it the rewards; with the same seed and the same rewards it asks for the same candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from channels.rng import numpy_generator
from fedsim.errors import ConfigError
from fedsim.search.space import FidelitySpace, SearchSpace

__all__ = ["random_search", "tpe_search"]

Evaluate = Callable[[list[tuple[np.ndarray, dict[str, Any]]]], list[float]]


def random_search(space: SearchSpace, fidelity: FidelitySpace, budget: int, seed: int, evaluate: Evaluate,
                  *, batch: int = 4) -> None:
    """``budget`` uniform grid points (distinct while the grid allows), ``batch`` at a time."""
    rng = numpy_generator(seed, "search-random")
    n = space.cardinality
    if budget <= n:
        flat = rng.choice(n, size=budget, replace=False)
        points = np.stack(np.unravel_index(flat, tuple(space.sizes)), axis=1)
    else:
        points = space.sample(rng, budget)
    full = fidelity.full()
    for start in range(0, budget, batch):
        evaluate([(pt, full) for pt in points[start:start + batch]])


def tpe_search(space: SearchSpace, fidelity: FidelitySpace, budget: int, seed: int, evaluate: Evaluate,
               *, batch: int = 4, startup: int = 5) -> None:
    """Optuna's TPE over the grid indices, ``batch`` asks per evaluation round."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("method tpe needs optuna: pip install 'fedsim[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists = {f"d{j}": optuna.distributions.IntDistribution(0, int(s) - 1) for j, s in enumerate(space.sizes)}
    full, used = fidelity.full(), 0
    while used < budget:
        trials = [study.ask(dists) for _ in range(min(batch, budget - used))]
        points = [np.array([t.params[f"d{j}"] for j in range(len(dists))]) for t in trials]
        for trial, score in zip(trials, evaluate([(pt, full) for pt in points]), strict=True):
            study.tell(trial, float(score))
        used += len(trials)
