"""The power scaling ``ρ_t`` of a round, and the per-UE budget it must respect.

UE n puts ``p_n u_n`` on the air, ``u_n`` the weighted vector it transmits and ``|p_n|² = ρ_t·amp2_n``
(``amp2_n`` is the power-control law's transmit amplitude squared per unit ρ: ``1/|ĥ_n|²`` for
inversion, 1 otherwise). Its transmit energy in the round is ``E_n = ρ_t·amp2_n·‖u_n‖²``, and the
budget is ``E_n ≤ P`` for every UE in every round (``channel.power`` is P, per transmission of one
vector; a D2D round of N slots makes N transmissions, each within P). Every rule below is capped at
the budget, ``ρ_t ≤ P / max_n amp2_n‖u_n‖²``, except the explicitly unbounded one:

- ``"full"`` (the default): ``ρ_t = P / max_n amp2_n‖u_n‖²``: the UE that needs the most energy
  transmits at exactly P, whatever it sends (gradient, update or model), so K and the transmitted
  quantity change the learning dynamics, not the SNR.
- ``"fixed"``: ``ρ_t = P`` while the budget allows it (a constant noise scale in the transmitted
  domain, as the convergence theory assumes), capped when it does not.
- ``"norm"``: ``ρ_t = P·h_th² / max_n ‖u_n‖²`` (BAA's rule), capped.
- ``"cotaf"``: ``ρ_t = P / max_n ‖u_n‖²`` (the instantaneous COTAF rule, blind to the channel), capped.
- ``"fixed-unbounded"``: ``ρ_t = P`` always, the budget ignored. It reproduces analyses that assume
  a constant ρ_t whatever the energy; ``tx_energy_max`` in the rows shows by how much it exceeds P.
"""

from __future__ import annotations

import torch

RHO_RULES = ("full", "fixed", "norm", "cotaf", "fixed-unbounded")


def compute_rho(rule: str, power: float, h_th: float, u_norm_sq: torch.Tensor, energy_unit: torch.Tensor) -> float:
    """``ρ_t`` for one round (linear).

    Args:
        rule: one of :data:`RHO_RULES`.  power: P.  h_th: the truncation threshold (rule "norm").
        u_norm_sq: ``‖u_n‖²`` of the UEs in the superposition.
        energy_unit: ``amp2_n·‖u_n‖²``, their energy per unit ρ (same shape).

    An all-zero payload falls back to ``ρ = P`` (nothing to scale, no energy spent).
    """
    if rule not in RHO_RULES:
        raise ValueError(f"rho must be one of {RHO_RULES}, got {rule!r}")
    peak = float(energy_unit.max()) if energy_unit.numel() else 0.0
    if rule == "fixed-unbounded" or peak <= 0.0:
        return float(power)
    cap = float(power) / peak
    largest = float(u_norm_sq.max())
    target = {"full": cap, "fixed": float(power),
              "norm": float(power) * float(h_th) ** 2 / largest if largest > 0 else cap,
              "cotaf": float(power) / largest if largest > 0 else cap}[rule]
    return min(target, cap)


def compute_rho_slots(rule: str, power: float, h_th: float, u_norm_sq: torch.Tensor, energy_unit: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """:func:`compute_rho` for every slot at once: column m of ``[N, M]`` holds slot m's
    transmitters (``mask``); returns ``ρ [M]`` (P for a slot nobody transmits in)."""
    zero = torch.zeros_like(energy_unit)
    peak = torch.where(mask, energy_unit, zero).amax(0)
    largest = torch.where(mask, u_norm_sq, zero).amax(0)
    P = torch.full_like(peak, float(power))
    if rule == "fixed-unbounded":
        return P
    safe = lambda x: x.clamp_min(torch.finfo(x.dtype).tiny)  # noqa: E731 - empty slots are masked below
    cap = P / safe(peak)
    target = {"full": cap, "fixed": P, "norm": P * float(h_th) ** 2 / safe(largest), "cotaf": P / safe(largest)}
    if rule not in target:
        raise ValueError(f"rho must be one of {RHO_RULES}, got {rule!r}")
    return torch.where(peak > 0, torch.minimum(target[rule], cap), P)
