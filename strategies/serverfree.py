"""Server-free analog FL (``serverfree-relay``, ``serverfree-d2d``, ``serverfree-d2d-ideal``): no
global model.

Every UE applies its **own** matched-filter output of the superposition to its own model. The
relay variant hears the superposition through an AP that only amplifies and forwards (common
uplink noise plus each UE's own downlink noise and fading); the D2D variant gives every UE a
receive slot in which the others pre-equalise for it (N slots per round); the idealised D2D
variant co-phases one broadcast to every receiver at once, an unrealisable upper bound. The medium, the UE rule
and the overlapped schedule are :mod:`strategies.medium`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from flwr.app import ConfigRecord
from pydantic import Field

from strategies.base import LrFn, ServerSetup, ServerSide, Strategy, StrategyParams, UEContext, UEOutput
from strategies.medium import Medium, medium_ue_round, training_start


class ServerFreeParams(StrategyParams):
    """Server-free options: ``mode = "accumulate"`` (UEs transmit gradients or updates and add
    the estimate to their model) or ``"reset"`` (UEs transmit models and replace theirs by the
    estimate)."""

    mode: Literal["accumulate", "reset"] = Field("accumulate", description="'accumulate' or 'reset'")


class ServerFreeRelay(Strategy):
    """Server-free FL through an AP acting as a non-computing analog relay."""

    Params = ServerFreeParams
    receiver = "relay"
    serverfree = True

    @property
    def resets_models(self) -> bool:
        return self.params.mode == "reset"

    def default_transmit(self) -> str:
        return "model" if self.resets_models else super().default_transmit()

    def check(self) -> None:
        super().check()
        p = self.params
        if p.mode == "reset" and p.transmit not in ("auto", "model"):
            raise ValueError("strategy.mode='reset' transmits models: use strategy.transmit='model' or 'auto'")
        if p.transmit == "model" and p.mode == "accumulate":
            raise ValueError("strategy.mode='accumulate' cannot transmit models: use 'gradient' or 'update'")

    def server(self, setup: ServerSetup) -> ServerSide:
        return Medium(setup, fraction=self.params.fraction)

    @property
    def supports_batched(self) -> str | None:
        if self.params.overlap.enabled:
            return super().supports_batched
        return None  # gradient, update and model: training_start gives each UE's start model

    def training_start(self, records: dict[str, dict[str, torch.Tensor]], received: list[torch.Tensor],
                       config: ConfigRecord, init: Callable[[], torch.Tensor], lr: LrFn) -> torch.Tensor | None:
        """The UE's own model after the estimates due before step 0
        (:func:`strategies.medium.training_start`, the merge :func:`strategies.medium.ue_round` uses)."""
        return training_start(records, received, config, init, transmit=self.transmit, mode=self.params.mode, lr=lr)

    def ue_round(self, ctx: UEContext, received: list[torch.Tensor], config: ConfigRecord) -> UEOutput:
        return medium_ue_round(ctx, received, config, transmit=self.transmit, mode=self.params.mode,
                               overlap=self.params.overlap)


ServerFreeRelay.population_family = ServerFreeRelay  # strategies.population runs its UE rule over all UEs


class ServerFreeD2D(ServerFreeRelay):
    """Server-free FL by D2D: one receive slot per UE, in which the others pre-equalise for it."""

    receiver = "d2d"


class ServerFreeD2DIdeal(ServerFreeRelay):
    """Server-free FL by an idealised one-slot D2D broadcast co-phased to every receiver at once:
    an unrealisable upper bound, kept for comparison."""

    receiver = "d2d-ideal"
