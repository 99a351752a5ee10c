"""Gumbel-softmax sampling from an explicit generator (torch's ``F.gumbel_softmax`` draws from
the global RNG, which would make results depend on what else ran in the process)."""

from __future__ import annotations

import torch


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gumbel(0, 1) samples ``−log(−log U)`` with U ~ U(0, 1) kept off 0 and 1 (no inf)."""
    tiny = torch.finfo(dtype).tiny
    u = torch.rand(shape, generator=generator, dtype=dtype).clamp_(tiny, 1.0 - torch.finfo(dtype).eps)
    return -torch.log(-torch.log(u))


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator, *,
                   hard: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gumbel-softmax draw per row of ``logits [..., n]`` at temperature ``tau``.

    ``h = softmax((log_softmax(α) + g) / τ)``. Returns ``(weights [..., n], index [...])`` where
    ``index = argmax h``. With ``hard`` the weights are the straight-through one-hot
    ``onehot(index) − sg(h) + h``: exactly one-hot in the forward pass, carrying the soft
    gradient ∂h/∂α backwards (GDAS: Dong & Yang, CVPR 2019); otherwise they are ``h`` (DASH: Shen et al., NeurIPS 2022).
    """
    if tau <= 0:
        raise ValueError(f"Gumbel temperature must be > 0, got {tau}")
    g = gumbel_noise(logits.shape, generator, logits.dtype).to(logits.device)  # CPU generator
    h = torch.softmax((torch.log_softmax(logits, dim=-1) + g) / tau, dim=-1)
    index = h.argmax(dim=-1)
    if not hard:
        return h, index
    one_hot = torch.zeros_like(h).scatter_(-1, index.unsqueeze(-1), 1.0)
    return one_hot - h.detach() + h, index


def linear_temperature(progress: float, tau_max: float, tau_min: float) -> float:
    """τ annealed linearly from ``tau_max`` (progress 0) to ``tau_min`` (progress 1)."""
    p = min(max(progress, 0.0), 1.0)
    return tau_max - (tau_max - tau_min) * p
