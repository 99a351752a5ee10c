"""The receiver interface: link shape, who is admitted, how the superposition is decoded, which
noise each listener sees, and what one exchange costs in airtime. The analog pipeline of a round
(fading, power control, power scaling, superposition, interference) is :meth:`Receiver.receive`."""

from __future__ import annotations

import math
from typing import ClassVar, Protocol

import torch

from channels.config import ChannelConfig
from channels.fading import FadingLaw, estimate_csi
from channels.interference import InterferenceModel
from channels.latency import communication_latency
from channels.power import PowerControl, compute_rho
from channels.result import ChannelResult, empty_result
from channels.rng import torch_generator

PER_UE_KEY = 2**31 - 2  # rng "ue" slot reserved for the per-UE interference block


class Parts(Protocol):
    """The channel's parts a receiver uses (:class:`channels.Channel` provides them)."""

    config: ChannelConfig
    fading: FadingLaw
    power_control: PowerControl
    interference: InterferenceModel
    mu: float


class Receiver:
    """An analog over-the-air receiver (override :meth:`receive` for anything else).

    Class attributes:
        per_ue: the receiver gives every UE its own estimate ``[N, d]`` (else one ``[d]``).
        analog: the UEs superpose on the air (else they take turns, digitally).
        downlink: the exchange includes a downlink phase (broadcast or forwarding).
        hops: propagation hops of one exchange (2 through a relay).
        forwards: a relay's processing delay applies.
    """

    per_ue: ClassVar[bool] = False
    analog: ClassVar[bool] = True
    downlink: ClassVar[bool] = True
    hops: ClassVar[int] = 1
    forwards: ClassVar[bool] = False

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config

    # ------------------------------------------------------------------ what subclasses change
    def check(self, power: PowerControl) -> None:
        """Raise ValueError when ``power`` cannot serve this receiver's links."""

    def noise_mode(self) -> str:
        """'common' (one draw for everyone), 'per_ue' or 'common+per_ue'."""
        return "common"

    def per_ue_noise_factor(self) -> float:
        """Scale of the per-UE noise relative to the interference scale c."""
        return 1.0

    def link_shape(self, n: int) -> tuple[int, ...]:
        """Fading coefficients per round: ``[N]`` uplinks."""
        return (n,)

    def admit(self, a: torch.Tensor, ok: torch.Tensor, amp2: torch.Tensor, available: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(a, active, amp2, dropouts)``: available UEs whose link power control kept are active."""
        return a, available & ok, amp2, int((available & ~ok).sum())

    def superpose(self, V: torch.Tensor, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The decoded noise-free aggregate ``Σ_n w_n a_n v_n``, ``[d]``."""
        return (w * a).to(V.device) @ V

    def latency(self, d: int, n: int) -> float:
        """τ_cm [s] of one exchange of ``d`` entries among ``n`` UEs."""
        c = self.config
        return communication_latency(
            scheme="analog" if self.analog else "digital", d=d, n_ues=n, resources=c.resources,
            symbol_time=c.symbol_time, bits=c.bits, rate=c.rate, propagation=c.propagation,
            relay_processing=c.relay_processing if self.forwards else 0.0, downlink=self.downlink,
            hops=self.hops)

    # ------------------------------------------------------------------ the analog round
    def receive(self, parts: Parts, V: torch.Tensor, q: torch.Tensor, available: torch.Tensor,
                seed: int, round: int) -> ChannelResult:
        """One round: fading and CSI (stream "fading"), gains, ρ_t, the superposition and the
        interference (stream "interference": the common ``[d]`` draw keyed by the round, the per-UE
        ``[N, d]`` block by the round and a reserved UE key)."""
        c = self.config
        n, d = V.shape
        real = V.dtype
        g_fad = torch_generator(seed, "fading", round)
        h = parts.fading.sample(self.link_shape(n), g_fad, dtype=real)
        h_est = estimate_csi(h, c.csi_error, g_fad) if c.csi_error > 0 else None
        a, ok, amp2 = parts.power_control.gains(h, h_est, h_th=c.h_th, mu=parts.mu, real_dtype=real)
        a, active, amp2, dropouts = self.admit(a, ok, amp2, available)
        qa = torch.where(active, q, torch.zeros_like(q))
        q_sum = qa.sum()
        n_act = int(active.sum())
        if n_act == 0 or float(q_sum) <= 0.0:
            return empty_result(V, active, dropouts, self.per_ue)
        w = qa / q_sum  # weights renormalised over active UEs
        # u_n = N_act·w_n·v_n is what UE n puts on air (u_n = v_n for equal weights)
        u_norm_sq = torch.linalg.vector_norm(V, dim=1).square().cpu() * (n_act * w) ** 2
        rho = compute_rho(c.rho, c.power, c.h_th, float(u_norm_sq.max()))
        gain = n_act * math.sqrt(rho) * parts.mu
        estimate = self.superpose(V, w, a)
        noise = _Noise(self, parts.interference, gain, seed, round, n, d, real, V.device)
        if noise.common is not None:
            estimate = estimate + noise.common
        if self.per_ue and estimate.dim() == 1:
            estimate = estimate.unsqueeze(0).expand(n, d).clone()
        if noise.per_ue is not None:
            estimate = estimate.add_(noise.per_ue)
        return ChannelResult(
            estimate=estimate, active=active, dropouts=dropouts,
            noise_scale=_combine_scales(noise.scale_common, noise.scale_per_ue, parts.interference.alpha),
            tx_energy=float((rho * amp2 * u_norm_sq).sum()), noise=noise.actual(d, real, V.device),
            noise_common=noise.common, noise_per_ue=noise.per_ue, noise_scale_common=noise.scale_common,
            noise_scale_per_ue=noise.scale_per_ue, rho=rho, gain=gain, n_active=n_act)


class _Noise:
    """The interference a round adds after the receiver's normalisation by ``gain``."""

    def __init__(self, receiver: Receiver, model: InterferenceModel, gain: float, seed: int, round: int,
                 n: int, d: int, real: torch.dtype, device: torch.device) -> None:
        mode = receiver.noise_mode()
        c_common = model.scale / gain
        c_ue = model.scale * receiver.per_ue_noise_factor() / gain
        has_common = mode in ("common", "common+per_ue") and c_common > 0
        has_ue = mode in ("per_ue", "common+per_ue") and c_ue > 0
        self.scale_common = c_common if has_common else 0.0
        self.scale_per_ue = c_ue if has_ue else 0.0
        self.common = self.per_ue = None
        if has_common:
            g_int = torch_generator(seed, "interference", round)
            self.common = model.sample((d,), g_int, real).div_(gain).to(device)
        if has_ue:
            g_ue = torch_generator(seed, "interference", round, ue=PER_UE_KEY)
            self.per_ue = model.sample((n, d), g_ue, real).mul_(c_ue / model.scale).to(device)

    def actual(self, d: int, real: torch.dtype, device: torch.device) -> torch.Tensor:
        """The common part if present, else the per-UE block, else zeros ``[d]``."""
        if self.common is not None:
            return self.common
        if self.per_ue is not None:
            return self.per_ue
        return torch.zeros(d, dtype=real, device=device)


def _combine_scales(a: float, b: float, alpha: float) -> float:
    if a == 0.0 or b == 0.0:
        return a + b
    return (a**alpha + b**alpha) ** (1.0 / alpha)
