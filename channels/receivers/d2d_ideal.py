"""An idealised D2D broadcast: every UE transmits once and every other UE hears it co-phased.

Phase-only control sets ``a_{n→m} = |h_{n→m}|/μ`` for every receiver m at once, which one
single-antenna broadcast cannot do: this is an unrealisable upper bound on D2D, kept to compare
with. The realisable scheme is :mod:`channels.receivers.d2d`."""

from __future__ import annotations

import torch

from channels.power.base import PowerControl
from channels.receivers.base import Receiver
from channels.receivers.noise import Noise, Parts


class D2DIdealReceiver(Receiver):
    """``[N, d]``, row m = ``Σ_n w_n a_{n→m} v_n`` with ``a_{m→m} = 1``; per-UE noise only; one slot."""

    per_ue = True
    downlink = False

    def check(self, power: PowerControl) -> None:
        if power.single_link:
            raise ValueError("channel.power_control='inversion' cannot serve every receiver of a one-slot D2D "
                             "broadcast (transmitter n has N-1 links h_{n->m}); use 'phase' or 'none', or the "
                             "slotted D2D scheme (strategy serverfree-d2d)")

    def noise_mode(self) -> str:
        return "per_ue"  # every UE listens with its own receiver: no common term

    def link_shape(self, n: int) -> tuple[int, ...]:
        return (n, n)

    def admit(self, a: torch.Tensor, ok: torch.Tensor, amp2: torch.Tensor, available: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        a = a.clone()
        a.fill_diagonal_(1.0)  # each UE adds its own vector locally
        return a, available.clone(), torch.ones(a.shape[0], dtype=amp2.dtype), 0

    def superpose(self, V: torch.Tensor, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        # row m: Σ_n w_n a_{n→m} v_n  =  (w ∘ A)ᵀ V   ([N, N] @ [N, d])
        return (w.unsqueeze(1) * a).T.to(V.device) @ V

    def noise(self, parts: Parts, gain: float, seed: int, round: int, n: int, d: int, real: torch.dtype,
              device: torch.device) -> Noise:
        return Noise.draw(parts.interference, seed, round, n, d, real, device,
                          per_ue_scale=parts.interference.scale / gain)
