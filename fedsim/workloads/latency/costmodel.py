"""An analytic per-op latency model fitted to the measured table, for architectures of *any* space.

A forward pass is a sequence of aten ops (views excluded). Op j has a kind (the kernel size
``k`` of a convolution, ``0`` for every other op), FLOPs ``f_j`` (torch's counter, 2·MACs) and an
output of ``a_j`` elements, both per example. On device profile p with batch B, an op of kind k
runs ``r_p(k)`` times (the profile's slow-down factor, 1 by default) and costs

    t_p(j) = r_p(k_j) · (o_p + b_p · B · f_j + c_p · B · a_j)        [ms]

(dispatch overhead, compute, memory traffic); a network's latency is the sum over its ops. The
three non-negative coefficients per profile are fitted by non-negative least squares to the table
(:func:`fit_cost_model`). Op summaries come from a real forward pass (:func:`op_summary`), or in
closed form for the table's CNNs (:func:`cnn3_summary_features`) and for MLPs (:func:`mlp_features`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from fedsim.workloads.latency.space import INPUT_HW, KERNELS, NUM_ARCHS, NUM_CLASSES, DeviceProfile, decode
from fedsim.workloads.latency.table import LatencyTable, shipped_table

#: ``((kind, count, flops, activations), ...)`` per example, kind 0 = not a convolution.
OpSummary = tuple[tuple[int, int, float, float], ...]


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, list[float]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        outs = out if isinstance(out, tuple | list) else (out,)
        act = float(sum(t.numel() for t in outs if isinstance(t, torch.Tensor)))
        kind, flops = 0, 0.0
        if func is torch.ops.aten.convolution.default:
            w = args[1]
            kind = int(w.shape[-1])
            flops = 2.0 * outs[0].numel() * int(np.prod(w.shape[1:]))
        row = self.rows.setdefault(kind, [0, 0.0, 0.0])
        row[0] += 1
        row[1] += flops
        row[2] += act
        return out


def op_summary(module: nn.Module, example: torch.Tensor) -> OpSummary:
    """The op summary of ``module(example)`` for a batch-of-one ``example`` (per example)."""
    rec, flop_counter = _OpRecorder(), FlopCounterMode(display=False)
    with torch.no_grad(), flop_counter, rec:
        module(example)
    conv_flops = sum(r[1] for k, r in rec.rows.items() if k)
    rec.rows.setdefault(0, [0, 0.0, 0.0])[1] = max(0.0, float(flop_counter.get_total_flops()) - conv_flops)
    return tuple((int(k), int(r[0]), float(r[1]), float(r[2])) for k, r in sorted(rec.rows.items()))


def features(summary: OpSummary, profile: DeviceProfile) -> np.ndarray:
    """``[3]``: (op count, FLOPs, activations) of one forward on ``profile`` (batch and repeats applied)."""
    rows = np.array([[profile.repeats(k) if k else 1, n, f, a] for k, n, f, a in summary], dtype=np.float64)
    rep = rows[:, 0]
    return np.array([rep @ rows[:, 1], profile.batch * rep @ rows[:, 2], profile.batch * rep @ rows[:, 3]])


def cnn3_features(profile: DeviceProfile, index: np.ndarray | None = None) -> np.ndarray:
    """``[A, 3]`` features of the table's CNNs in closed form (conv, ReLU per layer; mean, linear head)."""
    arch = decode(np.arange(NUM_ARCHS) if index is None else index)
    c_out, k = arch[..., 0].astype(np.float64), arch[..., 1]
    c_in = np.concatenate([np.ones_like(c_out[:, :1]), c_out[:, :-1]], axis=1)
    rep = np.vectorize(profile.repeats)(k).astype(np.float64)
    hw = float(INPUT_HW**2)
    ops = rep.sum(1) + 3 + 2  # convs (repeated), 3 ReLUs, mean, addmm
    flops = (rep * 2 * hw * c_in * c_out * k**2).sum(1) + 2 * c_out[:, -1] * NUM_CLASSES
    act = ((rep + 1) * hw * c_out).sum(1) + c_out[:, -1] + NUM_CLASSES
    return np.stack([ops, profile.batch * flops, profile.batch * act], axis=1)


def cnn3_summary_features(profile: DeviceProfile, index: int) -> OpSummary:
    """The op summary of one table CNN in closed form (for tests against :func:`op_summary`)."""
    (c1, k1), (c2, k2), (c3, k3) = decode(index)[0]
    hw, rows = float(INPUT_HW**2), {}
    for cin, c, k in ((1, c1, k1), (c1, c2, k2), (c2, c3, k3)):
        r = rows.setdefault(int(k), [0, 0.0, 0.0])
        r[0], r[1], r[2] = r[0] + 1, r[1] + 2 * hw * cin * c * k * k, r[2] + hw * c
    r0 = rows.setdefault(0, [0, 0.0, 0.0])
    r0[0] += 5
    r0[1] += 2.0 * c3 * NUM_CLASSES
    r0[2] += hw * (c1 + c2 + c3) + c3 + NUM_CLASSES
    return tuple((int(k), int(r[0]), float(r[1]), float(r[2])) for k, r in sorted(rows.items()))


def mlp_features(widths: torch.Tensor, d_in: int, classes: int, profile: DeviceProfile) -> torch.Tensor:
    """``[M, 3]`` features of MLPs with hidden ``widths [M, L]`` (linear + ReLU per layer, linear head)."""
    w = widths.to(torch.float64)
    dims = torch.cat([torch.full_like(w[:, :1], float(d_in)), w, torch.full_like(w[:, :1], float(classes))], 1)
    flops = 2 * (dims[:, :-1] * dims[:, 1:]).sum(1)
    act = 2 * w.sum(1) + classes
    ops = torch.full_like(flops, 2.0 * w.shape[1] + 1)
    return torch.stack([ops, profile.batch * flops, profile.batch * act], 1)


@dataclass(frozen=True)
class CostModel:
    """Per-profile coefficients ``coef [P, 3]`` (ms per op, per FLOP, per output element) and the
    fit's Spearman ρ / median |relative error| on the table."""

    profiles: tuple[DeviceProfile, ...]
    coef: np.ndarray
    fit_spearman: tuple[float, ...]
    fit_median_ape: tuple[float, ...]

    def profile(self, name: str) -> tuple[DeviceProfile, np.ndarray]:
        for p, c in zip(self.profiles, self.coef, strict=True):
            if p.name == name:
                return p, c
        raise ValueError(f"unknown device profile {name!r}; known: {', '.join(p.name for p in self.profiles)}")

    def predict_ms(self, summary: OpSummary, profile: str) -> float:
        p, c = self.profile(profile)
        return float(features(summary, p) @ c)


def fit_cost_model(table: LatencyTable) -> CostModel:
    """NNLS fit of ``t = o·ops + b·FLOPs + c·activations`` per profile on every table architecture
    (features scaled to unit mean for conditioning, weighted by 1/t so errors are relative)."""
    from scipy import stats

    coefs, rhos, apes = [], [], []
    for p, y in zip(table.profiles, table.latency_ms, strict=True):
        x = cnn3_features(p)
        scale = x.mean(0)
        sol, _ = nnls(x / scale / y[:, None], np.ones_like(y))
        coef = sol / scale
        pred = x @ coef
        coefs.append(coef)
        rhos.append(round(float(stats.spearmanr(pred, y).statistic), 4))
        apes.append(round(float(np.median(np.abs(pred / y - 1))), 4))
    return CostModel(table.profiles, np.array(coefs), tuple(rhos), tuple(apes))


@functools.cache
def cost_model() -> CostModel:
    """The cost model of the shipped table (fitted once per process, deterministic)."""
    return fit_cost_model(shipped_table())


def predict_ms(summary: OpSummary, profile: str | DeviceProfile) -> float:
    """Latency in ms of a network with op ``summary`` (:func:`op_summary`) on ``profile``."""
    return cost_model().predict_ms(summary, profile if isinstance(profile, str) else profile.name)


def profile_names() -> Sequence[str]:
    return [p.name for p in cost_model().profiles]


__all__ = ["KERNELS", "CostModel", "OpSummary", "cost_model", "features", "fit_cost_model", "mlp_features",
           "op_summary", "predict_ms", "profile_names"]
