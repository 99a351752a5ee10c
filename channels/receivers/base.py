"""The receiver interface: link shape, who is admitted, how the superposition is decoded, which
noise each listener sees, and what one exchange costs in airtime. The analog pipeline of a round
(fading, power control, power scaling within the budget, superposition, interference) is
:meth:`Receiver.receive`; :mod:`channels.receivers.noise` draws the noise."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from channels.config import ChannelConfig
from channels.latency import communication_latency, uplink_airtime
from channels.power import PowerControl, compute_rho
from channels.receivers.noise import Noise, Parts, draw_links, snr_db
from channels.result import ChannelResult, empty_result


def payload_norm_sq(V: torch.Tensor) -> torch.Tensor:
    """``‖v_n‖²`` of every row of ``V [N, d]``, in float64: a float32 payload whose entries are
    finite can still overflow its squared norm, which would make ρ = 0."""
    return torch.linalg.vector_norm(V, dim=1, dtype=torch.float64).square()


class Receiver:
    """An analog over-the-air receiver with one receive point (override :meth:`receive` for
    anything else).

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

    def slots(self, n: int) -> int:
        """Transmission slots one exchange takes (N for a slotted D2D round)."""
        return 1

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

    def noise(self, parts: Parts, gain: float, seed: int, round: int, n: int, d: int, real: torch.dtype,
              device: torch.device) -> Noise:
        """The interference after normalisation by ``gain``: one common draw."""
        return Noise.draw(parts.interference, seed, round, n, d, real, device, common_gain=gain)

    def ignored(self) -> set[str]:
        """The channel keys that have no effect on what this receiver computes, given the config."""
        c = self.config
        ignored = {"quant_bits", "bits", "rate", "interference_mode", "downlink_scale", "downlink_h_th"}
        if not self.forwards:
            ignored.add("relay_processing")
        if c.interference.name == "none":
            ignored |= {"scale", "dispersion", "gsnr_db"}
        if c.power_control.name != "inversion" and c.rho != "norm":
            ignored.add("h_th")
        if c.power_control.name == "none":  # transmits blind: no use for the channel estimate
            ignored.add("csi_error")
        if c.fading.name == "none" and c.csi_error == 0:  # every |h| = |ĥ| = 1: the laws coincide
            ignored.add("power_control")
            if c.h_th <= 1 and c.rho != "norm":  # and nobody is truncated
                ignored.add("h_th")
        if c.rho_growth == "none" and c.rho in ("full", "norm", "cotaf"):
            ignored.add("rho_growth")
        return ignored

    # ------------------------------------------------------------------ airtime
    def latency(self, d: int, n: int) -> float:
        """τ_cm [s] of one exchange of ``d`` entries among ``n`` UEs."""
        c = self.config
        return communication_latency(
            scheme="analog" if self.analog else "digital", d=d, n_ues=n, resources=c.resources,
            symbol_time=c.symbol_time, bits=c.bits, rate=c.rate, propagation=c.propagation,
            relay_processing=c.relay_processing if self.forwards else 0.0, downlink=self.downlink,
            hops=self.hops, slots=self.slots(n))

    def uplink_airtime(self, d: int, n: int) -> float:
        """Seconds the channel is busy carrying one exchange's uplink (what limits a pipeline)."""
        c = self.config
        return self.slots(n) * uplink_airtime("analog" if self.analog else "digital", d, n, c.resources,
                                              c.symbol_time, c.bits, c.rate)

    # ------------------------------------------------------------------ the analog round
    def receive(self, parts: Parts, V: torch.Tensor, q: torch.Tensor, available: torch.Tensor,
                seed: int, round: int) -> ChannelResult:
        """One round: links (stream "fading"), gains, the budget-capped ρ_t, the superposition and
        the interference (stream of the interference model)."""
        c = self.config
        n, d = V.shape
        h, h_est = draw_links(parts, self.link_shape(n), seed, round, V.dtype)
        a, ok, amp2 = parts.power_control.gains(h, h_est, h_th=c.h_th, mu=parts.mu, real_dtype=V.dtype)
        a, active, amp2, dropouts = self.admit(a, ok, amp2, available)
        qa = torch.where(active, q, torch.zeros_like(q))
        n_act = int(active.sum())
        if n_act == 0 or float(qa.sum()) <= 0.0:
            return empty_result(V, active, dropouts, self.per_ue)
        w = qa / qa.sum()  # weights renormalised over active UEs
        # u_n = N_act·w_n·v_n is what UE n puts on air (u_n = v_n for equal weights)
        u_norm_sq = payload_norm_sq(V).cpu() * (n_act * w) ** 2
        rho = compute_rho(c.rho, c.power, c.h_th, u_norm_sq[active], (amp2 * u_norm_sq)[active])
        gain = n_act * math.sqrt(rho) * parts.mu
        energy = rho * (amp2 * u_norm_sq)  # float64 (u_norm_sq is): a tiny ρ times float32 amp2 would underflow
        signal = self.superpose(V, w, a)
        noise = self.noise(parts, gain, seed, round, n, d, V.dtype, V.device)
        return ChannelResult(
            estimate=noise.add_to(signal, n, per_ue=self.per_ue), active=active, dropouts=dropouts,
            noise_scale=noise.scale(parts.interference.alpha), tx_energy=float(energy.sum()),
            tx_energy_max=float(energy.max()) / c.power, snr_db=snr_db(signal, noise, parts.interference.alpha),
            **noise.fields(d, V.dtype, V.device), rho=rho, gain=gain, n_active=n_act)
