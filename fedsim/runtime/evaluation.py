"""Metrics of the models someone holds at the end of a round: the global model of a server-based
strategy (every UE receives it), or the models the UEs keep (server-free, overlap), whose headline
is their median with its spread; the virtual average of UE-held models is a reference (``avg_*``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from channels.rng import torch_generator
from fedsim.workloads import Workload
from strategies import HeldModels


def evaluate_held(workload: Workload, held: HeldModels, *, sample: int, seed: int, round: int) -> dict[str, Any]:
    """The metrics row entries for ``held``: the global model's metrics, or for UE-held models those
    of :func:`evaluate_population`."""
    if held.holders is None:
        return dict(workload.evaluate(held.models[0]))
    ues = held.holders
    if all(a < b for a, b in zip(ues, ues[1:], strict=False)):  # already in UE order: no per-UE restack
        return _evaluate_stacked(workload, ues, held.models.to(workload.device).contiguous(), workload.ue_weights(),
                                 sample=sample, seed=seed, round=round)
    return evaluate_population(workload, held.as_dict(), workload.ue_weights(), sample=sample, seed=seed,
                               round=round)


def evaluate_population(workload: Workload, models: dict[int, torch.Tensor], weights: torch.Tensor,
                        *, sample: int = 0, seed: int = 0, round: int = 0) -> dict[str, Any]:
    """Metrics of the models the UEs hold: the headline value of every metric is the **median over
    the UE-held models**, with its spread ``ue_<metric>_min/p10/p90/max``, over at most ``sample``
    UEs drawn from stream "evaluation" (0 = all; evaluating every model of 1000 UEs each round
    would cost more than the training). The virtual average w_bar = sum q_m w_m / sum q_m, a model
    no UE holds, is a reference: its metrics are ``avg_<metric>``. ``consensus`` is the mean
    distance ||w_m - w_bar|| over every UE."""
    ues = sorted(models)
    W = torch.stack([models[u] for u in ues]).to(workload.device)
    return _evaluate_stacked(workload, ues, W, weights, sample=sample, seed=seed, round=round)


def _evaluate_stacked(workload: Workload, ues: list[int], W: torch.Tensor, weights: torch.Tensor,
                      *, sample: int, seed: int, round: int) -> dict[str, Any]:
    """:func:`evaluate_population` of the models ``W [M, d]`` of the UEs ``ues`` (ascending)."""
    q = weights[ues].to(torch.float64)
    w_bar = (q / q.sum()).to(W.device, W.dtype) @ W
    row: dict[str, Any] = {f"avg_{k}": v for k, v in workload.evaluate(w_bar).items()}
    row["consensus"] = float(torch.linalg.vector_norm(W - w_bar, dim=1).mean())
    if 0 < sample < len(ues):
        pick = torch.randperm(len(ues), generator=torch_generator(seed, "evaluation", round))[:sample]
        W = W[pick.sort().values]
        row["ue_metrics_sample"] = sample
    row.update(spread(workload.evaluate_many(W)))
    row["reported_ues"] = len(ues)
    return row


#: The spread of a metric over the UE-held models: min, p10, median, p90, max.
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def spread(per_ue: list[dict[str, Any]]) -> dict[str, float]:
    """For every numeric metric the UEs' models have: the median (under the metric's own name) and
    ``ue_<metric>_min/p10/p90/max`` (a metric some models lack: over those that have it)."""
    keys = [k for k, v in per_ue[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    if all(k in m for m in per_ue for k in keys):  # one quantile call for every metric
        table = np.array([[m[k] for k in keys] for m in per_ue], dtype=np.float64)
        per_key = np.quantile(table, QUANTILES, axis=0).T  # [metrics, quantiles]
    else:
        per_key = np.array([np.quantile(np.array([m[k] for m in per_ue if k in m], dtype=np.float64), QUANTILES)
                            for k in keys]).reshape(-1, len(QUANTILES))
    out: dict[str, float] = {}
    for key, (lo, p10, med, p90, hi) in zip(keys, per_key.tolist(), strict=True):
        out[key] = med
        out.update({f"ue_{key}_min": lo, f"ue_{key}_p10": p10, f"ue_{key}_p90": p90, f"ue_{key}_max": hi})
    return out
