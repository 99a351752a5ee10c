"""Block fading (reference §2.3): constant within a round, i.i.d. over rounds, UEs and links.

Coefficients are complex baseband ``h`` with unit mean power ``E|h|² = 1``:

- ``"none"``: ``h = 1``;
- ``"rayleigh"``: ``h ~ CN(0, 1)``;
- ``"rician"``: ``h = √(K/(K+1)) + √(1/(K+1))·CN(0, 1)`` (K linear, LOS phase 0).

Imperfect CSI: the transmitter knows ``ĥ = h + e``, ``e ~ CN(0, ε)``.
"""

from __future__ import annotations

import math

import torch

from channels.stats import rayleigh_mean_abs, rician_mean_abs

FADING_KINDS = ("none", "rayleigh", "rician")


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def complex_normal(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``CN(0, 1)`` samples of ``shape`` (real and imaginary parts ``N(0, ½)``), complex dtype."""
    z = torch.randn((*shape, 2), generator=generator, dtype=dtype).mul_(math.sqrt(0.5))
    return torch.view_as_complex(z)


def sample_fading(
    shape: tuple[int, ...],
    kind: str,
    generator: torch.Generator,
    *,
    rician_k: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Complex fading coefficients of ``shape`` (``[N]`` uplink, ``[N, N]`` D2D with
    ``h[n, m] = h_{n→m}``). ``"none"`` draws nothing from the generator."""
    if kind == "none":
        return torch.ones(shape, dtype=_complex_dtype(dtype))
    if kind == "rayleigh":
        return complex_normal(shape, generator, dtype)
    if kind == "rician":
        k = float(rician_k)
        los = math.sqrt(k / (k + 1.0))
        return complex_normal(shape, generator, dtype).mul_(math.sqrt(1.0 / (k + 1.0))).add_(los)
    raise ValueError(f"fading must be one of {FADING_KINDS}, got {kind!r}")


def estimate_csi(h: torch.Tensor, csi_error: float, generator: torch.Generator) -> torch.Tensor:
    """Imperfect CSI ``ĥ = h + e``, ``e ~ CN(0, csi_error)`` (variance, linear); 0 returns h."""
    if csi_error == 0.0:
        return h
    real = torch.float64 if h.dtype == torch.complex128 else torch.float32
    return h + complex_normal(tuple(h.shape), generator, real).mul_(math.sqrt(csi_error))


def mean_abs_gain(kind: str, rician_k: float = 0.0) -> float:
    """``μ_h = E|h|``: √π/2 for Rayleigh, closed-form Rice mean for Rician, 1 for none."""
    if kind == "none":
        return 1.0
    if kind == "rayleigh":
        return rayleigh_mean_abs()
    if kind == "rician":
        return rician_mean_abs(rician_k)
    raise ValueError(f"fading must be one of {FADING_KINDS}, got {kind!r}")


def mean_real_gain(kind: str, rician_k: float = 0.0) -> float:
    """``E[Re h]``: 1 (none), 0 (Rayleigh), ``√(K/(K+1))`` (Rician): the gain seen without CSI."""
    if kind == "none":
        return 1.0
    if kind == "rayleigh":
        return 0.0
    if kind == "rician":
        return math.sqrt(rician_k / (rician_k + 1.0))
    raise ValueError(f"fading must be one of {FADING_KINDS}, got {kind!r}")
