"""Workloads: federated tasks on flat parameter vectors, built from a typed config.

>>> from fedsim.workloads import SyntheticLogregConfig, build_workload
>>> wl = build_workload(SyntheticLogregConfig(num_ues=5), seed=0)
>>> wl.dim
610
"""

from __future__ import annotations

import functools
from typing import Annotated

import torch
from pydantic import Field, TypeAdapter

from fedsim.workloads.augsearch import AugSearchCnn, DigitsAugsearchConfig, MnistAugsearchConfig
from fedsim.workloads.base import LrFn, TheoryConstants, Workload
from fedsim.workloads.images import DigitsCnnConfig, ImageCnn, MnistCnnConfig
from fedsim.workloads.moe import MoeLm, MoeLmConfig
from fedsim.workloads.nas.dash import DashConfig, DashWorkload
from fedsim.workloads.nas.gdas import GdasConfig, GdasWorkload
from fedsim.workloads.nas.tabnas import TabNasConfig, TabNasWorkload
from fedsim.workloads.quadratic import Quadratic, QuadraticConfig
from fedsim.workloads.synthetic import SyntheticLogreg, SyntheticLogregConfig

WorkloadConfig = Annotated[
    SyntheticLogregConfig | QuadraticConfig | MnistCnnConfig | DigitsCnnConfig | MoeLmConfig
    | MnistAugsearchConfig | DigitsAugsearchConfig | GdasConfig | DashConfig | TabNasConfig,
    Field(discriminator="name"),
]
"""Any workload config, told apart by its ``name`` field."""

WORKLOAD_NAMES: tuple[str, ...] = ("synthetic-logreg", "quadratic", "mnist-cnn", "digits-cnn", "moe-lm",
                                   "mnist-augsearch", "digits-augsearch", "nas-gdas", "nas-dash", "nas-tabnas")

_ADAPTER: TypeAdapter[WorkloadConfig] = TypeAdapter(WorkloadConfig)


def parse_workload_config(data: dict) -> WorkloadConfig:
    """Validate a plain dict (e.g. a TOML table) into the matching config model.

    Raises ``pydantic.ValidationError`` for unknown names, unknown keys and bad values.
    """
    return _ADAPTER.validate_python(data)


def build_workload(cfg: WorkloadConfig, seed: int, device: str | torch.device = "cpu") -> Workload:
    """The workload for ``cfg`` and experiment ``seed``, its tensors on ``device``, built once
    per process.

    Building can be slow (data generation, partitioning, the logreg optimum), and the engine
    calls this in every worker and every round, so results are cached by
    ``(cfg as JSON, seed, device)``. The returned object is shared: treat it as read-only.
    """
    return _on_device(type(cfg).__name__, cfg.model_dump_json(), int(seed), str(torch.device(device)))


@functools.lru_cache(maxsize=32)
def _on_device(kind: str, cfg_json: str, seed: int, device: str) -> Workload:
    if device == "cpu":
        return _build_cached(kind, cfg_json, seed)
    # a fresh build (not the cached CPU one moved): moving is in place
    return _build_cached.__wrapped__(kind, cfg_json, seed).to_device(torch.device(device))


@functools.lru_cache(maxsize=32)
def _build_cached(kind: str, cfg_json: str, seed: int) -> Workload:
    cfg = _ADAPTER.validate_json(cfg_json)
    if isinstance(cfg, SyntheticLogregConfig):
        return SyntheticLogreg(cfg, seed)
    if isinstance(cfg, QuadraticConfig):
        return Quadratic(cfg, seed)
    if isinstance(cfg, MnistCnnConfig | DigitsCnnConfig):
        return ImageCnn(cfg, seed)
    if isinstance(cfg, MnistAugsearchConfig | DigitsAugsearchConfig):
        return AugSearchCnn(cfg, seed)
    if isinstance(cfg, MoeLmConfig):
        return MoeLm(cfg, seed)
    if isinstance(cfg, GdasConfig):
        return GdasWorkload(cfg, seed)
    if isinstance(cfg, DashConfig):
        return DashWorkload(cfg, seed)
    if isinstance(cfg, TabNasConfig):
        return TabNasWorkload(cfg, seed)
    raise TypeError(f"unknown workload config {kind}")  # pragma: no cover


__all__ = [
    "WORKLOAD_NAMES",
    "AugSearchCnn",
    "DigitsAugsearchConfig",
    "MnistAugsearchConfig",
    "DigitsCnnConfig",
    "ImageCnn",
    "LrFn",
    "MnistCnnConfig",
    "MoeLm",
    "MoeLmConfig",
    "Quadratic",
    "QuadraticConfig",
    "SyntheticLogreg",
    "SyntheticLogregConfig",
    "TheoryConstants",
    "Workload",
    "WorkloadConfig",
    "build_workload",
    "parse_workload_config",
]
