"""An AP as a non-computing analog relay: it amplifies and forwards the superposition; every UE
matched-filters the downlink with its own noise."""

from __future__ import annotations

import torch

from channels.receivers.base import Receiver
from channels.receivers.noise import DOWNLINK_KEY, Noise, Parts
from channels.rng import torch_generator


class RelayReceiver(Receiver):
    """``[N, d]``: the common uplink estimate forwarded to every UE.

    ``channel.interference_mode`` says which noise the UEs hear (default "common+per_ue"):
    "common" is the uplink noise at the AP alone (an ideal downlink); with a per-UE part, UE m
    hears the forwarded signal through its own downlink fading ``g_m`` (the fading law's draw,
    stream "fading" with a reserved UE key) and equalises it, so its own noise, of scale
    ``c·downlink_scale/gain``, is enhanced by ``1/|g_m|``; below ``channel.downlink_h_th`` the UE
    cannot decode and misses the round's estimate. Without fading ``g_m = 1``: a constant scale.
    """

    per_ue = True
    hops = 2
    forwards = True

    def noise_mode(self) -> str:
        return self.config.interference_mode or "common+per_ue"

    def ignored(self) -> set[str]:
        ignored = super().ignored() - {"interference_mode", "downlink_scale", "downlink_h_th"}
        if self.config.interference.name == "none":  # no noise to split between the links
            ignored |= {"interference_mode", "downlink_scale"}
        if self.noise_mode() == "common":
            ignored |= {"downlink_scale", "downlink_h_th"}
        elif self.config.fading.name == "none":
            ignored.add("downlink_h_th")
        return ignored

    def noise(self, parts: Parts, gain: float, seed: int, round: int, n: int, d: int, real: torch.dtype,
              device: torch.device) -> Noise:
        mode = self.noise_mode()
        common = gain if mode in ("common", "common+per_ue") else None
        if mode == "common":
            return Noise.draw(parts.interference, seed, round, n, d, real, device, common_gain=common)
        scale = parts.interference.scale * self.config.downlink_scale / gain
        if self.config.fading.name == "none":
            return Noise.draw(parts.interference, seed, round, n, d, real, device, common_gain=common,
                              per_ue_scale=scale)
        g = parts.fading.sample((n,), torch_generator(seed, "fading", round, ue=DOWNLINK_KEY), torch.float64).abs()
        delivered = g >= self.config.downlink_h_th
        per_ue = torch.where(delivered, scale / g.clamp_min(1e-300), torch.zeros_like(g))
        return Noise.draw(parts.interference, seed, round, n, d, real, device, common_gain=common,
                          per_ue_scale=per_ue, delivered=delivered)
