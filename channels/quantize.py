"""Unbiased stochastic quantisation for the digital baseline (error-free link, b-bit payload)."""

from __future__ import annotations

import torch


def stochastic_quantize(v: torch.Tensor, bits: int, generator: torch.Generator) -> torch.Tensor:
    """Quantise each row (last dimension) of ``v`` (``[d]`` or ``[N, d]``) to ``2^bits`` levels.

    Per-vector range ``[min, max]`` split into ``2^bits − 1`` equal steps; each entry is rounded to
    one of its two neighbouring levels with probability proportional to proximity (stochastic
    rounding), so ``E[Q(v)] = v`` exactly. Constant rows are returned unchanged. Output has
    ``v``'s dtype and shape; entries lie on ``min + k·Δ``, ``k ∈ {0, …, 2^bits − 1}``.
    """
    if not isinstance(bits, int) or not 1 <= bits <= 24:
        raise ValueError(f"quant_bits must be an int in [1, 24], got {bits!r}")
    lo = v.amin(dim=-1, keepdim=True)
    hi = v.amax(dim=-1, keepdim=True)
    levels = float(2**bits - 1)
    step = (hi - lo) / levels
    safe = torch.where(step > 0, step, torch.ones_like(step))
    t = ((v - lo) / safe).clamp_(0.0, levels)
    fl = t.floor()
    # drawn on the generator's device (CPU) and moved: every device rounds with the same numbers
    up = torch.rand(v.shape, generator=generator, dtype=v.dtype).to(v.device) < (t - fl)
    k = (fl + up.to(v.dtype)).clamp_(max=levels)
    return torch.where(step > 0, lo + k * step, v)
