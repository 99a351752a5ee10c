"""Digital FedAvg (``server-digital``), error-free; FedSGD when K = 1.

The server holds the global model. Each round it samples UEs with a seeded generator, they run
K local steps from the broadcast model and transmit a model, an update or a gradient; the server
aggregates through its receiver (exact weighted averaging for the digital receiver, weights q_n
renormalised over the UEs that replied) and applies the estimate. ``server-ota``
(:mod:`strategies.server_ota`) is the same algorithm through an analog receiver. With
``overlap.enabled`` the UEs keep their own models and the exchange runs on the medium of
:mod:`strategies.medium` instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp.strategy import FedAvg

from channels import ChannelResult
from strategies.base import (
    Exchange,
    HeldModels,
    RoundResult,
    ServerSetup,
    ServerSide,
    Strategy,
    UEContext,
    UEOutput,
)
from strategies.common import (
    ARRAYS,
    CONFIG,
    Failure,
    sample_ues,
    split_finite,
    split_replies,
    to_record,
    transmissions,
)
from strategies.medium import Medium, medium_ue_round
from strategies.updates import TRANSMITS, apply_estimate, noise_factor_of, stack_rows, transmit_scaled, ue_transmit


class GlobalModelServer(FedAvg):
    """A server holding the global model, aggregating through ``setup.channel``'s receiver.

    Each round it samples ``max(1, round(fraction·N))`` UEs (stream "sampling"), sends them the
    model, and applies the channel's estimate of Σ q_n v_n over the UEs whose transmission is
    finite; if every UE drops out the model stays."""

    lag = 0

    def __init__(self, setup: ServerSetup, *, transmit: str, fraction: float) -> None:
        n = len(setup.node_of_ue)
        super().__init__(fraction_train=fraction, fraction_evaluate=1.0, min_train_nodes=1, min_available_nodes=n)
        if transmit not in TRANSMITS:
            raise ValueError(f"transmit must be one of {TRANSMITS}, got {transmit!r}")
        self.setup, self.transmit = setup, transmit
        self.weights = setup.weights.to(torch.float64)
        self.ue_of_node = {v: k for k, v in setup.node_of_ue.items()}
        self.model = setup.init.to(setup.device)

    def initial_models(self) -> HeldModels:
        return HeldModels(self.model.unsqueeze(0))

    def configure(self, server_round: int, config: ConfigRecord, *, report: bool, flush: bool) -> Exchange:
        s = self.setup
        ues = sample_ues(s.seed, server_round, len(s.node_of_ue), self.fraction_train)
        config["server-round"] = server_round
        record = RecordDict({ARRAYS: to_record(self.model), CONFIG: config})
        return Exchange([Message(record, s.node_of_ue[u], MessageType.TRAIN) for u in ues], set(ues))

    def aggregate(self, server_round: int, replies: Iterable[Message]) -> RoundResult:
        s = self.setup
        good, bad = split_replies(replies, self.ue_of_node)
        tx, non_finite = split_finite(transmissions(good))
        bad += [Failure(r.ue, s.node_of_ue[r.ue], "non-finite vector") for r in non_finite]
        result = RoundResult(participants=[r.ue for r in tx], failures=bad)
        if tx:
            v_hat, result.channel = self.estimate(server_round, {r.ue: r.vectors[0] for r in tx})
            if v_hat is not None:
                eta = s.lr((server_round - 1) * s.steps)
                self.model = apply_estimate(self.model, v_hat, self.transmit, eta)
        result.models = HeldModels(self.model.unsqueeze(0))
        return result

    def estimate(self, server_round: int, transmitted: dict[int, torch.Tensor]
                 ) -> tuple[torch.Tensor | None, ChannelResult | None]:
        """The receiver's estimate of Σ q_n v_n over the UEs that transmitted (``{ue: v_n}``), and the
        channel's result; the estimate is None when every UE dropped out (the model stays). A
        strategy with another aggregation overrides this."""
        s = self.setup
        V, available = stack_rows(transmitted, len(s.node_of_ue), self.model)
        res = transmit_scaled(s.channel, V, self.weights, s.seed, server_round, available,
                              noise_factor_of(s.noise_factor, server_round))
        return (res.estimate if int(res.active.sum()) > 0 else None), res

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model = state["model"].to(self.setup.device)


# ----------------------------------------------------------------------------- the strategy


class ServerDigital(Strategy):
    """Error-free FedAvg (``transmit = "auto"`` sends models), or with ``overlap.enabled`` the
    DGA-style overlapped schedule with exact aggregation."""

    receiver = "digital"

    def default_transmit(self) -> str:
        return super().default_transmit() if self.params.overlap.enabled else "model"

    def server(self, setup: ServerSetup) -> ServerSide:
        if self.holds_ue_models:
            return Medium(setup, fraction=self.params.fraction)
        return GlobalModelServer(setup, transmit=self.transmit, fraction=self.params.fraction)

    def ue_round(self, ctx: UEContext, received: list[torch.Tensor], config: ConfigRecord) -> UEOutput:
        if self.holds_ue_models:
            return medium_ue_round(ctx, received, config, transmit=self.transmit, mode="accumulate",
                                   overlap=self.params.overlap)
        (w,) = received
        return UEOutput(ue_transmit(w, ctx.grad, ctx.first_step, ctx.steps, ctx.lr, self.transmit, ctx.train))


ServerDigital.population_family = ServerDigital  # strategies.population runs its UE rule over all UEs

__all__ = ["GlobalModelServer", "ServerDigital"]
