"""What a receiver returns for one round."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ChannelResult:
    """One round through a receiver.

    Attributes:
        estimate: ``[d]`` (server, digital) or ``[N, d]`` (relay, d2d; row m = UE m's copy).
        active: bool ``[N]``, UEs in the superposition (available and not dropped out).
        dropouts: available UEs dropped by truncated inversion this round.
        noise_scale: per-coordinate SαS scale of the total noise on (each row of) the estimate,
            ``(c_common^α + c_per_ue^α)^{1/α}``; Gaussian: std = √2·noise_scale.
        noise_scale_common / noise_scale_per_ue: the two parts (0.0 where absent); the per-UE part
            is a ``[N]`` tensor where UEs hear their own noise at different scales (a relay's faded
            downlink, D2D slots), and ``noise_scale`` then combines its median.
        tx_energy: ``Σ_n ‖p_n u_n‖²`` this round (digital: ``Σ ‖u_n‖²``, unit amplitude).
        tx_energy_max: the largest energy one UE spent on one transmission, in units of the budget
            P (at most 1 unless ``rho = "fixed-unbounded"``); None for the digital receiver.
        snr_db: the aggregate's effective receive SNR: the decoded signal's power per entry over the
            squared geometric power of the noise on it (``S0 = C_g^{1/α−1}·noise_scale``, the
            level that compares tail indices fairly); None without interference and for the digital
            receiver.
        delivered: bool ``[N]``, UEs that received their estimate (a relay downlink below its
            threshold drops the UE for the round); None: all of them.
        noise: the noise actually added: the common part ``[d]`` if present, else the per-UE
            ``[N, d]`` (zeros ``[d]`` without interference; quantisation error for digital).
        noise_common / noise_per_ue: the two parts, or None.
        rho: ρ_t used; gain: the receiver's normaliser ``N_act·√ρ_t·μ``; n_active: ``N_act``.
    """

    estimate: torch.Tensor
    active: torch.Tensor
    dropouts: int
    noise_scale: float
    tx_energy: float
    noise: torch.Tensor
    noise_common: torch.Tensor | None = None
    noise_per_ue: torch.Tensor | None = None
    noise_scale_common: float = 0.0
    noise_scale_per_ue: float | torch.Tensor = 0.0
    tx_energy_max: float | None = None
    snr_db: float | None = None
    delivered: torch.Tensor | None = None
    rho: float = 1.0
    gain: float = 1.0
    n_active: int = 0
    extras: dict = field(default_factory=dict)


def empty_result(V: torch.Tensor, active: torch.Tensor, dropouts: int, per_ue: bool) -> ChannelResult:
    """The result of a round in which nobody is in the superposition: zero estimates."""
    n, d = V.shape
    est = torch.zeros((n, d) if per_ue else (d,), dtype=V.dtype, device=V.device)
    return ChannelResult(estimate=est, active=active, dropouts=dropouts, noise_scale=0.0, tx_energy=0.0,
                         noise=torch.zeros(d, dtype=V.dtype, device=V.device), rho=0.0, gain=0.0, n_active=0)
