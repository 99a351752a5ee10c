"""Analog over-the-air aggregation and the digital baseline.

``Channel(ChannelConfig(...), receiver="server").transmit(V, q, seed=, round=)`` turns the
transmitted matrix ``V [N, d]`` (row n = UE n's vector) and weights ``q [N]`` into estimates of
``Σ q_n v_n``:

    v̂ = Σ_{n active} q_n a_n v_n / Σ_{n active} q_n + ξ / gain,    gain = N_act·√ρ_t·μ

(``a_n = 1`` for perfect inversion, ``|h_n|/μ_h`` for phase-only; μ = 1, μ_h or E[Re h]).
Physically UE n sends ``p_n·u_n`` with ``u_n = N_act·q̃_n·v_n`` (``q̃`` = q renormalised over
active UEs), so equal weights mean ``u_n = v_n`` and ``c_eff = c/(N_act √ρ_t)``.

Randomness (all from :mod:`channels.rng`, so results depend only on (seed, round, inputs)):

- fading (and CSI error, drawn after it): ``torch_generator(seed, "fading", round)``;
- common interference ``[d]`` (server, relay uplink): ``torch_generator(seed, "interference",
  round)``; the server and a relay in "common" mode run the same code on the same generator, so
  every relay row equals the server estimate exactly;
- per-UE interference ``[N, d]`` (relay downlink, D2D): one generator for the whole block,
  ``torch_generator(seed, "interference", round, ue=PER_UE_KEY)`` (a reserved key, no real UE),
  so the per-UE noise is the same in "per_ue" and "common+per_ue" modes;
- digital quantisation: ``torch_generator(seed, "quantization", round)``.
"""

from __future__ import annotations

import torch

from channels.config import ChannelConfig
from channels.fading import FADING, FadingLaw
from channels.interference import INTERFERENCE, InterferenceModel
from channels.interference.none import NoInterference
from channels.power import POWER_CONTROL, PowerControl
from channels.receivers import RECEIVERS, Receiver
from channels.result import ChannelResult


class Channel:
    """A channel as one receiver hears it; :meth:`transmit` runs one round of aggregation.

    Args:
        config: the channel options.
        receiver: the receiver's registry name ("server", "relay", "d2d", "digital"); the strategy
            decides it.

    Raises ValueError for parts that cannot work together (say, inversion for a D2D broadcast).
    """

    def __init__(self, config: ChannelConfig | None = None, receiver: str = "server") -> None:
        self.config = config if config is not None else ChannelConfig()
        c = self.config
        self.receiver: Receiver = RECEIVERS.get(receiver)(c)
        self.fading: FadingLaw = FADING.get(c.fading.name)(c.fading)
        self.power_control: PowerControl = POWER_CONTROL.get(c.power_control.name)(c.power_control)
        if self.receiver.analog:
            self.power_control.check(self.fading)
            self.receiver.check(self.power_control)
        scale = c.interference_level()
        self.interference: InterferenceModel = (
            INTERFERENCE.get(c.interference.name)(c.interference, scale) if scale > 0 else NoInterference())
        self.alpha: float = self.interference.alpha
        self.mu: float = self.power_control.decoding_gain(self.fading)
        self.interference_mode: str = self.receiver.noise_mode()

    @staticmethod
    def _inputs(V, q, available) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(V, torch.Tensor) or V.dim() != 2:
            raise ValueError("V must be a [N, d] torch tensor (one row per UE)")
        if V.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"V must be float32 or float64, got {V.dtype}")
        n = V.shape[0]
        if q is None:
            q = torch.full((n,), 1.0 / n, dtype=V.dtype)
        q = torch.as_tensor(q, dtype=V.dtype, device="cpu")
        if q.shape != (n,) or bool((q < 0).any()) or not bool(torch.isfinite(q).all()):
            raise ValueError(f"q must be [N]={n} finite non-negative weights, got shape {tuple(q.shape)}")
        if available is None:
            available = torch.ones(n, dtype=torch.bool)
        available = torch.as_tensor(available, dtype=torch.bool, device="cpu")
        if available.shape != (n,):
            raise ValueError(f"available must be a bool [N]={n} mask")
        return V, q, available

    def transmit(self, V: torch.Tensor, q: torch.Tensor | None = None, *, seed: int, round: int,
                 available: torch.Tensor | None = None) -> ChannelResult:
        """One round: UEs send the rows of ``V`` (``[N, d]``) with weights ``q`` (``[N]``, any
        positive total; None = uniform); ``available`` (bool ``[N]``) excludes failed UEs.
        Returns estimates in ``V``'s dtype on ``V``'s device. If no UE is active the estimate is
        zeros. Per-UE quantities (fading, gains, ``active``) stay on CPU; random draws come from
        CPU generators and are moved to ``V``'s device, so every device sees the same numbers."""
        V, q, available = self._inputs(V, q, available)
        return self.receiver.receive(self, V, q, available, seed, round)

    def latency(self, d: int, n: int) -> float:
        """τ_cm [s] of one exchange through this channel's receiver."""
        return self.receiver.latency(d, n)
