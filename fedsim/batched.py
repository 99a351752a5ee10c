"""The inline engine's batched path (``engine.batched = true``): one round's local SGD for every
UE at once.

Before :class:`~fedsim.engines.InlineGrid` hands a round's train messages to the ClientApp one
by one, it calls :func:`prefetch`. That stacks the received models ``[M, d]`` and runs the K
local SGD steps of all M UEs through the workload's vectorised ``stochastic_grad_many`` (a
batched matmul for ``synthetic-logreg`` / ``quadratic``, ``torch.func.vmap`` over the stacked
parameters for the image CNNs). Each UE's ClientApp call then does everything it always does
(faults, transmit rule, metrics, reply) but takes its prefetched model (:func:`take`) instead of
training, once it has checked that the prefetch started from the same model, steps and
experiment. The numbers equal the per-UE path to floating-point tolerance, not bit for bit (the
batched kernels sum in another order), which is why the path is opt-in.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import Message, MessageType

from fedsim.errors import ConfigError

#: (experiment JSON, UE) -> (first step, steps, start model, trained model); filled by prefetch,
#: emptied by take. Keyed by the experiment so that a later run in the process never reads it.
_PREFETCHED: dict[tuple[str, int], tuple[int, int, torch.Tensor, torch.Tensor]] = {}


def check_batched(cfg, workload) -> None:
    """Refuse ``engine.batched`` where the batched path cannot run (a ConfigError naming why)."""
    from fedsim.client import resolved_transmit, uses_medium

    if not cfg.engine.batched:
        return
    why = None
    if cfg.engine.name != "inline":
        why = "it needs engine.name = 'inline' (Ray's UE actors train one UE each)"
    elif uses_medium(cfg):
        why = (f"strategy {cfg.strategy.name} is server-free: each UE starts its local training from its "
               "own model; use a server-based strategy (server-digital, server-ota)")
    elif resolved_transmit(cfg) == "gradient":
        why = "strategy.transmit = 'gradient' takes no local steps; use 'update' or 'model'"
    elif workload.custom_local_train or not workload.batched_grad:
        why = f"workload {cfg.workload.name} has no vectorised gradient (batched_grad); use the per-UE path"
    if why is not None:
        raise ConfigError(f"engine.batched = true cannot be used here: {why}")


def prefetch(messages: Iterable[Message], partition_of_node: dict[int, int]) -> None:
    """Train every UE addressed by a train message in ``messages`` at once, for :func:`take`."""
    from fedsim.client import experiment_from_json
    from fedsim.device import run_device
    from fedsim.schedule import make_lr
    from fedsim.workloads import build_workload
    from strategies.common import ARRAYS, CONFIG, from_record

    _PREFETCHED.clear()
    train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN and m.has_content()]
    if len(train) < 2:
        return
    exp = str(train[0].content[CONFIG]["exp"])
    cfg = experiment_from_json(exp)
    if not cfg.engine.batched:
        return
    workload = build_workload(cfg.workload, cfg.seed, run_device(cfg))
    lr = make_lr(cfg.train.lr, cfg.rounds * cfg.train.local_steps)
    groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
    for msg in train:
        config = msg.content[CONFIG]
        if str(config["exp"]) != exp:
            continue
        (w,) = from_record(msg.content[ARRAYS], workload.device)
        key = (int(config["first-step"]), int(config["steps"]))
        groups.setdefault(key, []).append((partition_of_node[msg.metadata.dst_node_id], w))
    with torch.no_grad():
        for (first, steps), items in groups.items():
            ues = [ue for ue, _ in items]
            out = workload.local_sgd_many(torch.stack([w for _, w in items]), ues, first, steps, lr)
            for (ue, w), row in zip(items, out, strict=True):
                _PREFETCHED[(exp, ue)] = (first, steps, w, row)


def take(exp: str, ue: int, start: torch.Tensor, first_step: int, steps: int) -> torch.Tensor | None:
    """UE ``ue``'s prefetched local model if it was trained from ``start`` for the same steps of the
    same experiment (then it is removed), else None: the caller trains as usual."""
    hit = _PREFETCHED.pop((exp, ue), None)
    if hit is None:
        return None
    first, n, w0, out = hit
    if first != first_step or n != steps or w0.shape != start.shape or not torch.equal(w0, start):
        return None
    return out.to(start.dtype).clone()
