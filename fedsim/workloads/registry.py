"""The workload registry: name -> config class (a :class:`~fedsim.workloads.base.WorkloadConfig`
subclass whose ``build(seed)`` makes the workload).

A new workload is one file with its config class and its :class:`~fedsim.workloads.base.Workload`
subclass, plus one line in :data:`WORKLOADS`, or an entry point in the group
``fedsim.workloads`` of the user's own package (``my-task = "mypkg.task:MyTaskConfig"``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
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


#: Bytes of tensors the built workloads kept for reuse may hold together (:func:`build_workload`).
SHARED_BYTES = 256 << 20
_shared: OrderedDict[tuple[Any, ...], Workload] = OrderedDict()


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
    if (kept := _shared.get(key)) is not None:
        _shared.move_to_end(key)
        return kept
    workload = cfg.build(int(seed))
    workload = workload if device.type == "cpu" else workload.to_device(device)
    if workload.shareable:
        _keep(key, workload)
    return workload


def _keep(key: tuple[Any, ...], workload: Workload) -> None:
    size = tensor_bytes(workload)
    if size > SHARED_BYTES:
        return
    _shared[key] = workload
    while sum(tensor_bytes(w) for w in _shared.values()) > SHARED_BYTES:
        _shared.popitem(last=False)


def forget_built_workloads() -> None:
    """Drop every kept workload (tests that need fresh builds; memory)."""
    _shared.clear()


def tensor_bytes(obj: Any, depth: int = 2) -> int:
    """Bytes of the torch tensors and numpy arrays ``obj`` holds in its attributes, lists, tuples
    and dicts (``depth`` levels down)."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if depth < 0:
        return 0
    if isinstance(obj, dict):
        items: Any = obj.values()
    elif isinstance(obj, list | tuple):
        items = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).values()
    else:
        return 0
    return sum(tensor_bytes(v, depth - 1) for v in items)
