"""Compute overhead of the federated augmentation-policy search (the target: < 2x plain training).

Times one UE's local round (``local_train``, K steps, one torch thread as in the client app) on
``mnist-augsearch`` for each arm, interleaving the arms over repeats so that machine load hits
them alike, and prints the median time per local step and the ratio to plain training
(``augment.policy = "none"``, no MoEx; same data, same CNN, same steps).

    python benchmarks/bench_augment.py [--steps 10] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedsim.workloads import build_workload
from fedsim.workloads.augsearch import MnistAugsearchConfig

ARMS = {
    "plain": {"augment": {"policy": "none"}},
    "uniform policy": {"augment": {"policy": "uniform"}},
    "searched policy": {"augment": {"policy": "search"}},
    "MoEx": {"augment": {"policy": "none"}, "moex": {"enabled": True}},
    "search + MoEx": {"augment": {"policy": "search"}, "moex": {"enabled": True}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="local steps K per timed round")
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds per arm")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = {"num_ues": 10, "partition": "shards", "batch_size": 32, "val_fraction": 0.1}
    wls = {k: build_workload(MnistAugsearchConfig(**base, **v), seed=0) for k, v in ARMS.items()}
    states = {k: {} for k in ARMS}
    times: dict[str, list[float]] = {k: [] for k in ARMS}

    def lr(s: int) -> float:
        return 0.1

    for r in range(args.repeats + 1):
        for k, wl in wls.items():
            w = wl.init_params()
            t = time.perf_counter()
            wl.local_train(w, r % wl.num_ues, r * args.steps, args.steps, lr, states[k])
            if r:  # the first round warms up
                times[k].append((time.perf_counter() - t) / args.steps)
    ref = statistics.median(times["plain"])
    print(f"mnist-augsearch, batch 32, K = {args.steps}, {args.repeats} rounds per arm, 1 thread")
    print(f"{'arm':<18}{'ms/step':>10}{'x plain':>10}")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:<18}{1e3 * m:>10.2f}{m / ref:>10.2f}")


if __name__ == "__main__":
    main()
