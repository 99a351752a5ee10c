"""Power control (reference §2.3): per-UE precoders ``p_n`` and the resulting real gains ``a_n``.

A UE transmits ``p_n·v_n``; the receiver sees ``Re(h_n p_n)·v_n`` (real payload on complex
baseband, the matched filter keeps the in-phase part) and divides by a known gain so that the
decoded coefficient is ``a_n`` (``a_n = 1`` for perfect inversion). All functions are vectorised
over any shape of ``h`` (``[N]`` uplink or ``[N, N]`` D2D).

- ``"inversion"`` (truncated channel inversion, BAA): ``p = √ρ·ĥ*/|ĥ|²`` if ``|ĥ| ≥ h_th``,
  else the UE drops out; ``a = Re(h ĥ*)/|ĥ|²`` (exactly 1 with perfect CSI).
- ``"phase"`` (phase-only correction, GBMA): ``p = √ρ·e^{−j∠ĥ}``, ``a = Re(h ĥ*)/(|ĥ| μ_h)``
  (``|h|/μ_h`` with perfect CSI, unbiased since ``E|h| = μ_h``).
- ``"none"`` (equal gain, no CSI): ``p = √ρ``, ``a = Re(h)/E[Re h]``; needs ``E[Re h] ≠ 0``
  (fading "none" or Rician with K > 0).

``ρ_t`` from the per-UE budget ``P`` (``u_n`` = the weighted vector a UE puts on air):

- ``"fixed"``: ``ρ = P``. The interference scale stays constant in the transmitted domain, which is
  what the convergence theory (§4) assumes; energy is not capped for inversion.
- ``"norm"``: ``ρ_t = P·h_th² / max_n ‖u_n‖²``; with inversion every UE meets ``‖p_n u_n‖² ≤ P``.
- ``"cotaf"``: ``ρ_t = P / max_n ‖u_n‖²``, the instantaneous estimate of COTAF's ``P/E‖v‖²``.
"""

from __future__ import annotations

import torch

POWER_CONTROLS = ("inversion", "phase", "none")
RHO_RULES = ("fixed", "norm", "cotaf")


def compute_rho(rule: str, power: float, h_th: float, max_norm_sq: float) -> float:
    """``ρ_t`` (linear power scaling) for one round; ``max_norm_sq = max_n ‖u_n‖²`` over active UEs.

    An all-zero payload (``max_norm_sq == 0``) falls back to ``ρ = P`` (nothing to normalise).
    """
    if rule == "fixed" or max_norm_sq <= 0.0:
        return float(power)
    if rule == "norm":
        return float(power) * float(h_th) ** 2 / float(max_norm_sq)
    if rule == "cotaf":
        return float(power) / float(max_norm_sq)
    raise ValueError(f"rho must be one of {RHO_RULES}, got {rule!r}")


def gains(
    h: torch.Tensor,
    h_est: torch.Tensor | None,
    method: str,
    *,
    h_th: float = 0.0,
    mu: float = 1.0,
    real_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-link decoded gains for complex ``h`` (any shape).

    Args:
        h: true channel (complex).
        h_est: CSI at the transmitter; ``None`` means perfect CSI (exact ``a = 1`` for inversion).
        method: "inversion" | "phase" | "none".
        h_th: truncation threshold on ``|ĥ|`` (inversion only; linear amplitude).
        mu: normaliser, ``μ_h`` for "phase" and ``E[Re h]`` for "none".

    Returns:
        ``(a, ok, amp2)``: real gains ``a`` (0 where dropped), bool ``ok`` (not dropped), and
        ``amp2 = |p|²/ρ`` (transmit amplitude squared per unit ρ; 0 where dropped).
    """
    perfect = h_est is None
    he = h if perfect else h_est
    mag = he.abs().to(real_dtype)
    if method == "inversion":
        ok = mag >= h_th
        if perfect:
            a = ok.to(real_dtype)
        else:
            a = (h * he.conj()).real.to(real_dtype) / mag.square()
        safe = torch.where(ok, mag, torch.ones_like(mag))
        amp2 = torch.where(ok, safe.square().reciprocal(), torch.zeros_like(mag))
        a = torch.where(ok, a, torch.zeros_like(a))
        return a, ok, amp2
    ok = torch.ones(h.shape, dtype=torch.bool)
    amp2 = torch.ones(h.shape, dtype=real_dtype)
    if method == "phase":
        if perfect:
            a = h.abs().to(real_dtype) / mu
        else:
            a = (h * he.conj()).real.to(real_dtype) / (mag.clamp_min(1e-30) * mu)
        return a, ok, amp2
    if method == "none":
        if mu == 0.0:
            raise ValueError("power_control='none' needs E[Re h] != 0 (no Rayleigh fading)")
        return h.real.to(real_dtype) / mu, ok, amp2
    raise ValueError(f"power_control must be one of {POWER_CONTROLS}, got {method!r}")
