"""The Flower ClientApp: one simulated UE.

It lives in an importable module (not ``__main__``) so Ray actors import it once instead of
unpickling it with every message. The experiment config travels inside each message as JSON
and is parsed once per worker process; the workload (data, partitions) is built once per
worker and cached. Torch runs single-threaded here so that a UE computes bit-identical
numbers in a Ray actor and in the inline engine.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.config import ExperimentConfig
from fedsim.schedule import make_lr
from fedsim.workloads import build_workload
from strategies.common import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, PARTITION_ID, from_record, to_record
from strategies.fedavg import local_sgd

client_app = ClientApp()


@lru_cache(maxsize=8)
def experiment_from_json(text: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate_json(text)


def partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition (UE id) this node serves."""
    return Message(RecordDict({METRICS: MetricRecord({PARTITION_ID: partition_id(context)})}), reply_to=msg)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of UE work for the configured strategy."""
    torch.set_num_threads(1)
    config = msg.content[CONFIG]
    cfg = experiment_from_json(str(config["exp"]))
    workload = build_workload(cfg.workload, cfg.seed)
    ue = partition_id(context)
    server_round = int(config["server-round"])
    K = cfg.train.local_steps
    lr = make_lr(cfg.train.lr, cfg.rounds * K)
    (w,) = from_record(msg.content[ARRAYS])
    first_step = (server_round - 1) * K  # rounds are 1-based
    w_new = local_sgd(w, lambda v, s: workload.stochastic_grad(v, ue, s), first_step, K, lr)
    metrics = MetricRecord({PARTITION_ID: ue, NUM_EXAMPLES: workload.num_examples(ue)})
    return Message(RecordDict({ARRAYS: to_record(w_new), METRICS: metrics}), reply_to=msg)
