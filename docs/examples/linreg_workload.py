"""A new workload in one file: federated ridge regression with every theory constant exact.

UE n holds X_n ~ N(0, I) rows and y_n = X_n (w_true + δ_n) + noise, with its own offset δ_n (the
heterogeneity). f_n(w) = ‖X_n w − y_n‖²/(2 m_n) + (l2/2)‖w‖², f = Σ q_n f_n with q_n ∝ m_n, so
f is quadratic with Hessian H = Σ q_n X_nᵀX_n/m_n + l2·I and w* = H⁻¹ Σ q_n X_nᵀ y_n/m_n.
"""

from __future__ import annotations

import torch
from pydantic import Field

from channels.rng import torch_generator
from fedsim.workloads import WORKLOADS, TheoryConstants, Workload, WorkloadConfig


class LinRegConfig(WorkloadConfig):
    """Federated ridge regression with exact theory constants."""

    name: str = "linreg"
    num_ues: int = Field(5, ge=1, description="N, number of UEs")
    dim: int = Field(8, ge=1, description="d, number of features")
    samples_per_ue: int = Field(40, ge=1, description="m_n, examples per UE")
    heterogeneity: float = Field(0.5, ge=0, description="std of each UE's offset δ_n from the common w_true")
    noise: float = Field(0.1, ge=0, description="std of the label noise")
    l2: float = Field(0.01, ge=0, description="ridge coefficient")

    def build(self, seed: int) -> LinReg:
        return LinReg(self, seed)


class LinReg(Workload):
    """See the module docstring. Full-batch gradients; everything float64."""

    name = "linreg"
    dtype = torch.float64

    def __init__(self, cfg: LinRegConfig, seed: int) -> None:
        self.cfg, self.seed, self.num_ues, self.dim = cfg, seed, cfg.num_ues, cfg.dim
        g = torch_generator(seed, "data")
        w_true = torch.randn(cfg.dim, generator=g, dtype=self.dtype)
        self.X, self.y = [], []
        for _ in range(cfg.num_ues):
            X = torch.randn(cfg.samples_per_ue, cfg.dim, generator=g, dtype=self.dtype)
            w_n = w_true + cfg.heterogeneity * torch.randn(cfg.dim, generator=g, dtype=self.dtype)
            self.X.append(X)
            self.y.append(X @ w_n + cfg.noise * torch.randn(cfg.samples_per_ue, generator=g, dtype=self.dtype))
        q = self.ue_weights()
        eye = torch.eye(cfg.dim, dtype=self.dtype)
        self.H = sum(qn * X.T @ X / len(X) for qn, X in zip(q, self.X, strict=True)) + cfg.l2 * eye
        b = sum(qn * X.T @ y / len(X) for qn, X, y in zip(q, self.X, self.y, strict=True))
        self.w_star = torch.linalg.solve(self.H, b)
        self.f_star = self.objective(self.w_star)

    def num_examples(self, ue: int) -> int:
        return len(self.X[ue])

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=self.dtype)

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        X, y = self.X[ue], self.y[ue]
        return X.T @ (X @ w - y) / len(X) + self.cfg.l2 * w

    def objective(self, w: torch.Tensor) -> float:
        q = self.ue_weights()
        loss = sum(qn * (X @ w - y).square().mean() / 2 for qn, X, y in zip(q, self.X, self.y, strict=True))
        return float(loss + self.cfg.l2 / 2 * w.square().sum())

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        f = self.objective(w)
        return {"loss": f, "train_loss": f, "gap": f - self.f_star, "dist": float((w - self.w_star).norm())}

    def theory_constants(self) -> TheoryConstants:
        eig = torch.linalg.eigvalsh(self.H)
        L = max(float(torch.linalg.eigvalsh(X.T @ X / len(X)).max()) for X in self.X) + self.cfg.l2
        return TheoryConstants(L=L, mu=float(eig.min()), f_star=self.f_star, w_star=self.w_star,
                               sigma2=0.0, sources={"L": "exact: max_n λ_max(X_nᵀX_n/m_n) + l2",
                                                    "mu": "exact: λ_min(H)", "w_star": "exact: H⁻¹ b"})


WORKLOADS.register("linreg", LinRegConfig)
