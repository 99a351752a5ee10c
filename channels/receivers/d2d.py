"""Realisable D2D: one receive slot per UE. In slot m, UE m listens while every other UE
pre-equalises for its own link to m; each UE adds its own vector locally. N slots per round, so
N times the airtime of one broadcast; each transmission within the budget P."""

from __future__ import annotations

import torch

from channels.power.rho import compute_rho_slots
from channels.receivers.base import Receiver, payload_norm_sq
from channels.receivers.noise import Noise, Parts, draw_links, snr_db
from channels.result import ChannelResult, empty_result


class D2DReceiver(Receiver):
    """``[N, d]``, row m = the slot-m estimate ``Σ_n w_{n,m} a_{n→m} v_n`` (``a_{m→m} = 1``) with
    weights q renormalised over slot m's active links, plus UE m's own noise at
    ``c/(N_act,m·√ρ_m·μ)``. Any power-control law works, truncated inversion included (a link below
    ``h_th`` stays silent in that slot); ρ_m follows ``channel.rho`` slot by slot."""

    per_ue = True
    downlink = False

    def noise_mode(self) -> str:
        return "per_ue"

    def slots(self, n: int) -> int:
        return n

    def link_shape(self, n: int) -> tuple[int, ...]:
        return (n, n)

    def receive(self, parts: Parts, V: torch.Tensor, q: torch.Tensor, available: torch.Tensor,
                seed: int, round: int) -> ChannelResult:
        c = self.config
        n, d = V.shape
        h, h_est = draw_links(parts, (n, n), seed, round, V.dtype)
        a, ok, amp2 = parts.power_control.gains(h, h_est, h_th=c.h_th, mu=parts.mu, real_dtype=V.dtype)
        own = torch.eye(n, dtype=torch.bool)
        a = torch.where(own, torch.ones_like(a), a)
        links = available.unsqueeze(1) & (ok | own)  # [transmitter n, slot m]
        dropouts = int((available.unsqueeze(1) & ~ok & ~own).sum())
        qa = torch.where(links, q.unsqueeze(1), torch.zeros_like(a))
        n_act, total = links.sum(0), qa.sum(0)
        if not bool((total > 0).any()):
            return empty_result(V, available.clone(), dropouts, True)
        W = qa / total.clamp_min(torch.finfo(qa.dtype).tiny)
        u_norm_sq = payload_norm_sq(V).cpu().unsqueeze(1) * (n_act * W) ** 2
        sent = links & ~own  # own vectors are added locally, not transmitted
        energy_unit = torch.where(sent, amp2 * u_norm_sq, torch.zeros_like(u_norm_sq))
        rho = compute_rho_slots(c.rho, c.power, c.h_th, u_norm_sq, energy_unit, sent)
        gain = n_act * rho.sqrt() * parts.mu
        energy = rho * energy_unit
        signal = (W * a).T.to(V.device) @ V
        scale = torch.where(gain > 0, parts.interference.scale / gain.clamp_min(1e-300), torch.zeros_like(gain))
        noise = Noise.draw(parts.interference, seed, round, n, d, V.dtype, V.device, per_ue_scale=scale)
        return ChannelResult(
            estimate=noise.add_to(signal, n, per_ue=True), active=available.clone(), dropouts=dropouts,
            noise_scale=noise.scale(parts.interference.alpha), tx_energy=float(energy.sum()),
            tx_energy_max=float(energy.max()) / c.power, snr_db=snr_db(signal, noise, parts.interference.alpha),
            **noise.fields(d, V.dtype, V.device), rho=float(rho.median()), gain=float(gain.median()),
            n_active=int(available.sum()))
