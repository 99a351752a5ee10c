"""``latency-predictor``: a HELP-style latency predictor trained federatedly, one UE per device profile.

UE n is device profile ``train_profiles[n % len(train_profiles)]`` and holds ``measurements``
architectures of the 3-layer CNN space (:mod:`~fedsim.workloads.latency.space`, drawn without
replacement from stream ``"data"`` keyed by the UE) with their latency on its device: from the shipped
table (``source = "table"``) or measured now on this machine (``source = "live"``).

Model (additive over layers, because a forward pass is a sequence of layers): layer l of an
architecture has features φ_l (log2 c_in, log2 c_out, one-hot kernel, one-hot position,
log10 FLOPs); with the device embedding e ∈ R^E

    log t_l = MLP([φ_l, e]),   log t_0 = u·e + b_0,   T = t_0 + Σ_l t_l   (ms per forward)

with a 2-hidden-layer MLP (``activation``: ReLU by default; tanh, the first version, saturates and
could not reach the slowest held-out device's range). The loss is the mean squared error of log T
against the log of the measured latency (so relative errors count). The flat vector ``w`` holds the shared weights only
(MLP, u, b_0: layout in :meth:`LatencyPredictor.views`), so every strategy and channel applies.
The device embedding never leaves the UE: it lives in the UE's ``state`` (key ``latency.embed``,
``[E]``), initialised N(0, 0.1²) from stream ``"init"`` keyed by the UE, and is trained with the shared
weights in :meth:`~LatencyPredictor.local_train` (plain SGD, its step ``embed_lr_scale`` × lr).

Evaluation (what a new device would do): the ``holdout_profile`` (never a training UE) measures
``adapt_shots`` architectures (``adapt_choice``: by default one from each of ``adapt_shots``
equal-count FLOPs strata, FLOPs being known without measuring, so the shots span the space; or
uniformly at random; the draw is stream ``"adapt"``); only its embedding and one log-scale offset are
fitted to them (zeros start, ``adapt_steps`` Adam steps, lr 0.05, shared weights frozen, mean squared
log error). With ``adapt_scale = "mape"`` the offset is then replaced by the MAPE-optimal one on the
shots (:func:`~fedsim.workloads.latency.metrics.mape_optimal_scale`, a weighted median of the
measured/predicted ratios; a log-space fit is biased for MAPE). Then every other architecture of the
space is predicted: ``kendall``, ``spearman`` (``scipy.stats``) and ``mape`` against the table,
``loss`` = the mean squared log error.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from channels.rng import torch_generator
from fedsim.workloads.base import LrFn, Workload, WorkloadConfig
from fedsim.workloads.latency.live import measure_archs
from fedsim.workloads.latency.metrics import mape_optimal_scale, ranking_metrics
from fedsim.workloads.latency.space import KERNELS, LAYERS, NUM_ARCHS, PROFILES, layer_features
from fedsim.workloads.latency.table import shipped_table

_DT = torch.float32
_NAMES = [p.name for p in PROFILES]
_EMBED_KEY = "latency.embed"
_FLOPS_ORDER = np.argsort(layer_features(np.arange(NUM_ARCHS))["flops"], kind="stable")  # [A]


class LatencyPredictorConfig(WorkloadConfig):
    """Federated latency predictor: one UE per device profile (module docstring)."""

    name: Literal["latency-predictor"] = "latency-predictor"
    num_ues: int = Field(7, ge=1, description="N; UE n is device profile train_profiles[n % len(train_profiles)]")
    train_profiles: list[str] | None = Field(
        None, description="profiles of the UEs (None: every shipped profile except holdout_profile)")
    holdout_profile: str = Field("f64-b2", description="the new device the predictor is evaluated on")
    measurements: int = Field(40, ge=2, le=NUM_ARCHS, description="architectures measured by each UE")
    source: Literal["table", "live"] = Field(
        "table", description="table: latencies from the shipped table; live: measure them now (slow)")
    hidden: int = Field(32, ge=1, description="width of the MLP's two hidden layers")
    activation: Literal["relu", "tanh"] = Field(
        "relu", description="the MLP's hidden activation (tanh saturates: slow devices are out of its reach)")
    embed_dim: int = Field(6, ge=1, description="E, size of the device embedding (UE-local)")
    embed_lr_scale: float = Field(5.0, gt=0, description="the embedding's SGD step is this times lr")
    batch_size: int = Field(0, ge=0, description="measurements per local step (0 = all)")
    adapt_shots: int = Field(10, ge=1, le=NUM_ARCHS - 2, description="measurements the held-out device adapts on")
    adapt_steps: int = Field(200, ge=0, description="Adam steps fitting the held-out device's embedding")
    adapt_choice: Literal["flops-strata", "random"] = Field(
        "flops-strata", description="which architectures the held-out device measures: one per equal-count "
                                    "FLOPs stratum, or uniformly at random")
    adapt_scale: Literal["mape", "log"] = Field(
        "mape", description="held-out device's final scale: mape = the MAPE-optimal one on its shots "
                            "(a weighted median); log = the offset of the log-error fit")

    @model_validator(mode="after")
    def _check(self) -> LatencyPredictorConfig:
        for p in [*(self.train_profiles or []), self.holdout_profile]:
            if p not in _NAMES:
                raise ValueError(f"unknown device profile {p!r}; known: {', '.join(_NAMES)}")
        if self.holdout_profile in (self.train_profiles or []):
            raise ValueError(f"holdout_profile {self.holdout_profile!r} is also a training profile")
        if self.train_profiles == []:
            raise ValueError("train_profiles must name at least one profile")
        return self

    def build(self, seed: int) -> LatencyPredictor:
        return LatencyPredictor(self, seed)


def arch_features(index: np.ndarray) -> torch.Tensor:
    """``[A, LAYERS, F]`` per-layer features φ_l of architecture indices ``[A]`` (F = 2 + |K| + L + 1)."""
    f = layer_features(index)
    kern = (f["kernel"][..., None] == np.asarray(KERNELS)).astype(np.float64)
    pos = np.broadcast_to(np.eye(LAYERS), (*f["kernel"].shape, LAYERS))
    scalars = np.stack([np.log2(f["c_in"]) / 5, np.log2(f["c_out"]) / 5, (np.log10(f["layer_flops"]) - 6) / 2], -1)
    return torch.as_tensor(np.concatenate([scalars, kern, pos], -1), dtype=_DT)


def adapt_split(seed: int, shots: int, choice: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out device's ``shots`` adaptation architectures and the rest (its test set), from a
    permutation of stream ``"adapt"``: its first ``shots`` (``random``), or, in each of ``shots``
    equal-count strata of the architectures sorted by FLOPs, the one that comes first in it
    (``flops-strata``)."""
    perm = torch.randperm(NUM_ARCHS, generator=torch_generator(seed, "adapt"))
    if choice == "random":
        return perm[:shots], perm[shots:]
    position = torch.empty(NUM_ARCHS, dtype=torch.long)
    position[perm] = torch.arange(NUM_ARCHS)
    adapt = torch.stack([torch.as_tensor(s)[position[s].argmin()] for s in np.array_split(_FLOPS_ORDER, shots)])
    return adapt, perm[~torch.isin(perm, adapt)]


class LatencyPredictor(Workload):
    """See the module docstring."""

    dtype = _DT
    custom_local_train = True  # the UE-local embedding trains beside w

    def __init__(self, cfg: LatencyPredictorConfig, seed: int) -> None:
        self.cfg, self.seed, self.name, self.num_ues = cfg, seed, cfg.name, cfg.num_ues
        self.train_profiles = cfg.train_profiles or [n for n in _NAMES if n != cfg.holdout_profile]
        self.ue_profile = [self.train_profiles[n % len(self.train_profiles)] for n in range(cfg.num_ues)]
        self.features = arch_features(np.arange(NUM_ARCHS))  # [A, L, F]
        f, h, e = self.features.shape[-1], cfg.hidden, cfg.embed_dim
        self.shapes = {"w1": (h, f + e), "b1": (h,), "w2": (h, h), "b2": (h,), "w3": (1, h), "b3": (1,),
                       "u": (e,), "b0": (1,)}
        self.sizes = [math.prod(s) for s in self.shapes.values()]
        self.dim = sum(self.sizes)
        self.ue_archs = [torch.randperm(NUM_ARCHS, generator=torch_generator(seed, "data", 0, n))[: cfg.measurements]
                         for n in range(cfg.num_ues)]
        self.ue_ms = [self._latency(p, a) for p, a in zip(self.ue_profile, self.ue_archs, strict=True)]
        self.adapt_archs, self.test_archs = adapt_split(seed, cfg.adapt_shots, cfg.adapt_choice)
        self.holdout_ms = torch.as_tensor(shipped_table().row(cfg.holdout_profile), dtype=_DT)
        if cfg.source == "live":
            self.holdout_ms = self.holdout_ms.clone()
            self.holdout_ms[self.adapt_archs] = self._latency(cfg.holdout_profile, self.adapt_archs)

    def _latency(self, profile: str, archs: torch.Tensor) -> torch.Tensor:
        if self.cfg.source == "live":
            return torch.as_tensor(measure_archs(archs.numpy(), PROFILES[_NAMES.index(profile)]), dtype=_DT)
        return torch.as_tensor(shipped_table().row(profile)[archs.numpy()], dtype=_DT)

    # -- model -------------------------------------------------------------------------------
    def views(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named views of the shared weights in ``w [d]`` (order: w1, b1, w2, b2, w3, b3, u, b0)."""
        return {k: c.view(s) for (k, s), c in zip(self.shapes.items(), w.split(self.sizes), strict=True)}

    def predict_log_ms(self, w: torch.Tensor, embed: torch.Tensor, archs: torch.Tensor) -> torch.Tensor:
        """log T for architecture indices ``archs [A]`` on a device with embedding ``embed [E]``."""
        v = self.views(w)
        phi = self.features[archs]  # [A, L, F]
        x = torch.cat([phi, embed.expand(*phi.shape[:2], -1)], -1)
        act = torch.relu if self.cfg.activation == "relu" else torch.tanh
        h = act(act(x @ v["w1"].T + v["b1"]) @ v["w2"].T + v["b2"])
        log_layers = (h @ v["w3"].T + v["b3"]).squeeze(-1)  # [A, L]
        log_t0 = (embed @ v["u"] + v["b0"]).expand(len(archs), 1)
        return torch.logsumexp(torch.cat([log_t0, log_layers], 1), dim=1)

    def init_params(self) -> torch.Tensor:
        """U(±1/sqrt(fan_in)) weights (stream ``"init"``); b3 = log 0.3, b0 = log 0.1 (about 1 ms in all)."""
        g = torch_generator(self.seed, "init")
        fans = {"w1": self.shapes["w1"][1], "b1": self.shapes["w1"][1], "w2": self.cfg.hidden,
                "b2": self.cfg.hidden, "w3": self.cfg.hidden, "u": self.cfg.embed_dim}
        parts = []
        for k, n in zip(self.shapes, self.sizes, strict=True):
            if k in fans:
                parts.append((2 * torch.rand(n, generator=g, dtype=_DT) - 1) / math.sqrt(fans[k]))
            else:
                parts.append(torch.full((n,), math.log(0.3 if k == "b3" else 0.1), dtype=_DT))
        return torch.cat(parts)

    def initial_embedding(self, ue: int) -> torch.Tensor:
        return 0.1 * torch.randn(self.cfg.embed_dim, generator=torch_generator(self.seed, "init", 0, ue), dtype=_DT)

    def num_examples(self, ue: int) -> int:
        return self.cfg.measurements

    def _batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        archs, ms, bs = self.ue_archs[ue], self.ue_ms[ue], self.cfg.batch_size
        if bs == 0 or bs >= len(archs):
            return archs, ms
        rows = torch.randperm(len(archs), generator=torch_generator(self.seed, "minibatch", step, ue))[:bs]
        return archs[rows], ms[rows]

    def _grads(self, w: torch.Tensor, embed: torch.Tensor, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        archs, ms = self._batch(ue, step)
        w, embed = w.detach().requires_grad_(True), embed.detach().requires_grad_(True)
        loss = (self.predict_log_ms(w, embed, archs) - ms.log()).pow(2).mean()
        gw, ge = torch.autograd.grad(loss, (w, embed))
        return gw, ge

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        """Gradient of UE ``ue``'s loss in the shared weights at its *initial* embedding (the trained
        embedding lives in the UE's state, which only ``local_train`` sees)."""
        return self._grads(w.to(_DT), self.initial_embedding(ue), ue, step)[0]

    def local_train(self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn,
                    state: dict[str, torch.Tensor]) -> torch.Tensor:
        """K SGD steps on the shared weights and, locally, on the UE's embedding ``state["latency.embed"]``."""
        w = w.detach().to(_DT).clone()
        embed = state[_EMBED_KEY].to(_DT).clone() if _EMBED_KEY in state else self.initial_embedding(ue)
        for s in range(first_step, first_step + steps):
            gw, ge = self._grads(w, embed, ue, s)
            w.sub_(gw, alpha=lr(s))
            embed.sub_(ge, alpha=lr(s) * self.cfg.embed_lr_scale)
        state[_EMBED_KEY] = embed
        return w

    # -- evaluation --------------------------------------------------------------------------
    def adapt_embedding(self, w: torch.Tensor, archs: torch.Tensor, ms: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The embedding of a new device and a log-scale offset c (prediction × e^c), fitted to its
        measurements ``ms`` of ``archs`` with the shared weights frozen; with ``adapt_scale = "mape"``
        c is then moved to the MAPE-optimal scale on those measurements."""
        w = w.detach().to(_DT)
        embed = torch.zeros(self.cfg.embed_dim + 1, dtype=_DT, requires_grad=True)
        opt = torch.optim.Adam([embed], lr=0.05)
        for _ in range(self.cfg.adapt_steps):
            opt.zero_grad()
            (self.predict_log_ms(w, embed[:-1], archs) + embed[-1] - ms.log()).pow(2).mean().backward()
            opt.step()
        embed, offset = embed.detach()[:-1], float(embed.detach()[-1])
        if self.cfg.adapt_scale == "mape":
            with torch.no_grad():
                pred = (self.predict_log_ms(w, embed, archs) + offset).exp()
            if bool(torch.isfinite(pred).all() & (pred > 0).all()):  # else evaluate shows the overflow (MAPE inf)
                offset += math.log(mape_optimal_scale(pred.double().numpy(), ms.double().numpy()))
        return embed, offset

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """Held-out device: ``loss`` (mean squared log error), ``kendall``, ``spearman``, ``mape``
        over every architecture it did not adapt on."""
        w = w.detach().to(_DT).cpu()
        if not bool(torch.isfinite(w).all()):
            return {"loss": float("inf"), "kendall": float("nan"), "spearman": float("nan"), "mape": float("nan")}
        embed, offset = self.adapt_embedding(w, self.adapt_archs, self.holdout_ms[self.adapt_archs])
        with torch.no_grad():
            log_pred = self.predict_log_ms(w, embed, self.test_archs) + offset
        true = self.holdout_ms[self.test_archs]
        out = {"loss": float((log_pred - true.log()).pow(2).mean())}
        out.update(ranking_metrics(log_pred.exp().numpy(), true.numpy()))
        return out
