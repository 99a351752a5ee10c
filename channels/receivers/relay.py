"""An AP as a non-computing analog relay: it amplifies and forwards the superposition; every UE
matched-filters the downlink with its own noise."""

from __future__ import annotations

from channels.receivers.base import Receiver


class RelayReceiver(Receiver):
    """``[N, d]``: the common uplink estimate, plus per-UE downlink noise scaled by
    ``channel.downlink_scale`` (mode ``channel.interference_mode``, default "common+per_ue")."""

    per_ue = True
    hops = 2
    forwards = True

    def noise_mode(self) -> str:
        return self.config.interference_mode or "common+per_ue"

    def per_ue_noise_factor(self) -> float:
        return self.config.downlink_scale
