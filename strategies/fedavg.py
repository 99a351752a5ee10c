"""(a) Digital FedAvg, error-free (FedSGD when K = 1). Reference: ota-fl-model.md §3(a).

Server side: a subclass of Flower's ``FedAvg`` that samples UEs with a seeded generator and
averages the returned models in partition-id order with weights q_n (renormalised over the UEs
that replied). UE side: ``local_sgd``, K plain SGD steps from the broadcast model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.common import (
    ARRAYS,
    CONFIG,
    Failure,
    Reply,
    sample_ues,
    split_finite,
    split_replies,
    to_record,
    weighted_average,
)

GradFn = Callable[[torch.Tensor, int], torch.Tensor]  # (w, global step) -> g
LrFn = Callable[[int], float]


def local_sgd(w: torch.Tensor, grad: GradFn, first_step: int, steps: int, lr: LrFn) -> torch.Tensor:
    """UE rule: w <- w - eta_s g(w, s) for s = first_step .. first_step + steps - 1. Returns a copy."""
    w = w.clone()
    for s in range(first_step, first_step + steps):
        w.sub_(grad(w, s), alpha=lr(s))
    return w


class DigitalFedAvg(FedAvg):
    """Error-free FedAvg over flat model vectors.

    Args:
        weights: q_n for every UE, ``[N]``.
        node_of_ue: partition id -> Flower node id.
        seed: experiment seed (drives the UE sampling stream).
        fraction: share of UEs sampled per round (1.0 = full participation).
    """

    def __init__(self, *, weights: torch.Tensor, node_of_ue: dict[int, int], seed: int, fraction: float = 1.0):
        n = len(node_of_ue)
        super().__init__(fraction_train=fraction, fraction_evaluate=1.0, min_train_nodes=1,
                         min_available_nodes=n)
        self.weights = weights.to(torch.float64)
        self.node_of_ue = dict(node_of_ue)
        self.ue_of_node = {v: k for k, v in node_of_ue.items()}
        self.seed = seed
        self.last_failures: list[Failure] = []
        self.last_participants: list[int] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        ues = sample_ues(self.seed, server_round, len(self.node_of_ue), self.fraction_train)
        config["server-round"] = server_round
        record = RecordDict({ARRAYS: arrays, CONFIG: config})
        return [Message(record, self.node_of_ue[u], MessageType.TRAIN) for u in ues]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        good, bad = split_replies(replies, self.ue_of_node)
        good, non_finite = split_finite(good)
        bad += [Failure(r.ue, self.node_of_ue[r.ue], "non-finite model") for r in non_finite]
        self.last_failures = bad
        self.last_participants = [r.ue for r in good]
        if not good:
            return None, None
        models = torch.stack([r.vectors[0] for r in good])
        q = self.weights[[r.ue for r in good]]
        new = weighted_average(models.to(torch.float64), q).to(models.dtype)
        return to_record(new), _mean_metrics(good, q)


def _mean_metrics(replies: list[Reply], q: torch.Tensor) -> MetricRecord:
    keys = set.intersection(*(set(r.metrics) for r in replies)) - {"partition-id", "num-examples"}
    qn = (q / q.sum()).tolist()
    return MetricRecord({k: sum(w * r.metrics[k] for w, r in zip(qn, replies, strict=True)) for k in sorted(keys)})
