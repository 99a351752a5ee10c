"""Overhead of the online analytics (fedsim.analytics.online) relative to the round time.

Runs a mid-size experiment (synthetic-logreg, N = 20, d = 610, server-ota and serverfree-relay
with SaS interference, inline engine) and prints, per strategy:

- the in-loop cost: the time spent in ``OnlineAnalytics.row`` (``analytics_s`` in summary.json)
  over the run's wall time, and
- the end-to-end cost: wall time with analytics vs with ``OnlineAnalytics.row`` stubbed out
  (best of ``--repeats``, which is noisier than the in-loop number on a shared machine).

Usage: python benchmarks/bench_online_analytics.py [--rounds 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import fedsim.runtime.hooks as hooks
from fedsim.analytics.online import OnlineAnalytics
from fedsim.config import validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment


class _NoAnalytics(OnlineAnalytics):
    def row(self, r, row, channel, models):  # noqa: D102 - the stub being compared against
        return {}


def _cfg(strategy: str, rounds: int, out: str):
    return validate({
        "name": "bench", "rounds": rounds, "seed": 0,
        "workload": {"name": "synthetic-logreg", "num_ues": 20, "batch_size": 0},
        "train": {"local_steps": 1, "lr": {"schedule": "constant", "eta": 0.3}},
        "strategy": {"name": strategy},
        "channel": {"interference": {"name": "sas", "alpha": 1.5}, "scale": 0.5},
        "engine": {"name": "inline"}, "output": {"dir": out, "plot": False},
    })


def _run(strategy: str, rounds: int, out: str, stub: bool) -> tuple[float, float]:
    hooks.OnlineAnalytics = _NoAnalytics if stub else OnlineAnalytics
    try:
        t0 = time.perf_counter()
        run = load_run(run_experiment(_cfg(strategy, rounds, out), quiet=True, plot=False))
        wall = time.perf_counter() - t0
    finally:
        hooks.OnlineAnalytics = OnlineAnalytics
    return wall, float(run.summary.get("analytics_s", 0.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for strategy in ("server-ota", "serverfree-relay"):
            _run(strategy, 5, out, False)  # warm caches (workload build, imports)
            on = [_run(strategy, args.rounds, out, False) for _ in range(args.repeats)]
            off = [_run(strategy, args.rounds, out, True)[0] for _ in range(args.repeats)]
            wall_on = min(w for w, _ in on)
            in_loop = min(a / w for w, a in on)
            wall_off = min(off)
            results[strategy] = {
                "round_ms": round(1e3 * wall_off / args.rounds, 3),
                "analytics_ms_per_round": round(1e3 * min(a for _, a in on) / args.rounds, 4),
                "in_loop_overhead_pct": round(100 * in_loop, 2),
                "end_to_end_overhead_pct": round(100 * (wall_on / wall_off - 1), 2),
            }
            print(f"{strategy:18s} round {results[strategy]['round_ms']:.2f} ms, analytics "
                  f"{results[strategy]['analytics_ms_per_round']:.3f} ms/round: in-loop "
                  f"{results[strategy]['in_loop_overhead_pct']:.2f} %, end-to-end "
                  f"{results[strategy]['end_to_end_overhead_pct']:+.2f} % (budget 5 %)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
