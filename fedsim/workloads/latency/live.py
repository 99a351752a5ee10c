"""Live latency measurement on this machine (``source = "live"``): warm-up, repeats, median."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from fedsim.workloads.latency.space import INPUT_HW, Cnn3, DeviceProfile, decode


def measure_archs(archs: np.ndarray, profile: DeviceProfile, *, repeats: int = 5, warmup: int = 2) -> np.ndarray:
    """``[A]`` median ms per forward of one batch for architecture indices ``archs`` on ``profile``,
    interleaved (repeat r times every architecture before repeat r+1) so load drift hits all alike."""
    dtype = getattr(torch, profile.dtype)
    models = [Cnn3([tuple(map(int, lk)) for lk in decode(int(a))[0]], profile).to(dtype).eval() for a in archs]
    x = torch.randn(profile.batch, 1, INPUT_HW, INPUT_HW, dtype=dtype)
    times: list[list[float]] = [[] for _ in models]
    threads = torch.get_num_threads()
    torch.set_num_threads(profile.threads)
    try:
        with torch.inference_mode():
            for r in range(warmup + repeats):
                for i, m in enumerate(models):
                    t0 = time.perf_counter()
                    m(x)
                    if r >= warmup:
                        times[i].append(1000.0 * (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(threads)
    return np.array([statistics.median(t) for t in times])
