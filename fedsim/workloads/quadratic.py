"""Heterogeneous quadratics with every theory constant known exactly.

UE n holds ``f_n(w) = 1/2 (w - b_n)^T A_n (w - b_n)`` with ``A_n = diag(a_n)``, eigenvalues in
``[mu, L]``, and the global objective is ``f = sum_n q_n f_n`` with uniform ``q_n = 1/N``.
Hence ``w* = (sum q_n a_n)^-1 ⊙ sum q_n a_n ⊙ b_n`` (elementwise), ``f_n* = 0`` and
``Gamma = f* - sum q_n f_n* = f*``. Stochastic gradients add ``N(0, grad_noise^2 I)`` noise,
so ``sigma^2 = dim * grad_noise^2`` exactly. Everything is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator

from channels.rng import torch_generator
from fedsim.workloads.base import TheoryConstants, Workload, WorkloadConfig

_DT = torch.float64


class QuadraticConfig(WorkloadConfig):
    """Heterogeneous diagonal quadratics (no data, no accuracy; ``batch_size`` does not apply:
    gradient noise is set by ``grad_noise``)."""

    name: Literal["quadratic"] = "quadratic"

    def build(self, seed: int) -> Quadratic:
        return Quadratic(self, seed)
    num_ues: int = Field(20, ge=1, description="N, number of UEs")
    dim: int = Field(10, ge=1, description="d, parameter dimension")
    mu: float = Field(1.0, gt=0, description="smallest Hessian eigenvalue")
    L: float = Field(10.0, gt=0, description="largest Hessian eigenvalue (>= mu)")
    hessian: Literal["common", "heterogeneous"] = Field(
        "common",
        description="common: one A, eigenvalues evenly spaced in [mu, L]; heterogeneous: "
        "each UE's eigenvalues ~ U[mu, L] i.i.d.",
    )
    heterogeneity: float = Field(1.0, ge=0, description="std of b_n around the common b")
    grad_noise: float = Field(0.0, ge=0, description="std of additive gradient noise per coord")
    init_dist: float = Field(1.0, ge=0, description="||w0 - w*||")

    @model_validator(mode="after")
    def _mu_below_l(self) -> QuadraticConfig:
        if self.L < self.mu:
            raise ValueError(f"L={self.L} must be >= mu={self.mu}")
        return self


class Quadratic(Workload):
    """See the module docstring. ``num_examples`` is 1 for every UE (uniform weights)."""

    name = "quadratic"
    dtype = _DT
    shareable = True

    def __init__(self, cfg: QuadraticConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.num_ues = cfg.num_ues
        self.dim = cfg.dim
        n, d = cfg.num_ues, cfg.dim
        g = torch_generator(seed, "data")
        if cfg.hessian == "common":
            a = torch.linspace(cfg.mu, cfg.L, d, dtype=_DT).expand(n, d).clone()
        else:
            a = cfg.mu + (cfg.L - cfg.mu) * torch.rand(n, d, generator=g, dtype=_DT)
        center = torch.randn(d, generator=g, dtype=_DT)
        #: ``[N, d]`` diagonals of A_n and ``[N, d]`` minimisers b_n.
        self.a = a
        self.b = center + cfg.heterogeneity * torch.randn(n, d, generator=g, dtype=_DT)
        self.q = torch.full((n,), 1.0 / n, dtype=_DT)
        a_bar = self.q @ self.a
        self.w_star = (self.q @ (self.a * self.b)) / a_bar
        self.f_star = float(self.objective(self.w_star))
        self._mu_f = float(a_bar.min())

    def num_examples(self, ue: int) -> int:
        return 1

    def init_params(self) -> torch.Tensor:
        """``w* + init_dist * u`` with u uniform on the unit sphere, from stream ``"init"``."""
        u = torch.randn(self.dim, generator=torch_generator(self.seed, "init"), dtype=_DT).to(self.device)
        return self.w_star + self.cfg.init_dist * u / u.norm()

    def _noise(self, ue: int, step: int) -> torch.Tensor | float:
        if self.cfg.grad_noise == 0:
            return 0.0
        g = torch_generator(self.seed, "minibatch", step, ue)
        return self.cfg.grad_noise * torch.randn(self.dim, generator=g, dtype=_DT).to(self.device)

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        """``A_n (w - b_n) + noise``; noise from ``torch_generator(seed, "minibatch", step, ue)``."""
        return self.a[ue] * (w.to(_DT) - self.b[ue]) + self._noise(ue, step)

    batched_grad = True

    def stochastic_grad_many(self, ws: torch.Tensor, ues: Sequence[int], step: int) -> torch.Tensor:
        idx = torch.as_tensor([int(n) for n in ues], dtype=torch.long)
        if ws.shape[0] != len(idx):
            raise ValueError(f"ws has {ws.shape[0]} rows but {len(idx)} UEs were given")
        g = self.a[idx] * (ws.to(_DT) - self.b[idx])
        if self.cfg.grad_noise > 0:
            g = g + torch.stack([self._noise(int(n), step) for n in idx])
        return g

    def local_objective(self, w: torch.Tensor, ue: int) -> float:
        """f_n(w)."""
        r = w.to(_DT) - self.b[ue]
        return float(0.5 * (self.a[ue] * r * r).sum())

    def objective(self, w: torch.Tensor) -> float:
        """f(w) = sum_n q_n f_n(w)."""
        r = w.to(_DT) - self.b  # [N, d]
        return float(0.5 * self.q @ (self.a * r * r).sum(1))

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        return self.evaluate_many(w.unsqueeze(0))[0]

    def evaluate_many(self, ws: torch.Tensor) -> list[dict[str, float]]:
        """``loss`` = ``train_loss`` = f(w) (there is no test set), ``gap``, ``dist``."""
        ws = ws.to(_DT)
        # f is quadratic with Hessian Abar, so f(w) - f* = 1/2 (w-w*)^T Abar (w-w*) exactly;
        # this form is vectorised over M and keeps precision near w*.
        diff = ws - self.w_star
        gap = 0.5 * (diff * diff) @ (self.q @ self.a)
        dist = diff.norm(dim=1)
        return [
            {
                "loss": self.f_star + float(gap[m]),
                "train_loss": self.f_star + float(gap[m]),
                "gap": float(gap[m]),
                "dist": float(dist[m]),
            }
            for m in range(ws.shape[0])
        ]

    def theory_constants(self) -> TheoryConstants:
        return TheoryConstants(
            L=float(self.a.max()),
            mu=self._mu_f,
            f_star=self.f_star,
            w_star=self.w_star.clone(),
            sigma2=self.dim * self.cfg.grad_noise**2,
            G2=None,
            heterogeneity=self.f_star,
            sources={
                "L": "exact: max eigenvalue over all A_n",
                "mu": "exact: min eigenvalue of sum_n q_n A_n",
                "f_star": "exact: f(w*)",
                "w_star": "exact: (sum q_n A_n)^-1 sum q_n A_n b_n",
                "sigma2": "exact: dim * grad_noise^2",
                "G2": "unbounded for a quadratic on R^d",
                "heterogeneity": "exact: f* - sum q_n f_n* with f_n* = 0",
            },
        )
