"""The finite-difference policy-gradient search of Mortazi and Bagci (2018), after Kohl and Stone.

The policy is one grid point ``π_0`` (a grid index per dimension). Each iteration draws ``p``
perturbations ``Δ_i`` with every entry uniform on ``{−ε, 0, +ε}``, evaluates the candidates
``π_0 + Δ_i`` (clipped to the grid) and, per dimension d, averages the rewards of the candidates
whose ``Δ^d`` was ``+ε``, ``0`` and ``−ε``:

    A_d = 0                 if Avg0_d > max(Avg+_d, Avg−_d)
    A_d = Avg+_d − Avg−_d   otherwise
    π_0 ← round_to_grid(π_0 + η · A / ‖A‖)

A dimension where one of the three groups is empty gets ``A_d = 0``, and ``A = 0`` leaves π_0
where it is. Server-free: the perturbations of iteration t come from a generator keyed by
(search seed, t) only, so every UE that holds π draws the same ones; with the same rewards (the
broadcast sum) every UE then makes the same update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from channels.rng import numpy_generator
from fedsim.search.space import FidelitySpace, SearchSpace

__all__ = ["perturbations", "rl_search", "rl_update", "ue_perturbations"]

STREAM = "search-rl"
Evaluate = Callable[[list[tuple[np.ndarray, dict[str, Any]]]], list[float]]


def perturbations(seed: int, iteration: int, p: int, eps: int | np.ndarray, dims: int) -> np.ndarray:
    """``[p, dims]`` integer perturbations, each entry uniform on ``{−ε_d, 0, +ε_d}``."""
    rng = numpy_generator(seed, STREAM, iteration)
    return (rng.integers(0, 3, size=(p, dims)) - 1) * np.asarray(eps, dtype=np.int64)


def ue_perturbations(seed: int, iteration: int, p: int, eps: int | np.ndarray, dims: int,
                     num_ues: int) -> np.ndarray:
    """``[num_ues, p, dims]``: what each UE draws on its own from the shared key (identical rows)."""
    return np.stack([perturbations(seed, iteration, p, eps, dims) for _ in range(num_ues)])


def rl_update(pi0: np.ndarray, deltas: np.ndarray, rewards: np.ndarray, eta: float,
              sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One policy update: (new π_0 on the grid, the finite-difference vector A)."""
    r = np.asarray(rewards, dtype=np.float64)[:, None]
    sign = np.sign(deltas)
    avg = {}
    for s in (1, 0, -1):
        mask = sign == s
        count = mask.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            avg[s] = np.where(count > 0, (mask * r).sum(axis=0) / np.maximum(count, 1), np.nan)
    a = np.where(avg[0] > np.maximum(avg[1], avg[-1]), 0.0, avg[1] - avg[-1])
    a = np.nan_to_num(a, nan=0.0)
    norm = float(np.linalg.norm(a))
    step = eta * a / norm if norm > 0 else np.zeros_like(a)
    new = np.clip(np.rint(np.asarray(pi0, dtype=float) + step), 0, np.asarray(sizes) - 1).astype(np.int64)
    return new, a


def rl_search(space: SearchSpace, fidelity: FidelitySpace, budget: int, seed: int, evaluate: Evaluate,
              *, p: int = 8, eps: int = 1, eta: float = 1.0, init: str = "center") -> None:
    """Run iterations of ``p`` candidates at full fidelity until ``budget`` evaluations are spent
    (the last iteration is cut short; it updates π_0 from the candidates it has)."""
    sizes = space.sizes
    if init == "center":
        pi0 = (sizes - 1) // 2
    else:
        pi0 = space.sample(numpy_generator(seed, STREAM + "-init"), 1)[0]
    full, used, it = fidelity.full(), 0, 0
    while used < budget:
        deltas = perturbations(seed, it, p, eps, len(sizes))[: budget - used]
        cands = space.clip(pi0 + deltas)
        rewards = evaluate([(c, full) for c in cands])
        pi0, _ = rl_update(pi0, cands - pi0, np.asarray(rewards), eta, sizes)
        used += len(cands)
        it += 1
