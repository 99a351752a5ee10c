"""(b) Server-based analog over-the-air FedAvg. Reference: ota-fl-model.md §3(b), §2.4.

UEs transmit v_n (gradient, model update or model) simultaneously; the server's matched
filter returns one noisy estimate of sum_n q_n v_n (``channels`` ``server`` receiver), applies
it to the global model and broadcasts the model error-free. K = 1 with gradients is the
"Revisiting" algorithm; K > 1 with updates is the COTAF-style generalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from channels import Channel, ChannelResult
from strategies.common import Failure, from_record, split_finite, split_replies, to_record
from strategies.fedavg import DigitalFedAvg, GradFn, LrFn, local_sgd

TRANSMITS = ("gradient", "update", "model")


TrainFn = Callable[[torch.Tensor, int, int], torch.Tensor]  # (w, first step, steps) -> new model


def ue_transmit(w: torch.Tensor, grad: GradFn, first_step: int, steps: int, lr: LrFn, transmit: str,
                train: TrainFn | None = None) -> torch.Tensor:
    """UE rule: the vector v_n a UE puts on the air, ``[d]`` (§2.4 a/b/c). ``train`` replaces
    plain local SGD for workloads with their own local training."""
    if transmit == "gradient":
        return grad(w, first_step)
    x = train(w, first_step, steps) if train is not None else local_sgd(w, grad, first_step, steps, lr)
    return x - w if transmit == "update" else x


def apply_estimate(w: torch.Tensor, v_hat: torch.Tensor, transmit: str, eta: float) -> torch.Tensor:
    """Receiver-side update with the estimate v_hat of sum_n q_n v_n."""
    if transmit == "gradient":
        return w - eta * v_hat
    if transmit == "update":
        return w + v_hat
    return v_hat.clone()


def stack_rows(rows: dict[int, torch.Tensor], num_ues: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, d]`` matrix on ``like``'s device with the given rows (zeros elsewhere), and the CPU bool
    mask of present rows."""
    V = torch.zeros(num_ues, like.numel(), dtype=like.dtype, device=like.device)
    mask = torch.zeros(num_ues, dtype=torch.bool)
    if rows:
        idx = torch.tensor(sorted(rows))
        V[idx] = torch.stack([rows[i] for i in sorted(rows)]).to(like.device)
        mask[idx] = True
    return V, mask


NoiseFactor = Callable[[int], float]  # round -> f_r: the channel's noise is scaled by f_r


def transmit_scaled(channel: Channel, V: torch.Tensor, q: torch.Tensor, seed: int, round: int,
                    available: torch.Tensor, factor: float) -> ChannelResult:
    """Run the channel with power scaling rho_t grown by 1/factor^2: UEs send V/factor and the
    receiver rescales by factor, so the signal is unchanged and the noise is scaled by factor."""
    if factor == 1.0:
        return channel.transmit(V, q, seed=seed, round=round, available=available)
    res = channel.transmit(V / factor, q, seed=seed, round=round, available=available)
    res.estimate = res.estimate * factor
    res.noise_scale *= factor
    res.noise_scale_common *= factor
    res.noise_scale_per_ue *= factor
    return res


class ServerOTA(DigitalFedAvg):
    """Server analog OTA: FedAvg whose aggregation is a ``channels.Channel`` (server receiver).

    Args (beyond DigitalFedAvg's):
        channel: the channel; its receiver must return one ``[d]`` estimate.
        transmit: "gradient" | "update" | "model".
        lr: step size by global step (used to apply gradient estimates).
        steps_per_round: K.
        device: where the global model and the ``[N, d]`` channel work live (None: CPU).
    """

    def __init__(self, *, channel: Channel, transmit: str, lr: LrFn, steps_per_round: int,
                 noise_factor: NoiseFactor | None = None, device: torch.device | None = None, **kwargs):
        super().__init__(**kwargs)
        self.device = device  # where the [N, d] channel work runs (None: CPU)
        if transmit not in TRANSMITS:
            raise ValueError(f"transmit must be one of {TRANSMITS}, got {transmit!r}")
        self.channel = channel
        self.transmit = transmit
        self.lr = lr
        self.K = steps_per_round
        self.noise_factor = noise_factor
        self.model: torch.Tensor | None = None
        self.last_channel: ChannelResult | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        (self.model,) = from_record(arrays, self.device)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        assert self.model is not None, "configure_train must run first"
        good, bad = split_replies(replies, self.ue_of_node)
        good, non_finite = split_finite(good)
        bad += [Failure(r.ue, self.node_of_ue[r.ue], "non-finite vector") for r in non_finite]
        self.last_failures, self.last_participants = bad, [r.ue for r in good]
        if not good:
            self.last_channel = None
            return None, None
        V, available = stack_rows({r.ue: r.vectors[0] for r in good}, len(self.node_of_ue), self.model)
        res = transmit_scaled(self.channel, V, self.weights, self.seed, server_round, available,
                              self.noise_factor(server_round) if self.noise_factor else 1.0)
        self.last_channel = res
        if int(res.active.sum()) == 0:  # everyone dropped out: the model stays
            return to_record(self.model), None
        eta = self.lr((server_round - 1) * self.K)
        return to_record(apply_estimate(self.model, res.estimate, self.transmit, eta)), None
