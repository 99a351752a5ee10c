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


def build_workload(cfg: WorkloadConfig, seed: int, device: str | torch.device = "cpu") -> Workload:
    """The workload for ``cfg`` and experiment ``seed``, its tensors on ``device``. Building can
    be slow (data generation, partitioning, the logreg optimum): a run builds it once."""
    workload = cfg.build(int(seed))
    device = torch.device(device)
    return workload if device.type == "cpu" else workload.to_device(device)
