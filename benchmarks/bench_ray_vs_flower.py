"""(a) fedsim on the Ray engine vs a plain Flower FedAvg simulation, per UE-round.

Run: ``python benchmarks/bench_ray_vs_flower.py`` (about 1 minute on 2 cores).

Both runs use Flower's ``run_simulation`` on Ray with the same backend settings (one CPU per
client actor, fedsim's ``ray_backend_config``), the same model and data (``synthetic-logreg``,
N UEs, full-batch gradients), K SGD steps per round, and a server-side evaluation of the global
model every round. The peer is ``benchmarks/flower_apps.py``: Flower's own ``FedAvg`` and a
ClientApp of a dozen lines. fedsim runs ``server-digital`` with its ServerApp, ClientApp,
strategy, analytics and run directory.

The cost per UE-round is the mean time of a warm round (rounds ``--warmup``+1 .. R, timed from
the end of one round's evaluation to the next) divided by N, so Ray's start-up, actor start and
imports (the fixed ~10 s of every simulation) are left out for both. Both ServerApps poll with
the same ``pull_interval`` (fedsim's 5 ms; Flower's default 0.1 s is a floor on a round's time:
``--flower-poll 0.1`` shows its effect). Options: ``--ues``, ``--rounds``, ``--steps``, ``--cpus``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for flower_apps when run as a script

from fedsim.config import EngineConfig, validate  # noqa: E402
from fedsim.engines import env  # noqa: E402
from fedsim.runtime.recorder import Recorder  # noqa: E402


def fedsim_rounds(ues: int, rounds: int, steps: int, lr: float, cpus: int) -> list[float]:
    """Round-end times of a fedsim ``server-digital`` run on the Ray engine."""
    from fedsim.runner import run_experiment

    times: list[float] = []
    log = Recorder.log

    def timed(self: Recorder, row: dict) -> None:
        log(self, row)
        times.append(time.perf_counter())

    cfg = validate({
        "name": "bench-ray", "rounds": rounds, "seed": 0,
        "workload": {"name": "synthetic-logreg", "num_ues": ues, "batch_size": 0},
        "train": {"local_steps": steps, "lr": {"eta": lr}},
        "strategy": {"name": "server-digital"},
        "engine": {"name": "ray", "num_cpus": cpus},
        "output": {"dir": tempfile.mkdtemp(prefix="fsb"), "plot": False},
    })
    Recorder.log = timed  # type: ignore[method-assign]
    try:
        run_experiment(cfg, quiet=True)
    finally:
        Recorder.log = log  # type: ignore[method-assign]
    return times


def flower_rounds(ues: int, rounds: int, steps: int, lr: float, cpus: int, poll: float) -> list[float]:
    """Round-end times of the plain Flower FedAvg in ``flower_apps``."""
    import shutil

    import flower_apps

    from fedsim.engines.ray import ray_backend_config

    flower_apps.SETTINGS.update(num_ues=ues, rounds=rounds, steps=steps, lr=lr, seed=0, pull_interval=poll)
    flower_apps.ROUND_TIMES.clear()
    temp_dir = tempfile.mkdtemp(prefix="fsf", dir="/tmp")
    # The environment fedsim's engines run in (no telemetry, loopback-only Ray, quiet Flower logs,
    # FLWR_HOME in the temp folder), so that the baseline runs with the same settings as fedsim.
    # Flower and Ray read some of it at import, hence the imports inside the block.
    with env.engine_environment():
        from flwr.simulation import run_simulation

        try:
            run_simulation(server_app=flower_apps.server_app, client_app=flower_apps.client_app,
                           num_supernodes=ues, backend_name="ray",
                           backend_config=ray_backend_config(EngineConfig(num_cpus=cpus), temp_dir))
        finally:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
    return list(flower_apps.ROUND_TIMES)


def per_ue_round_ms(times: list[float], ues: int, warmup: int) -> float:
    """Mean warm round time / N, in ms. ``times[r]`` is the end of round r (0 = initial eval)."""
    if len(times) < warmup + 2:
        raise SystemExit(f"only {len(times)} rounds were timed; use more --rounds")
    return 1e3 * (times[-1] - times[warmup]) / (len(times) - 1 - warmup) / ues


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ues", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=1, help="local SGD steps K per round")
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    ap.add_argument("--warmup", type=int, default=3, help="rounds left out of the timing")
    ap.add_argument("--flower-poll", type=float, default=0.005, help="the plain Flower ServerApp's pull_interval")
    args = ap.parse_args()
    import os

    cpus = args.cpus or os.cpu_count() or 1
    t0 = time.perf_counter()
    flower = per_ue_round_ms(flower_rounds(args.ues, args.rounds, args.steps, args.lr, cpus, args.flower_poll),
                             args.ues, args.warmup)
    t1 = time.perf_counter()
    fed = per_ue_round_ms(fedsim_rounds(args.ues, args.rounds, args.steps, args.lr, cpus), args.ues, args.warmup)
    t2 = time.perf_counter()
    print(f"synthetic-logreg (d = 610), N = {args.ues} UEs, K = {args.steps}, {args.rounds} rounds, "
          f"{cpus} CPUs, Ray actors of 1 CPU; warm rounds {args.warmup + 1}..{args.rounds}")
    print(f"  plain Flower FedAvg (run_simulation, poll {args.flower_poll:g} s): {flower:7.3f} ms per UE-round "
          f"(whole run {t1 - t0:.1f} s)")
    print(f"  fedsim, Ray engine (server-digital)          : {fed:7.3f} ms per UE-round "
          f"(whole run {t2 - t1:.1f} s)")
    print(f"  ratio fedsim / Flower = {fed / flower:.2f}x   (target <= 1.1x)")


if __name__ == "__main__":
    main()
