"""A minimal, plain Flower FedAvg on fedsim's ``synthetic-logreg`` data: the peer fedsim is
measured against in ``bench_ray_vs_flower.py``.

No fedsim engine, strategy or channel: Flower's own ``FedAvg`` on the ServerApp, and a ClientApp
that does K plain SGD steps on its partition with the same model, data and gradient as fedsim
(``SyntheticLogreg.local_sgd``). The apps live in this importable module so that Ray actors
import them once instead of unpickling them with every message (a Flower pitfall).

The ServerApp reads its settings from :data:`SETTINGS` (set by the benchmark in the driver
process, where Flower runs the ServerApp); the ClientApps get theirs inside each train message.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedsim.workloads import build_workload
from fedsim.workloads.synthetic import SyntheticLogregConfig

#: Set by the driver before ``run_simulation``: num_ues, rounds, steps, lr, seed, pull_interval.
SETTINGS: dict[str, Any] = {}
#: ``time.perf_counter()`` at the end of each round (filled by the ServerApp).
ROUND_TIMES: list[float] = []

client_app = ClientApp()
server_app = ServerApp()


def _workload(num_ues: int, seed: int) -> Any:
    return build_workload(SyntheticLogregConfig(num_ues=num_ues), seed)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """K SGD steps from the received model on this node's partition."""
    torch.set_num_threads(1)
    cfg = msg.content["config"]
    workload = _workload(int(cfg["num-ues"]), int(cfg["seed"]))
    ue = int(context.node_config["partition-id"])
    (w,) = msg.content["arrays"].to_numpy_ndarrays()
    steps, lr = int(cfg["steps"]), float(cfg["lr"])
    first = (int(cfg["server-round"]) - 1) * steps
    w_new = workload.local_sgd(torch.from_numpy(np.array(w, copy=True)), ue, first, steps, lambda s: lr)
    content = RecordDict({"arrays": ArrayRecord([w_new.numpy()]),
                          "metrics": MetricRecord({"num-examples": workload.num_examples(ue)})})
    return Message(content, reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's FedAvg over all nodes, evaluating the global model on the server every round."""
    s = SETTINGS
    n = int(s["num_ues"])
    if hasattr(grid, "pull_interval"):
        grid.pull_interval = float(s["pull_interval"])
    workload = _workload(n, int(s["seed"]))
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        (w,) = arrays.to_numpy_ndarrays()
        metrics = workload.evaluate(torch.from_numpy(np.array(w, copy=True)))
        ROUND_TIMES.append(time.perf_counter())
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([workload.init_params().numpy()]),
        num_rounds=int(s["rounds"]),
        train_config=ConfigRecord({"num-ues": n, "seed": int(s["seed"]), "steps": int(s["steps"]),
                                   "lr": float(s["lr"])}),
        evaluate_fn=evaluate,
    )
