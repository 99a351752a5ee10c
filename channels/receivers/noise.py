"""What every analog receiver shares: the round's link draws, the interference it adds after its
normalisation, and the SNR of the decoded aggregate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from channels.config import ChannelConfig
from channels.fading import FadingLaw, estimate_csi
from channels.interference import InterferenceModel
from channels.power import PowerControl
from channels.rng import torch_generator
from channels.stats import geometric_power

PER_UE_KEY = 2**31 - 2  # rng "ue" slot reserved for the per-UE interference block
DOWNLINK_KEY = 2**31 - 3  # rng "ue" slot reserved for the relay's downlink fading


class Parts(Protocol):
    """The channel's parts a receiver uses (:class:`channels.Channel` provides them)."""

    config: ChannelConfig
    fading: FadingLaw
    power_control: PowerControl
    interference: InterferenceModel
    mu: float


def draw_links(parts: Parts, shape: tuple[int, ...], seed: int, round: int, real: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(h, ĥ)``: the round's fading and the transmitters' CSI (None: perfect), both drawn from
    ``torch_generator(seed, "fading", round)``, the CSI error after the fading."""
    g = torch_generator(seed, "fading", round)
    h = parts.fading.sample(shape, g, dtype=real)
    err = parts.config.csi_error
    return h, (estimate_csi(h, err, g) if err > 0 else None)


@dataclass
class Noise:
    """The interference of one round after the receiver's normalisation.

    ``common`` ``[d]`` (one draw everyone hears) and ``per_ue`` ``[N, d]`` (each UE's own), with
    their per-coordinate SαS scales; ``per_ue_scale`` may be a ``[N]`` tensor of per-UE scales.
    ``delivered``: UEs that received the estimate (None: all)."""

    common: torch.Tensor | None = None
    per_ue: torch.Tensor | None = None
    common_scale: float = 0.0
    per_ue_scale: float | torch.Tensor = 0.0
    delivered: torch.Tensor | None = None

    @classmethod
    def draw(cls, model: InterferenceModel, seed: int, round: int, n: int, d: int, real: torch.dtype,
             device: torch.device, *, common_gain: float | None = None, per_ue_scale: float | torch.Tensor = 0.0,
             delivered: torch.Tensor | None = None) -> Noise:
        """Draws from ``model``'s stream: the common ``[d]`` (divided by ``common_gain``; None: no
        common part) keyed by the round, the per-UE ``[N, d]`` block (at ``per_ue_scale``) by the
        round and a reserved UE key, so it is the same with or without a common part. A zero scale
        draws nothing."""
        out = cls(delivered=delivered)
        if model.scale > 0 and common_gain is not None:
            g = torch_generator(seed, model.stream, round)
            out.common = model.sample((d,), g, real).div_(common_gain).to(device)
            out.common_scale = model.scale / common_gain
        scales = torch.as_tensor(per_ue_scale, dtype=torch.float64)
        if model.scale > 0 and bool((scales > 0).any()):
            g = torch_generator(seed, model.stream, round, ue=PER_UE_KEY)
            factor = (scales / model.scale).to(real)
            block = model.sample((n, d), g, real)
            block = block.mul_(factor.unsqueeze(1)) if factor.dim() else block.mul_(float(factor))
            out.per_ue = block.to(device)
            out.per_ue_scale = per_ue_scale
        return out

    def add_to(self, signal: torch.Tensor, n: int, *, per_ue: bool) -> torch.Tensor:
        """``signal`` plus the noise: ``[d]``, or ``[N, d]`` for a receiver that serves every UE."""
        estimate = signal + self.common if self.common is not None else signal
        if per_ue and estimate.dim() == 1:
            estimate = estimate.unsqueeze(0).expand(n, -1).clone()
        if self.per_ue is not None:  # not in place: ``estimate`` may still be the caller's signal
            estimate = estimate + self.per_ue
        return estimate

    def per_ue_median(self) -> float:
        """The median per-UE scale over the UEs that received an estimate (a missed one has none)."""
        s = self.per_ue_scale
        if not isinstance(s, torch.Tensor):
            return float(s)
        heard = s if self.delivered is None else s[self.delivered.to(s.device)]
        return float(heard.median()) if heard.numel() else 0.0

    def scale(self, alpha: float) -> float:
        """The total per-coordinate scale on an estimate, ``(c_common^α + c_per_ue^α)^{1/α}`` (the
        per-UE part at its median where UEs differ)."""
        a, b = self.common_scale, self.per_ue_median()
        if a == 0.0 or b == 0.0:
            return a + b
        return (a**alpha + b**alpha) ** (1.0 / alpha)

    def fields(self, d: int, real: torch.dtype, device: torch.device) -> dict:
        """The noise fields of a ChannelResult."""
        actual = self.common if self.common is not None else self.per_ue
        return dict(noise=actual if actual is not None else torch.zeros(d, dtype=real, device=device),
                    noise_common=self.common, noise_per_ue=self.per_ue, noise_scale_common=self.common_scale,
                    noise_scale_per_ue=self.per_ue_scale, delivered=self.delivered)


def snr_db(signal: torch.Tensor, noise: Noise, alpha: float) -> float | None:
    """The decoded signal's power per entry over the noise's squared geometric power, in dB (None
    without noise: unbounded)."""
    s0 = geometric_power(alpha, noise.scale(alpha))
    if s0 <= 0:
        return None
    power = float(signal.to(torch.float64).square().mean())
    return 10.0 * math.log10(power / s0**2) if power > 0 else -math.inf
