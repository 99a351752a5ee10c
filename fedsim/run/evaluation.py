"""Metrics of the models someone holds at the end of a round: the global model of a server-based
strategy, or the models the UEs keep (server-free, overlap)."""

from __future__ import annotations

from typing import Any

import torch

from channels.rng import torch_generator
from fedsim.workloads import Workload
from strategies import HeldModels


def evaluate_held(workload: Workload, held: HeldModels, *, sample: int, seed: int, round: int) -> dict[str, Any]:
    """The metrics row entries for ``held``: the global model's metrics, or for UE-held models those
    of :func:`evaluate_population`."""
    if held.holders is None:
        return dict(workload.evaluate(held.models[0]))
    return evaluate_population(workload, held.as_dict(), workload.ue_weights(), sample=sample, seed=seed,
                               round=round)


def evaluate_population(workload: Workload, models: dict[int, torch.Tensor], weights: torch.Tensor,
                        *, sample: int = 0, seed: int = 0, round: int = 0) -> dict[str, Any]:
    """Metrics of the virtual average w_bar = sum q_m w_m / sum q_m (the headline numbers), the
    consensus distance mean ||w_m - w_bar|| (both over every UE), and the spread of the UE models'
    own metrics, over at most ``sample`` UEs drawn from stream "evaluation" (0 = all): evaluating
    every model of 1000 UEs each round would cost more than the training."""
    ues = sorted(models)
    W = torch.stack([models[u] for u in ues]).to(workload.device)
    q = weights[ues].to(torch.float64)
    w_bar = (q / q.sum()).to(W.device, W.dtype) @ W
    row = dict(workload.evaluate(w_bar))
    row["consensus"] = float(torch.linalg.vector_norm(W - w_bar, dim=1).mean())
    if 0 < sample < len(ues):
        pick = torch.randperm(len(ues), generator=torch_generator(seed, "evaluation", round))[:sample]
        W = W[pick.sort().values]
        row["ue_metrics_sample"] = sample
    per_ue = workload.evaluate_many(W)
    for key in ("loss", "accuracy", "gap", "routing_disagreement"):
        vals = torch.tensor([m[key] for m in per_ue if key in m], dtype=torch.float64)
        if vals.numel():
            row[f"ue_{key}_mean"] = float(vals.mean())
            row[f"ue_{key}_min"] = float(vals.min())
            row[f"ue_{key}_max"] = float(vals.max())
    row["reported_ues"] = len(ues)
    return row
