"""Moment Exchange (MoEx, Li et al., CVPR 2021; official code ``Boyiliee/MoEx``, ``moex.py``).

At one layer, every sample A takes the per-instance normalisation moments of a partner π(A):

    h'_A = (h_A − μ_A) / σ_A · σ_π(A) + μ_π(A),     loss = λ CE(f(h'), y) + (1 − λ) CE(f(h'), y[π])

PONO moments (over channels, per spatial position): μ, σ ∈ [B, 1, H, W], σ = sqrt(var + ε)
with torch's unbiased ``var``. Applied to the whole batch with probability p, never at test
time. Note: λ = 1 keeps only the own-label term but still trains on exchanged features; only
p = 0 is plain training. Defaults (``Boyiliee/MoEx`` ImageNet README): PONO at the stem,
λ = 0.9, p = 1.0, ε = 1e-5. In FL it is purely local: pairs, λ, p and moments stay on the UE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_LAM = 0.9
DEFAULT_PROB = 1.0
DEFAULT_EPS = 1e-5


def pono_moments(h: torch.Tensor, eps: float = DEFAULT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """PONO mean and std of ``h [B, C, H, W]`` over channels: ``(μ, σ)``, each ``[B, 1, H, W]``."""
    mu = h.mean(dim=1, keepdim=True)
    sigma = (h.var(dim=1, keepdim=True) + eps).sqrt()
    return mu, sigma


def moment_exchange(h: torch.Tensor, perm: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """``h' [B, C, H, W]``: each row normalised by its own PONO moments, then given row ``perm[i]``'s."""
    mu, sigma = pono_moments(h, eps)
    return (h - mu) / sigma * sigma[perm] + mu[perm]


def moex_loss(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """λ CE(logits, y) + (1 − λ) CE(logits, y[perm]); ``logits [B, K]``, ``y [B]``."""
    return lam * F.cross_entropy(logits, y) + (1.0 - lam) * F.cross_entropy(logits, y[perm])


def draw(batch: int, prob: float, gen: torch.Generator) -> torch.Tensor | None:
    """The partner permutation ``[B]`` with probability ``prob``, else None (plain step).

    Always consumes one uniform and one permutation from ``gen``, so later draws do not
    depend on whether MoEx fired.
    """
    fire = float(torch.rand((), generator=gen, dtype=torch.float64)) < prob
    perm = torch.randperm(batch, generator=gen)
    return perm if fire else None
