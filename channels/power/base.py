"""The power-control interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from channels.fading.base import FadingLaw
from channels.registry import ComponentParams


class PowerControl(ABC):
    """How a UE precodes for its link(s), vectorised over any shape of ``h`` (``[N]`` or ``[N, N]``)."""

    Params: ClassVar[type[ComponentParams]] = ComponentParams
    #: True when the precoder is built for one receiver's link (a broadcast to N-1 receivers
    #: cannot use it).
    single_link: ClassVar[bool] = False

    def __init__(self, params: ComponentParams) -> None:
        self.params = params

    @abstractmethod
    def decoding_gain(self, fading: FadingLaw) -> float:
        """μ, the receiver's known normaliser: 1 (inversion), ``E|h|`` (phase-only), ``E[Re h]`` (none)."""

    def check(self, fading: FadingLaw) -> None:  # noqa: B027 - optional hook; most laws work with any fading
        """Raise ValueError when this law cannot work with ``fading``."""

    @abstractmethod
    def gains(self, h: torch.Tensor, h_est: torch.Tensor | None, *, h_th: float, mu: float,
              real_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(a, ok, amp2)`` for complex ``h``: decoded real gains ``a`` (0 where dropped), bool ``ok``
        (not dropped), ``amp2 = |p|²/ρ`` (transmit amplitude squared per unit ρ; 0 where dropped).
        ``h_est`` is the transmitter's CSI; None means perfect CSI."""
