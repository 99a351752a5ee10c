"""Measure the latency table of ``fedsim.workloads.latency``: every architecture of the 3-layer CNN
space under every device profile, shipped as ``fedsim/workloads/latency/data/cnn3_latency.npz``.

    python scripts/measure_latency.py --repeats 5 --out fedsim/workloads/latency/data/cnn3_latency.npz

Interleaved so that load drift on a shared machine hits every architecture alike: one warm-up
pass (every profile, every architecture), then for r = 0..R-1, for every profile, every
architecture once, in a fresh random order per (r, profile). The table holds the median over the
R timed calls (ms per forward of one batch). The 1-minute load average is recorded before and after
every pass. Prints the file's SHA-256: paste it into ``TABLE_SHA256`` in
``fedsim/workloads/latency/table.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time

import numpy as np
import torch
from scipy import stats

from channels.rng import numpy_generator
from fedsim.workloads.latency.space import NUM_ARCHS, PROFILES, Cnn3, DeviceProfile, decode


def time_once(model: torch.nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    model(x)
    return 1000.0 * (time.perf_counter() - t0)


def run_pass(models: dict, profile: DeviceProfile, order: np.ndarray, x: torch.Tensor) -> np.ndarray:
    torch.set_num_threads(profile.threads)
    out = np.empty(len(order))
    for a in order:
        out[a] = time_once(models[profile.name][a], x)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--archs", type=int, default=NUM_ARCHS, help="first N architectures only (testing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fedsim/workloads/latency/data/cnn3_latency.npz")
    args = ap.parse_args()
    archs = np.arange(args.archs)
    torch.manual_seed(0)  # weights do not change timings; fixed for reproducibility only
    models = {p.name: [Cnn3([tuple(map(int, lk)) for lk in decode(a)[0]], p).to(getattr(torch, p.dtype)).eval()
                       for a in archs] for p in PROFILES}
    inputs = {p.name: torch.randn(p.batch, 1, 28, 28, dtype=getattr(torch, p.dtype)) for p in PROFILES}
    raw = np.empty((args.repeats, len(PROFILES), len(archs)))
    loads, t_start = [], time.time()
    with torch.inference_mode():
        for p in PROFILES:  # warm-up pass
            run_pass(models, p, archs, inputs[p.name])
        for r in range(args.repeats):
            for j, p in enumerate(PROFILES):
                order = numpy_generator(args.seed, "measure-order", r, j).permutation(len(archs))
                loads.append(os.getloadavg()[0])
                raw[r, j] = run_pass(models, p, order, inputs[p.name])
            print(f"repeat {r}: {time.time() - t_start:.0f} s, load {loads[-1]:.2f}", flush=True)
    loads.append(os.getloadavg()[0])
    med = np.median(raw, axis=0).astype(np.float32)
    half = raw.shape[0] // 2
    a_med, b_med = np.median(raw[:half], 0), np.median(raw[half:], 0)
    meta = {
        "profiles": [p.to_dict() for p in PROFILES], "repeats": args.repeats, "unit": "ms per forward of one batch",
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t_start)),
        "load_avg_1min": {"min": min(loads), "median": float(np.median(loads)), "max": max(loads)},
        "seconds": round(time.time() - t_start, 1),
        "split_half_spearman": [round(float(stats.spearmanr(a_med[j], b_med[j])[0]), 4) for j in range(len(PROFILES))],
        "split_half_within_10pct": [round(float(np.mean(np.abs(a_med[j] / b_med[j] - 1) <= 0.1)), 4)
                                    for j in range(len(PROFILES))],
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    np.savez_compressed(args.out, latency_ms=med, meta=np.array(json.dumps(meta)))
    digest = hashlib.sha256(open(args.out, "rb").read()).hexdigest()
    print(json.dumps(meta, indent=1))
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes) sha256 {digest}")


if __name__ == "__main__":
    main()
