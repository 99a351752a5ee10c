"""Samplers for symmetric and totally skewed α-stable laws (Chambers–Mallows–Stuck).

Parametrisation: ``SαS(α, c)`` has characteristic function ``exp(-c^α |u|^α)`` (model §2.4;
§ numbers: docs/explanation/model.md);
``α = 2`` is ``N(0, 2c²)``, ``α = 1`` is Cauchy with scale ``c``.

Implementation notes (why the formulas look different from the textbook CMS):

* ``U = π(u − ½)`` with ``u ~ U(0, 1)``. Every cosine of CMS is rewritten as a sine of a quantity
  computed *directly from* ``m = min(u, 1 − u)`` (e.g. ``cos U = sin(π m)``), so nothing is
  evaluated as ``cos(±π/2 − tiny)``: the edges of ``U`` keep full relative precision in float32.
* ``cos(U)^{-1/α} = cos(U)^{-1} · cos(U)^{-(1-α)/α}`` merges the two powers of CMS into one:

      X = sin(αU)/cos(U) · ( cos((1−α)U) / (W cos U) )^{(1−α)/α}

  i.e. one ``log`` and one ``exp`` per sample. The exponent is clamped below the float overflow
  point and the result is clamped to ``±finfo.max``: samples are always finite, and only values
  that would otherwise be ``inf`` are touched (clipping at small values would destroy stability).
* ``W = −log(v)`` with ``v`` kept away from 0 and 1; ``u`` is kept away from 0 and 1.
* Work is done in flat cache-sized chunks (bounded memory for ``[N, d]`` blocks); all
  uniforms of a chunk are drawn with one call. The output depends only on the generator
  state, shape, ``α`` and dtype.
"""

from __future__ import annotations

import math

import torch

_CHUNK = 1 << 18  # elements per chunk: temporaries stay in cache, memory bounded for [N, d]


def _check_alpha(alpha: float, *, upper: float = 2.0) -> float:
    alpha = float(alpha)
    if not (0.0 < alpha <= upper):
        raise ValueError(f"alpha must be in (0, {upper}], got {alpha}")
    return alpha


def _uniform_pair(n: int, generator: torch.Generator, dtype: torch.dtype, device) -> tuple:
    """``m = min(u, 1−u)``, ``u`` and ``W ~ Exp(1)`` for ``n`` samples, all safely away from 0."""
    tiny = torch.finfo(dtype).tiny
    r = torch.rand(2 * n, generator=generator, dtype=dtype, device=device)
    u, v = r[:n], r[n:]
    eps = torch.finfo(dtype).eps / 4  # rand is on a 2^-24 (float32) grid: u=0 would give cos U=0
    u.clamp_(min=eps, max=1.0 - eps)
    m = torch.minimum(u, 1.0 - u)
    w = v.clamp_(min=tiny).log_().neg_()  # Exp(1); v=0 would give W=inf (harmless) – kept finite
    w.clamp_(min=tiny)
    return m, u, w


def _sas_chunk(n: int, alpha: float, generator: torch.Generator, dtype, device) -> torch.Tensor:
    m, u, w = _uniform_pair(n, generator, dtype, device)
    pi = math.pi
    cos_u = torch.sin(m * pi)  # cos(U) = sin(π m), exact near the edges
    if alpha == 1.0:
        # Cauchy: tan(U) = sin(U)/cos(U) with sin|U| = cos(π m) (never tiny: no precision issue)
        x = torch.cos(m * pi).div_(cos_u)
    else:
        # |sin(αU)|: for α > 1 use sin(π − α|U|) so that α → 2 keeps precision near the edges
        if alpha > 1.0:
            s = torch.sin(m * (alpha * pi) + (1.0 - alpha / 2.0) * pi)
        else:
            s = torch.sin(m * (-alpha * pi) + alpha * pi / 2.0)
        b = abs(1.0 - alpha)
        c2 = torch.sin(m * (b * pi) + (1.0 - b) * pi / 2.0)  # cos((1−α)U) as a sine
        k = (1.0 - alpha) / alpha
        t = c2.div_(w.mul_(cos_u)).log_().mul_(k)
        t.clamp_(max=math.log(torch.finfo(dtype).max) - 1.0)
        x = t.exp_().mul_(s).div_(cos_u)
    x.clamp_(max=torch.finfo(dtype).max)
    # sign of U (= sign of sin αU for α ≤ 2)
    return torch.where(u < 0.5, -x, x)


def _positive_chunk(n: int, alpha: float, generator: torch.Generator, dtype, device):
    """Standard positive stable, Laplace transform ``exp(-s^α)``, 0 < α ≤ 1 (Kanter / CMS β=1)."""
    m, u, w = _uniform_pair(n, generator, dtype, device)
    pi = math.pi
    cos_u = torch.sin(m * pi)
    if alpha == 1.0:
        return torch.ones(n, dtype=dtype, device=device)  # degenerate limit: A ≡ 1
    s = torch.sin(u * (alpha * pi))  # sin(α(U + π/2))
    c2 = torch.sin(u * ((1.0 - alpha) * pi))  # cos(U − α(U + π/2))
    k = (1.0 - alpha) / alpha
    t = c2.div_(w.mul_(cos_u)).log_().mul_(k)
    t.clamp_(max=math.log(torch.finfo(dtype).max) - 1.0)
    x = t.exp_().mul_(s).div_(cos_u)
    return x.clamp_(max=torch.finfo(dtype).max)


def _chunked(fn, shape, alpha, generator, dtype, device) -> torch.Tensor:
    shape = torch.Size(shape)
    total = shape.numel()
    out = torch.empty(total, dtype=dtype, device=device)
    for start in range(0, total, _CHUNK):  # loop over cache-sized chunks, not over UEs
        n = min(_CHUNK, total - start)
        out[start : start + n] = fn(n, alpha, generator, dtype, device)
    return out.view(shape)


def sample_sas(
    shape: tuple[int, ...] | torch.Size,
    alpha: float,
    scale: float = 1.0,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """I.i.d. ``SαS(α, scale)`` samples of any ``shape``, 0 < α ≤ 2.

    ``α = 2`` gives ``N(0, 2·scale²)``; ``α = 1`` gives ``scale·tan(U)`` (Cauchy). Draws for
    different α from the same generator state are coupled (same ``U, W``), so results vary
    continuously in α. Always finite.
    """
    alpha = _check_alpha(alpha)
    x = _chunked(_sas_chunk, shape, alpha, generator, dtype, device)
    if scale != 1.0:
        x.mul_(float(scale))
    return x


def sample_positive_stable(
    shape: tuple[int, ...] | torch.Size,
    alpha: float,
    scale: float = 1.0,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Totally skewed positive stable ``S_α(scale, β=1, 0)`` (Samorodnitsky–Taqqu / scipy "S1"),
    0 < α < 1 (α = 1 returns the constant ``scale``, the limit used by the isotropic sampler).

    Uses CMS with β = 1: ``B = π/2``, ``S_{α,β} = cos(πα/2)^{-1/α}``; the standard variable has
    Laplace transform ``exp(-s^α)`` and is multiplied by ``scale / cos(πα/2)^{1/α}``.
    """
    alpha = _check_alpha(alpha, upper=1.0)
    x = _chunked(_positive_chunk, shape, alpha, generator, dtype, device)
    if alpha < 1.0:
        factor = float(scale) / math.cos(math.pi * alpha / 2.0) ** (1.0 / alpha)
    else:
        factor = float(scale)
    if factor != 1.0:
        x.mul_(factor)
    return x


def sample_sas_isotropic(
    shape: tuple[int, ...] | torch.Size,
    alpha: float,
    scale: float = 1.0,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Isotropic (sub-Gaussian) SαS vectors along the **last** dimension: ``ξ = √A · G``.

    ``A ~ S_{α/2}((cos(πα/4))^{2/α}, β=1, 0)`` (one per vector, i.e. per leading index) and
    ``G ~ N(0, 2·scale² I)``. Every marginal is ``SαS(α, scale)`` (Samorodnitsky–Taqqu,
    Prop. 2.5.2); coordinates of one vector are dependent (they share ``A``). α = 2 gives
    ``N(0, 2·scale² I)``. Draw order: ``A`` first, then ``G``.
    """
    alpha = _check_alpha(alpha)
    shape = torch.Size(shape)
    lead = shape[:-1] if len(shape) > 0 else torch.Size()
    # standard positive stable with Laplace transform exp(-s^{α/2}); its S1 scale is
    # cos(πα/4)^{2/α}, which is exactly the A of Prop. 2.5.2
    a = _chunked(_positive_chunk, (*lead, 1), alpha / 2.0, generator, dtype, device)
    if len(shape) == 0:
        a = a.view(())
    g = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return g.mul_(a.sqrt_()).mul_(math.sqrt(2.0) * float(scale))
