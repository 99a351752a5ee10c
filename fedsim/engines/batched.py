"""The inline engine's batched path (``engine.batched = true``): one round's local SGD for every
UE at once.

Before :class:`~fedsim.engines.inline.InlineGrid` hands a round's train messages to the ClientApp
one by one, :meth:`BatchTrainer.attach` stacks the received models ``[M, d]``, runs the K local SGD
steps of all M UEs through the workload's vectorised ``stochastic_grad_many`` (a batched matmul
for ``synthetic-logreg`` / ``quadratic``, ``torch.func.vmap`` for the image CNNs) and attaches
each UE's trained model to its own message (record ``fedsim.prefetched``). Each ClientApp call then
does everything it always does (faults, transmit rule, metrics, reply) but takes the attached
model instead of training, once it has checked that it starts from the message's own model and
steps. The numbers equal the per-UE path to floating-point tolerance, not bit for bit (the batched
kernels sum in another order), which is why the path is opt-in.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import Message, MessageType, RecordDict

from fedsim.apps.client import PREFETCHED
from fedsim.workloads import Workload
from strategies.base import LrFn
from strategies.common import ARRAYS, CONFIG, from_record, to_record


class BatchTrainer:
    """Trains a round's UEs together for the inline engine (see the module docstring)."""

    def __init__(self, workload: Workload, lr: LrFn) -> None:
        self.workload, self.lr = workload, lr

    def attach(self, messages: Iterable[Message], partition_of_node: dict[int, int]) -> None:
        """Train every UE addressed by a train message at once; attach each result to its message."""
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN and m.has_content()]
        if len(train) < 2:
            return
        groups: dict[tuple[int, int], list[tuple[Message, torch.Tensor]]] = {}
        for msg in train:
            config = msg.content[CONFIG]
            (w,) = from_record(msg.content[ARRAYS], self.workload.device)
            groups.setdefault((int(config["first-step"]), int(config["steps"])), []).append((msg, w))
        with torch.no_grad():
            for (first, steps), items in groups.items():
                ues = [partition_of_node[m.metadata.dst_node_id] for m, _ in items]
                out = self.workload.local_sgd_many(torch.stack([w for _, w in items]), ues, first, steps, self.lr)
                for (msg, _), row in zip(items, out, strict=True):
                    # a fresh RecordDict: a server side may send one content object to every UE
                    msg.content = RecordDict({**dict(msg.content.items()), PREFETCHED: to_record(row)})
