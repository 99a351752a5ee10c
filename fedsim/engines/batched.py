"""The inline engine's batched path (``engine.batched = true``): one round's local SGD (or, for
gradient transmission, gradient) for every UE at once.

Before :class:`~fedsim.engines.inline.InlineGrid` hands a round's train messages to the ClientApp
one by one, :meth:`BatchTrainer.attach` asks the strategy where each UE's training starts
(``Strategy.training_start``: the received global model for server-based strategies; for the
server-free ones the UE's own model in its Flower ``Context.state`` after the estimates its
message delivers before step 0, computed by the same function the UE rule merges with, without
changing the state), stacks those start models ``[M, d]``, runs the K local SGD steps of all M
UEs through the workload's vectorised ``stochastic_grad_many`` (a batched matmul for
``synthetic-logreg`` / ``quadratic``, ``torch.func.vmap`` for the image CNNs) and attaches each
UE's start model and result to its own message (record ``fedsim.prefetched``, or
``fedsim.prefetched-grad`` for a gradient). Each ClientApp call then does everything it always
does (faults, merges, state, transmit rule, metrics, reply) but takes the attached result instead
of training, once it has checked that it starts from the attached model and steps; otherwise it
trains itself. The numbers equal the per-UE path to floating-point tolerance, not bit for bit
(the batched kernels sum in another order), which is why the path is opt-in. The UE state stays
in ``Context.state``: the trainer only reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from flwr.app import Context, Message, MessageType, RecordDict

from fedsim.apps.client import PREFETCHED, PREFETCHED_GRAD, load_records
from fedsim.workloads import Workload
from strategies.base import LrFn, Strategy
from strategies.common import ARRAYS, CONFIG, from_record, to_record


class BatchTrainer:
    """Trains a round's UEs together for the inline engine (see the module docstring)."""

    def __init__(self, workload: Workload, lr: LrFn, strategy: Strategy | None = None) -> None:
        self.workload, self.lr, self.strategy = workload, lr, strategy
        self.gradient = strategy is not None and strategy.transmit == "gradient"

    def attach(self, messages: Iterable[Message], partition_of_node: dict[int, int],
               contexts: Mapping[int, Context] | None = None) -> None:
        """Train every UE addressed by a train message at once; attach each result to its message."""
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN and m.has_content()]
        if len(train) < 2:
            return
        groups: dict[tuple[int, int], list[tuple[Message, torch.Tensor]]] = {}
        for msg in train:
            config = msg.content[CONFIG]
            w = self._start(msg, contexts)
            if w is not None:
                groups.setdefault((int(config["first-step"]), int(config["steps"])), []).append((msg, w))
        with torch.no_grad():
            for (first, steps), items in groups.items():
                ues = [partition_of_node[m.metadata.dst_node_id] for m, _ in items]
                ws = torch.stack([w for _, w in items])
                if self.gradient:
                    out = self.workload.stochastic_grad_many(ws, ues, first)
                else:
                    out = self.workload.local_sgd_many(ws, ues, first, steps, self.lr)
                key = PREFETCHED_GRAD if self.gradient else PREFETCHED
                for (msg, w), row in zip(items, out, strict=True):
                    # a fresh RecordDict: a server side may send one content object to every UE
                    msg.content = RecordDict({**dict(msg.content.items()), key: to_record(w, row)})

    def _start(self, msg: Message, contexts: Mapping[int, Context] | None) -> torch.Tensor | None:
        """The UE's start model (None: it does not train), from the strategy's ``training_start``."""
        device = self.workload.device
        received = from_record(msg.content[ARRAYS], device)
        if self.strategy is None:
            return received[0] if received else None
        records = {}
        if self.strategy.holds_ue_models and contexts is not None:
            records = load_records(contexts[msg.metadata.dst_node_id], device)
        return self.strategy.training_start(records, received, msg.content[CONFIG],
                                            lambda: self.workload.init_params().to(device), self.lr)
