"""Hardware/resource figures of a found architecture: parameters, FLOPs and measured latency.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (counts matmul/conv FLOPs as
2·MACs, per example here); latency is the median wall time of a forward pass on one example,
measured on the CPU in this process (so it is comparable between architectures of one run,
not across machines). With ``ops=True`` :func:`measure` also records the op summary that the per-op
latency cost model of :mod:`fedsim.workloads.latency` prices on each device profile.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedsim.workloads.latency.costmodel import op_summary


@dataclass(frozen=True)
class Resources:
    params: int
    flops: int  # per example
    latency_ms: float | None = None  # per example, median
    ops: tuple[tuple[int, int, float, float], ...] | None = None  # op summary (kind, count, FLOPs, outputs)

    def to_dict(self) -> dict[str, float | int | None]:
        out = asdict(self)
        if self.ops is None:
            out.pop("ops")
        return out


def count_params(module: nn.Module) -> int:
    """Trainable parameters (works on meta-device modules too)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_flops(module: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (a batch of one), from torch's counter."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(example)
    return int(counter.get_total_flops())


def measure_latency_ms(module: nn.Module, example: torch.Tensor, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``module(example)`` over ``repeats`` timed calls."""
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            module(example)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def measure(module: nn.Module, example: torch.Tensor, *, latency: bool = True, ops: bool = False) -> Resources:
    """Params, FLOPs, (unless ``latency`` is False) the measured latency of ``module`` and (with
    ``ops``) its op summary.

    ``module`` must hold real tensors (not meta) when ``latency`` is requested."""
    module = module.eval()
    return Resources(
        params=count_params(module),
        flops=count_flops(module, example),
        latency_ms=round(measure_latency_ms(module, example), 4) if latency else None,
        ops=op_summary(module, example) if ops else None,
    )
