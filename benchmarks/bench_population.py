"""Population-scale cost: fedsim against a plain per-UE torch loop doing the same maths.

Run: ``python benchmarks/bench_population.py`` (1,000 UEs x 100 rounds: a few minutes on 2 cores);
``--ues 1000 10000`` adds 10,000 UEs (the per-UE path is skipped above ``--per-ue-max`` UEs);
``--arms pop8 sparse`` runs only those fedsim arms beside the loop;
``--overlap`` adds the overlapped relay on the per-UE and population paths;
``--grid`` adds ``grid_240`` against the loop cost of its UE-rounds and a scaled plain-Flower
sample (``--grid-samples 8 4`` runs it again with that many UE-held models scored per round);
``--device cuda`` runs every side on a GPU.

The **reference** is the physical floor on this machine: one thread, float64, for every round a
full-batch ``synthetic-logreg`` gradient per UE (``Workload.stochastic_grad``), the superposition
sum_n q_n g_n, one common and one per-UE Gaussian noise vector, every UE's own-model update, and the
training loss of the average model (with X^T onehot(Y) and the largest row norm, constants of the
data, taken from the workload's cache as fedsim takes them; before 2026-12-07 the loop recomputed
X^T onehot(Y) every round). fedsim
runs ``serverfree-relay`` on the same workload (inline engine, no checkpoints), which is the same
work plus its engine, its channel model and its metrics: every round the average model (train and
test) and a seeded sample of ``eval_ue_sample`` UE-held models (train and test). Arms: the per-UE
path (one ClientApp call per UE), the population path (``engine.population = true``: the round as
one tensor program) with the default metrics, with 8 sampled UE models, and with metrics every
``--eval-every`` rounds.

Every arm runs in a fresh process of its own (spawned), so each prints its own peak resident
memory. Each line prints fedsim's time beside the loop's, their ratio and the target; the
machine's load average is printed first, because other work on the same cores inflates both
sides, and not equally. fedsim's time is split into its set-up (data, the optimum w*, the theory
constants: once per run) and its rounds (timed from the first round's metrics row to the last),
so that a ratio over rounds compares like with like; the end-to-end figure is printed too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the Flower peer, when run as a script

from fedsim.config import ExperimentConfig, validate  # noqa: E402
from fedsim.runner import run_experiment  # noqa: E402
from fedsim.runtime.recorder import Recorder  # noqa: E402
from fedsim.workloads import build_workload  # noqa: E402
from fedsim.workloads.synthetic_ce import ce_many  # noqa: E402

GRID_UE_ROUNDS = 240 * 20 * 100  # grid_240: 240 runs of 20 UEs x 100 rounds


def relay_config(ues: int, rounds: int, device: str, eval_every: int = 1, batched: bool = False,
                 population: bool = False, eval_ue_sample: int = 32, threads: int = 1) -> ExperimentConfig:
    return validate({
        "name": "bench-population", "rounds": rounds, "seed": 0, "eval_every": eval_every,
        "eval_ue_sample": eval_ue_sample,
        "workload": {"name": "synthetic-logreg", "num_ues": ues, "batch_size": 0},
        "train": {"local_steps": 1, "lr": {"eta": 0.3}},
        "strategy": {"name": "serverfree-relay"},
        "channel": {"gsnr_db": 30.0},
        "engine": {"name": "inline", "device": device, "batched": batched, "population": population,
                   "threads": threads},
        "checkpoint": {"every": 0},
        "output": {"dir": tempfile.mkdtemp(prefix="fsp"), "plot": False},
    })


def plain_loop(cfg: ExperimentConfig, sigma: float = 1e-3) -> float:
    """Seconds per round of the reference loop (see the module docstring)."""
    wl = build_workload(cfg.workload, cfg.seed, cfg.engine.device)
    n, eta = wl.num_ues, cfg.train.lr.eta
    q = wl.ue_weights().to(wl.dtype).to(wl.device).tolist()
    gen = torch.Generator(device=wl.device).manual_seed(0)
    models = [wl.init_params().to(wl.device) for _ in range(n)]
    xty, x_norm = wl.ce_constants("train")  # constants of the data, as fedsim caches them
    start = time.perf_counter()
    for r in range(cfg.rounds):
        grads = [wl.stochastic_grad(models[u], u, r) for u in range(n)]
        s = torch.zeros_like(models[0])
        for u in range(n):
            s.add_(grads[u], alpha=q[u])
        s.add_(torch.randn(s.shape, generator=gen, dtype=s.dtype, device=s.device), alpha=sigma)
        for u in range(n):
            noise = torch.randn(s.shape, generator=gen, dtype=s.dtype, device=s.device)
            models[u].sub_(s + sigma * noise, alpha=eta)
        avg = sum(qu * m for qu, m in zip(q, models, strict=True))
        float(ce_many(avg.unsqueeze(0), wl.x_train, wl.y_train, False, xty, x_norm)[0][0])
    return (time.perf_counter() - start) / cfg.rounds


def fedsim_run(cfg: ExperimentConfig) -> dict[str, float]:
    """fedsim's end-to-end seconds and seconds per round (between the first and last metrics rows)."""
    times: list[float] = []
    log = Recorder.log

    def timed(self: Recorder, row: dict) -> None:
        log(self, row)
        times.append(time.perf_counter())

    Recorder.log = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    try:
        run_experiment(cfg, quiet=True)
    finally:
        Recorder.log = log  # type: ignore[method-assign]
    total = time.perf_counter() - start
    return {"total": total, "per_round": (times[-1] - times[0]) / max(len(times) - 1, 1),
            "setup": times[0] - start}


def ratio_line(label: str, fedsim_s: float, loop_s: float, target: float) -> str:
    ratio = fedsim_s / loop_s
    verdict = "met" if ratio <= target else "NOT met"
    return (f"  {label}: fedsim {fedsim_s:8.3f} s, plain loop {loop_s:8.3f} s -> {ratio:5.2f}x "
            f"(target <= {target:g}x: {verdict})")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _arm(kind: str, kwargs: dict) -> dict[str, float]:
    """One arm in this (spawned) process: its times and its peak resident memory."""
    torch.set_num_threads(kwargs.get("threads", 1))
    overlap = kwargs.pop("overlap", False)
    cfg = relay_config(**kwargs)
    if overlap:  # DGA-style: each round's aggregate merged 2 local steps late (2 steps per block)
        cfg = validate({**cfg.model_dump(), "train": {"local_steps": 2, "lr": {"eta": 0.3}},
                        "strategy": {"name": "serverfree-relay", "overlap": {"enabled": True}},
                        "timing": {"latency_ratio": 2}})
    if kind == "loop":
        build_workload(cfg.workload, cfg.seed)  # warm the imports; each side builds its own data
        out = {"per_round": plain_loop(cfg)}
    else:
        out = fedsim_run(cfg)
    return {**out, "peak_mb": _peak_mb()}


def in_child(kind: str, **kwargs) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_arm, (kind, kwargs))


ARMS = ("per-ue", "pop", "pop8", "sparse", "threads")
#: 10,000 UEs x 100 rounds server-free on one GPU, whole run
GPU_TARGET_S = 20.0


def population(ues: int, rounds: int, device: str, eval_every: int, per_ue_max: int,
               arms: tuple[str, ...] = ARMS) -> None:
    base = {"ues": ues, "rounds": rounds, "device": device}
    loop = in_child("loop", **base)
    per_round = loop["per_round"]
    cores = os.cpu_count() or 1
    print(f"{ues} UEs x {rounds} rounds, serverfree-relay, synthetic-logreg full batch, {device}:")
    print(f"  plain loop (1 thread): {1e3 * per_round / ues:.3f} ms per UE-round, {per_round * rounds:.1f} s for "
          f"the run, peak {loop['peak_mb']:.0f} MB")
    runs = [("per-ue", "per-UE path, metrics every round", {"population": False}),
            ("pop", "population path, metrics every round", {"population": True}),
            ("pop8", "population path, 8 UE models sampled", {"population": True, "eval_ue_sample": 8}),
            ("sparse", f"population path, metrics every {eval_every} rounds",
             {"population": True, "eval_every": eval_every}),
            ("threads", f"population path, metrics every round, engine.threads = {cores}",
             {"population": True, "threads": cores})]
    for name, label, extra in runs:
        if name not in arms or (name == "per-ue" and ues > per_ue_max):
            continue
        fed = in_child("fedsim", **base, **extra)
        print(f"  {label} (set-up {fed['setup']:.1f} s, peak {fed['peak_mb']:.0f} MB):")
        if extra.get("eval_every", 1) == 1:
            print(ratio_line("per round", fed["per_round"], per_round, 2.0))
        print(ratio_line("whole run", fed["total"], per_round * rounds, 2.0))
        if device.startswith("cuda") and ues == 10_000 and rounds == 100:  # the GPU target
            verdict = "met" if fed["total"] <= GPU_TARGET_S else "NOT met"
            print(f"  whole run on the GPU: {fed['total']:.1f} s (target <= {GPU_TARGET_S:g} s: {verdict})")


def overlapped(ues: int, rounds: int, device: str) -> None:
    """The overlapped relay (K = 2, D = 2, swap) on both paths: no plain-loop reference does its maths."""
    base = {"ues": ues, "rounds": rounds, "device": device, "overlap": True, "eval_every": rounds}
    per_ue = in_child("fedsim", **base, population=False)
    pop = in_child("fedsim", **base, population=True)
    print(f"{ues} UEs x {rounds} rounds, serverfree-relay with strategy.overlap (K = 2, D = 2), metrics at the end:")
    for label, key in (("per round", "per_round"), ("whole run", "total")):
        print(f"  {label}: per-UE path {per_ue[key]:8.3f} s, population path {pop[key]:8.3f} s "
              f"-> {per_ue[key] / pop[key]:5.2f}x faster")


def grid(device: str, flower_rounds: int, samples: list[int]) -> None:
    """grid_240's wall time against the plain-loop cost of its UE-rounds on every core; then, for
    each of ``samples``, the grid again with that many UE-held models scored per round."""
    from fedsim.api import run

    cores = os.cpu_count() or 1
    # one 20-UE loop run is half a second, and single runs vary by +-20 %: the median of seven
    per_ue_round = statistics.median(plain_loop(relay_config(20, 100, device)) / 20 for _ in range(7))
    floor = per_ue_round * GRID_UE_ROUNDS / cores
    print(f"grid_240 ({GRID_UE_ROUNDS:,} UE-rounds on {cores} cores; plain loop {1e3 * per_ue_round:.3f} ms per "
          "UE-round, median of 7 runs of 20 UEs x 100 rounds):")
    walls = []
    for sample in [0, *samples]:
        start = time.perf_counter()
        run("grid_240", [f"eval_ue_sample={sample}"] if sample else [], out=tempfile.mkdtemp(prefix="fsg"))
        walls.append(time.perf_counter() - start)
        label = "all 20 UE-held models scored" if not sample else f"{sample} of 20 scored (eval_ue_sample)"
        print(ratio_line(f"wall, {label:<34}", walls[-1], floor, 2.0))
    wall = walls[0]  # the shipped grid, for the ratio ahead of Flower
    if flower_rounds:
        from bench_ray_vs_flower import flower_rounds as flower

        t0 = time.perf_counter()
        times = flower(20, flower_rounds, 1, 0.3, cores, 0.1)
        warm = (times[-1] - times[0]) / (len(times) - 1)
        per_run = (times[0] - t0 - warm) + 100 * warm  # start-up, then 100 warm rounds
        print(f"  plain Flower run by run ({flower_rounds}-round sample: {per_run:.1f} s per run of 100 rounds, "
              f"x 240 runs = {240 * per_run:.0f} s) -> fedsim is {240 * per_run / wall:.0f}x ahead")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ues", type=int, nargs="+", default=[1000])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--eval-every", type=int, default=10,
                    help="the population path's arm with metrics only every this many rounds")
    ap.add_argument("--per-ue-max", type=int, default=2000, help="skip the per-UE path above this many UEs")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                    help="fedsim arms to run beside the loop (default: all)")
    ap.add_argument("--overlap", action="store_true", help="also the overlapped relay on both paths")
    ap.add_argument("--grid", action="store_true", help="also grid_240 and the plain-Flower sample")
    ap.add_argument("--flower-rounds", type=int, default=20, help="rounds of the Flower sample (0: skip)")
    ap.add_argument("--grid-samples", type=int, nargs="*", default=[],
                    help="with --grid: run the grid again with this many UE-held models scored per round")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; torch "
          f"{torch.__version__}, 1 thread per process")
    for ues in args.ues:
        population(ues, args.rounds, args.device, args.eval_every, args.per_ue_max, tuple(args.arms))
        if args.overlap:
            overlapped(ues, args.rounds, args.device)
    if args.grid:
        grid(args.device, args.flower_rounds, args.grid_samples)


if __name__ == "__main__":
    main()
