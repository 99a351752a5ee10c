"""The search space and data of ``nas-tabnas``: one-hidden-layer-width choice per layer of an MLP on
tabular data (synthetic, breast cancer, wine), with exact parameter and FLOP counts per
architecture. ``cfg`` below is a ``TabNasConfig``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from channels.rng import torch_generator
from fedsim.workloads.nas.resources import Resources, measure
from fedsim.workloads.nas.taxonomy import Architecture, Decision, SearchSpace
from fedsim.workloads.partition import holdout_split, partition_indices, validation_split
from fedsim.workloads.synthetic import generate_synthetic

_DT = torch.float32


def arch_widths(arch: dict[str, Any], hidden_layers: int, widths: tuple[int, ...]) -> tuple[int, ...]:
    """The hidden widths of ``arch`` ({"layer0": w0, ...}); ValueError naming the bad key otherwise."""
    names = [f"layer{i}" for i in range(hidden_layers)]
    for key in arch:
        if key not in names:
            raise ValueError(f"arch: unknown decision {key!r}; the decisions are {names}")
    out = []
    for key in names:
        if key not in arch:
            raise ValueError(f"arch: missing decision {key!r}; the decisions are {names}")
        label = arch[key]
        if isinstance(label, bool) or label not in widths:
            raise ValueError(f"arch: {key} = {label!r} is not an allowed width; choose one of {list(widths)}")
        out.append(int(label))
    return tuple(out)


class TabularSpace(SearchSpace):
    """MLP widths per hidden layer under a parameter (and FLOP) budget; vectorised over index batches."""

    def __init__(self, d_in: int, num_classes: int, cfg: Any) -> None:
        self.d_in, self.num_classes = d_in, num_classes
        self.num_layers, self.widths = cfg.hidden_layers, tuple(int(v) for v in cfg.widths)
        self.max_params, self.max_flops = cfg.max_params, cfg.max_flops
        self.decisions = tuple(Decision(f"layer{i}", self.widths) for i in range(self.num_layers))
        self._width_of = torch.tensor(self.widths)

    def _fan(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._width_of[idx]  # [n, L]
        ins = torch.cat([torch.full_like(h[:, :1], self.d_in), h[:, :-1]], dim=1)
        return ins, h

    def params_idx(self, idx: torch.Tensor) -> torch.Tensor:
        """Parameters (weights + biases) of the children ``idx [n, L]`` -> ``[n]``."""
        ins, h = self._fan(idx)
        return ((ins + 1) * h).sum(1) + (h[:, -1] + 1) * self.num_classes

    def flops_idx(self, idx: torch.Tensor) -> torch.Tensor:
        """FLOPs per example as torch's counter reports them (2 · MACs of the matmuls) -> ``[n]``."""
        ins, h = self._fan(idx)
        return 2 * ((ins * h).sum(1) + h[:, -1] * self.num_classes)

    def feasible_idx(self, idx: torch.Tensor) -> torch.Tensor:
        """T(y) ≤ T0 for ``idx [n, L]`` -> bool ``[n]``."""
        ok = self.params_idx(idx) <= self.max_params
        if self.max_flops is not None:
            ok &= self.flops_idx(idx) <= self.max_flops
        return ok

    def feasible(self, arch: Architecture) -> bool:
        return bool(self.feasible_idx(torch.tensor([self.indices(arch)]))[0])

    def child(self, arch: Architecture) -> nn.Module:
        """The discrete MLP; weights U(±1/sqrt(fan_in)) from a fixed explicit generator."""
        hidden = [int(arch[d.name]) for d in self.decisions]
        dims = [self.d_in, *hidden, self.num_classes]
        layers: list[nn.Module] = []
        g = torch_generator(0, "child")
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            lin = nn.Linear(a, b, device="meta").to_empty(device="cpu")
            with torch.no_grad():
                for p in lin.parameters():
                    p.copy_((2 * torch.rand(p.shape, generator=g) - 1) / math.sqrt(a))
            layers += [lin, nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, self.d_in)

    def resources(self, arch: Architecture, *, latency: bool = True) -> Resources:
        return measure(self.child(arch), self.example_input(), latency=latency)  # child() uses no global RNG


@dataclass
class TabularData:
    train: list[tuple[torch.Tensor, torch.Tensor]]  # per UE (x [n, d_in], y [n])
    val: list[tuple[torch.Tensor, torch.Tensor]]
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def load_tabular(cfg: Any, seed: int) -> TabularData:
    """Per-UE train/validation splits and the global test set (see the module docstring)."""
    parts, tests = [], []
    if cfg.dataset == "synthetic":
        raw = generate_synthetic(cfg.num_ues, cfg.alpha, cfg.beta, False, cfg.max_samples_per_ue, seed)
        for k, (x, y) in enumerate(raw):
            n_pool = len(y) - min(max(1, round(cfg.test_fraction * len(y))), len(y) - 1)
            tr, va = validation_split(np.arange(n_pool), cfg.val_fraction, seed, k)
            parts.append((x[tr], y[tr], x[va], y[va]))
            tests.append((x[n_pool:], y[n_pool:]))
        num_classes = 10
    else:
        from sklearn.datasets import load_breast_cancer, load_wine

        x, y = (load_breast_cancer if cfg.dataset == "breast_cancer" else load_wine)(return_X_y=True)
        pool, test = holdout_split(len(y), cfg.test_fraction, seed)
        ue_pos = partition_indices(y[pool], cfg.num_ues, cfg.partition, seed, dirichlet_alpha=cfg.dirichlet_alpha,
                                   min_partition_size=cfg.min_partition_size)
        for k, p in enumerate(ue_pos):
            tr, va = validation_split(p, cfg.val_fraction, seed, k)
            parts.append((x[pool[tr]], y[pool[tr]], x[pool[va]], y[pool[va]]))
        tests.append((x[test], y[test]))
        num_classes = int(y.max()) + 1
    pool_x = np.vstack([a for p in parts for a in (p[0], p[2])])
    mean, std = pool_x.mean(0), np.maximum(pool_x.std(0), 1e-8)

    def t(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy((x - mean) / std).to(_DT), torch.from_numpy(np.asarray(y, dtype=np.int64))

    x_test, y_test = t(np.vstack([a for a, _ in tests]), np.concatenate([b for _, b in tests]))
    return TabularData([t(p[0], p[1]) for p in parts], [t(p[2], p[3]) for p in parts], x_test, y_test, num_classes)
