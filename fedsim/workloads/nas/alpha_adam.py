"""Adam on GDAS's architecture weights α, its state kept on the UE. ``cfg`` is a ``GdasConfig``."""

from __future__ import annotations

from typing import Any

import torch


class AlphaAdam:
    """Adam on α with L2 ``arch_weight_decay`` added to the gradient; its moments ``gdas.m``/
    ``gdas.v`` and step count ``gdas.t`` live in the UE's ``state`` between rounds."""

    def __init__(self, m: torch.Tensor, v: torch.Tensor, t: int, cfg: Any) -> None:
        self.m, self.v, self.t, self.cfg = m, v, t, cfg

    @classmethod
    def load(cls, state: dict[str, torch.Tensor], dim: int, cfg: Any, device: torch.device) -> AlphaAdam:
        m = state.get("gdas.m", torch.zeros(dim, device=device)).clone()
        v = state.get("gdas.v", torch.zeros(dim, device=device)).clone()
        return cls(m, v, int(state["gdas.t"]) if "gdas.t" in state else 0, cfg)

    def step(self, a: torch.Tensor, g: torch.Tensor) -> None:
        """One Adam step on the flat α view ``a`` (in place) with gradient ``g``."""
        (b1, b2), lam = self.cfg.arch_betas, self.cfg.arch_weight_decay
        g = g + lam * a
        self.t += 1
        self.m.mul_(b1).add_(g, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        a.sub_(self.cfg.arch_lr * (self.m / (1 - b1**self.t)) / ((self.v / (1 - b2**self.t)).sqrt() + 1e-8))

    def store(self, state: dict[str, torch.Tensor]) -> None:
        state.update({"gdas.m": self.m, "gdas.v": self.v, "gdas.t": torch.tensor([self.t], dtype=torch.float64)})
