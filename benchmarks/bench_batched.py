"""(c) The batched path vs the plain per-UE loop, and what it saves inside the inline engine.

Run: ``python benchmarks/bench_batched.py`` (about 1 minute on 2 cores).

For each workload, FedAvg (``server-digital``) with N UEs and K local SGD steps per round, timed
four ways, per UE-round (best of ``--repeat``, warm rounds only, one torch thread):

- ``plain loop``: a Python loop over UEs calling ``local_sgd`` (the workload's per-UE gradient);
- ``batched``: the same rounds with ``local_sgd_many`` (all UEs' steps at once: a batched matmul
  for synthetic-logreg, ``torch.func.vmap`` over stacked parameters for digits-cnn / mnist-cnn);
- ``fedsim inline``: a fedsim run on the inline engine, per-UE path;
- ``fedsim batched``: the same run with ``engine.batched = true``.

The plain and batched loops must end at the same model to floating-point tolerance (checked),
and so must the two fedsim runs. ``--device cuda`` runs all four on a GPU (``engine.device``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from bench_inline_overhead import fedsim_inline as fedsim_run  # benchmarks/ is on sys.path when run as a script
from bench_inline_overhead import per_ue_round_ms

from fedsim.config import ExperimentConfig, validate
from fedsim.device import run_device
from fedsim.runtime.schedule import make_lr
from fedsim.workloads import build_workload

CASES = {
    "synthetic-logreg": {"name": "synthetic-logreg", "batch_size": 16},
    "digits-cnn": {"name": "digits-cnn", "batch_size": 16},
    "mnist-cnn": {"name": "mnist-cnn", "batch_size": 16},
}


def config(workload: dict, ues: int, rounds: int, steps: int, batched: bool, device: str = "cpu") -> ExperimentConfig:
    return validate({
        "name": "bench-batched", "rounds": rounds, "seed": 0, "eval_every": rounds,
        "checkpoint": {"every": 0}, "workload": {**workload, "num_ues": ues},
        "train": {"local_steps": steps, "lr": {"eta": 0.05}}, "strategy": {"name": "server-digital"},
        "engine": {"name": "inline", "batched": batched, "device": device},
        "output": {"dir": tempfile.mkdtemp(prefix="fsb"), "plot": False},
    })


def loop(cfg: ExperimentConfig, batched: bool) -> tuple[list[float], torch.Tensor]:
    """FedAvg rounds on the workload's own methods; round-end times and the final model."""
    device = run_device(cfg)
    wl = build_workload(cfg.workload, cfg.seed, device)
    K, n = cfg.train.local_steps, wl.num_ues
    lr = make_lr(cfg.train.lr, cfg.rounds * K)
    q = wl.ue_weights().to(wl.dtype)
    w = wl.init_params().to(device)
    ues = list(range(n))
    times = [time.perf_counter()]
    for r in range(1, cfg.rounds + 1):
        first = (r - 1) * K
        if batched:
            models = wl.local_sgd_many(w.expand(n, -1), ues, first, K, lr)
        else:
            models = torch.stack([wl.local_sgd(w, ue, first, K, lr) for ue in ues])
        w = q.to(device) @ models
        if device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: time the finished round
        times.append(time.perf_counter())
    return times, w.cpu()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--ues", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="local SGD steps K per round")
    ap.add_argument("--warmup", type=int, default=2, help="rounds left out of the timing")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs per arm")
    ap.add_argument("--device", default="cpu", help="engine.device for all four arms: cpu, cuda, cuda:N, auto")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"N = {args.ues} UEs, K = {args.steps} local steps of batch 16, {args.rounds} rounds, server-digital, "
          f"1 thread, device {args.device}; ms per UE-round, best of {args.repeat}")
    print(f"{'workload':18s} {'plain loop':>10s} {'batched':>9s} {'ratio':>6s} {'fedsim':>8s} "
          f"{'fedsim batched':>14s} {'ratio':>6s}")
    for name in args.workloads:
        cfgs = {b: config(CASES[name], args.ues, args.rounds, args.steps, b, args.device) for b in (False, True)}
        build_workload(cfgs[False].workload, 0, run_device(cfgs[False]))  # data built once, outside the timing
        best = dict.fromkeys(("plain", "batched", "fedsim", "fedsim_batched"), float("inf"))
        for _ in range(args.repeat):
            t_p, w_p = loop(cfgs[False], batched=False)
            t_b, w_b = loop(cfgs[False], batched=True)
            t_f, w_f = fedsim_run(cfgs[False])
            t_fb, w_fb = fedsim_run(cfgs[True])
            tol = 1e-9 if w_p.dtype == torch.float64 else 1e-4
            torch.testing.assert_close(w_b, w_p, rtol=tol, atol=tol)
            torch.testing.assert_close(w_fb, w_f, rtol=tol, atol=tol)
            for key, t in (("plain", t_p), ("batched", t_b), ("fedsim", t_f), ("fedsim_batched", t_fb)):
                best[key] = min(best[key], per_ue_round_ms(t, args.ues, args.warmup))
        print(f"{name:18s} {best['plain']:10.3f} {best['batched']:9.3f} {best['plain'] / best['batched']:5.2f}x "
              f"{best['fedsim']:8.3f} {best['fedsim_batched']:14.3f} {best['fedsim'] / best['fedsim_batched']:5.2f}x")


if __name__ == "__main__":
    main()
