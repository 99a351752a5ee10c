"""The power scaling ``ρ_t`` of a round from the per-UE budget ``P`` (``u_n`` = the weighted vector
a UE puts on air).

- ``"fixed"``: ``ρ = P``. The interference scale stays constant in the transmitted domain, which is
  what the convergence theory assumes; energy is not capped for inversion.
- ``"norm"``: ``ρ_t = P·h_th² / max_n ‖u_n‖²``; with inversion every UE meets ``‖p_n u_n‖² ≤ P``.
- ``"cotaf"``: ``ρ_t = P / max_n ‖u_n‖²``, the instantaneous estimate of COTAF's ``P/E‖v‖²``.
"""

from __future__ import annotations

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
