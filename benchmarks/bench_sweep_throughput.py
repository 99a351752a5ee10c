"""(d) Sweep throughput on 1 vs 2 Ray workers.

Run: ``python benchmarks/bench_sweep_throughput.py`` (about 1.5 minutes on 2 cores).

The same sweep (default: 16 variants of ``server-ota`` on ``synthetic-logreg``, 20 UEs x 100
rounds as in grid_240, seeds 0..15, so every variant also builds its own data) runs through ``run_sweep`` on a
local Ray with ``--workers`` CPUs each: each variant is one Ray task on the inline engine. The
throughput is variants per minute, from the moment Ray is up to the last result (Ray's own
start-up, 3-5 s, is printed apart), and end to end. The machine's load average is printed too:
other work on the same cores lowers the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import fedsim.parallel as par
from fedsim.sweep import base_config, expand_sweep, read_index, run_sweep


def sweep_data(variants: int, ues: int, rounds: int, workers: int, out: str) -> dict[str, Any]:
    return {
        "name": f"bench-sweep-{workers}w", "rounds": rounds,
        "workload": {"name": "synthetic-logreg", "num_ues": ues, "batch_size": 0},
        "train": {"lr": {"eta": 0.3}},
        "strategy": {"name": "server-ota"},
        "channel": {"interference": {"name": "sas", "alpha": 1.5}, "gsnr_db": 10.0},
        "engine": {"name": "ray", "num_cpus": workers},
        "output": {"dir": out, "plot": False},
        "sweep": {"seed": list(range(variants))},
    }


def timed_sweep(data: dict[str, Any]) -> dict[str, float]:
    """Run the sweep; return its end-to-end seconds, Ray's start-up seconds and task CPU seconds."""
    marks: dict[str, float] = {}
    real = par.ray_session

    @contextlib.contextmanager
    def marking(engine: Any) -> Iterator[Any]:
        marks["init"] = time.perf_counter()
        with real(engine) as ray:
            marks["up"] = time.perf_counter()
            yield ray
            marks["done"] = time.perf_counter()

    par.ray_session = marking  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        sweep_dir = run_sweep(expand_sweep(data, []), base_config(data, []), quiet=True, plot=False)
        total = time.perf_counter() - t0
    finally:
        par.ray_session = real  # type: ignore[assignment]
    entries = read_index(sweep_dir)["variants"]
    assert all(e["status"] == "completed" for e in entries), [e.get("error") for e in entries]
    return {"total": total, "startup": marks["up"] - marks["init"], "work": marks["done"] - marks["up"],
            "cpu": sum(float(e.get("cpu_s", 0.0)) for e in entries), "n": len(entries)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=int, default=16)
    ap.add_argument("--ues", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs=2, default=[1, 2])
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="fsb-sweep")
    try:
        res = {w: timed_sweep(sweep_data(args.variants, args.ues, args.rounds, w, out)) for w in args.workers}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    a, b = args.workers
    print(f"sweep of {args.variants} variants (server-ota, synthetic-logreg, {args.ues} UEs x {args.rounds} rounds); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for w in args.workers:
        r = res[w]
        print(f"  {w} worker(s): {60 * r['n'] / r['work']:6.1f} variants/min after Ray is up ({r['work']:.1f} s), "
              f"{60 * r['n'] / r['total']:6.1f} end to end ({r['total']:.1f} s; Ray start {r['startup']:.1f} s; "
              f"task CPU {r['cpu']:.1f} s)")
    print(f"  throughput {b} vs {a} workers: {res[a]['work'] / res[b]['work']:.2f}x after Ray is up, "
          f"{res[a]['total'] / res[b]['total']:.2f}x end to end (target >= 1.7x)")


if __name__ == "__main__":
    main()
