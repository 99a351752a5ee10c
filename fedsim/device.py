"""Where a run's tensors live: ``engine.device`` = ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``
or ``"auto"`` (CUDA when this process sees a GPU, else CPU).

Every process resolves the device from the same ``engine.device`` (it travels to every UE in the
run's config): the ServerApp's process, each Ray UE actor and each sweep task. On CUDA, Ray gives
the actors and tasks a GPU share (``fedsim.engines.gpus_per_ue``): without one, Ray hides every
GPU from them. Random draws stay on CPU generators keyed as always (``channels.rng``) and are
moved to the device, so a GPU run sees exactly the random numbers a CPU run sees; results agree
to floating-point tolerance (kernels sum in another order), not bit for bit.
"""

from __future__ import annotations

import re

import torch

from fedsim.errors import ConfigError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


def resolve_device(spec: str) -> torch.device:
    """The torch device for an ``engine.device`` value; a ConfigError when CUDA is asked for
    but this process cannot use it."""
    if not re.match(DEVICE_PATTERN, spec):
        raise ConfigError(f"engine.device = {spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"engine.device = {spec!r} but this process sees no CUDA GPU (torch "
                              f"{torch.__version__}); use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"engine.device = {spec!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def run_device(cfg) -> torch.device:
    """The device of experiment ``cfg`` (an ``ExperimentConfig``)."""
    return resolve_device(cfg.engine.device)
