"""The workload registry: name -> config class (a :class:`~fedsim.workloads.base.WorkloadConfig`
subclass whose ``build(seed)`` makes the workload).

A new workload is one file with its config class and its :class:`~fedsim.workloads.base.Workload`
subclass, plus one line in :data:`WORKLOADS`, or an entry point in the group
``fedsim.workloads`` of the user's own package (``my-task = "mypkg.task:MyTaskConfig"``).
"""

from __future__ import annotations

from typing import Any

import torch

from channels import Registry
from channels.registry import params_model
from fedsim.workloads.base import Workload, WorkloadConfig
from fedsim.workloads.keep import keep_recent, recall

WORKLOADS: Registry[type[WorkloadConfig]] = Registry("workload", {
    "synthetic-logreg": "fedsim.workloads.synthetic:SyntheticLogregConfig",
    "quadratic": "fedsim.workloads.quadratic:QuadraticConfig",
    "mnist-cnn": "fedsim.workloads.images:MnistCnnConfig",
    "digits-cnn": "fedsim.workloads.images:DigitsCnnConfig",
    "moe-lm": "fedsim.workloads.moe:MoeLmConfig",
    "mnist-augsearch": "fedsim.workloads.augsearch:MnistAugsearchConfig",
    "digits-augsearch": "fedsim.workloads.augsearch:DigitsAugsearchConfig",
    "nas-gdas": "fedsim.workloads.nas.gdas:GdasConfig",
    "nas-dash": "fedsim.workloads.nas.dash:DashConfig",
    "nas-tabnas": "fedsim.workloads.nas.tabnas:TabNasConfig",
    "nas-spider": "fedsim.workloads.nas.spider:SpiderConfig",
    "graph-hgpsl": "fedsim.workloads.graph_hgpsl:GraphHgpslConfig",
    "latency-predictor": "fedsim.workloads.latency.predictor:LatencyPredictorConfig",
    "seg-unet": "fedsim.workloads.seg.seg_unet:SegUnetConfig",
}, group="fedsim.workloads")


def parse_workload_config(data: Any) -> WorkloadConfig:
    """A plain dict (a TOML table) as the config model its ``name`` selects.

    Raises ValueError for a missing or unknown name and ``pydantic.ValidationError`` for unknown
    keys and bad values."""
    if isinstance(data, WorkloadConfig):
        return data
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError(f"expected a table with a workload name ({', '.join(WORKLOADS.names())})")
    return params_model(WORKLOADS, data["name"]).model_validate(data)


#: Bytes of tensors the built workloads kept for reuse may hold together (:func:`build_workload`).
SHARED_BYTES = 256 << 20
_shared: dict[tuple[Any, ...], Workload] = {}


def build_workload(cfg: WorkloadConfig, seed: int, device: str | torch.device = "cpu") -> Workload:
    """The workload for ``cfg`` and experiment ``seed``, its tensors on ``device``. Building can
    be slow (data generation, partitioning, the logreg optimum): a run builds it once.

    A workload whose class declares :attr:`~fedsim.workloads.base.Workload.shareable` is kept in
    this process and handed to the next run with the same inputs (config, seed, device and torch
    threads, which fix its rounding): a sweep's variants that differ only in strategy or channel
    then share its data, optimum and theory constants instead of recomputing them. At most
    :data:`SHARED_BYTES` of tensors are kept, the least recently used dropped first."""
    device = torch.device(device)
    key = (type(cfg).__qualname__, cfg.model_dump_json(), int(seed), str(device), torch.get_num_threads())
    if (kept := recall(_shared, key)) is not None:
        return kept
    workload = cfg.build(int(seed))
    workload = workload if device.type == "cpu" else workload.to_device(device)
    if workload.shareable:
        keep_recent(_shared, key, workload, SHARED_BYTES)
    return workload


def forget_built_workloads() -> None:
    """Drop every kept workload (tests that need fresh builds; memory)."""
    _shared.clear()
