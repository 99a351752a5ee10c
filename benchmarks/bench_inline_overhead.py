"""(b) The inline engine's cost per UE-round vs a plain Python loop doing the same local steps.

Run: ``python benchmarks/bench_inline_overhead.py`` (about 20 s on 2 cores).

Both sides train ``synthetic-logreg`` (d = 610, full-batch gradients) with N UEs and K local SGD
steps per round, average the models with weights q_n (``server-digital``: error-free FedAvg),
and evaluate the global model on the server every ``--eval-every`` rounds. The plain loop calls
the same workload methods (``local_sgd``, ``evaluate``) directly; fedsim goes through its
ServerApp, Flower Messages and ArrayRecords, its ClientApp, strategy, analytics and run
directory. Both final models must agree (checked), so the work is the same.

The cost is the mean time of a warm round (rounds ``--warmup``+1 .. R) divided by N. The ratio
is printed with evaluation every round and with evaluation only at the end (engine overhead
alone). Torch runs single-threaded, as in fedsim's workers. fedsim's per-round checkpoints
(two fsyncs per round) are off by default here, as the plain loop has none; ``--checkpoint-every
-1`` measures them too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch

from fedsim.config import ExperimentConfig, validate
from fedsim.runner import run_experiment
from fedsim.runtime.recorder import Recorder
from fedsim.runtime.schedule import make_lr
from fedsim.workloads import build_workload


def config(ues: int, rounds: int, steps: int, lr: float, eval_every: int, ckpt: int | None,
           batched: bool = False) -> ExperimentConfig:
    return validate({
        "name": "bench-inline", "rounds": rounds, "seed": 0, "eval_every": eval_every,
        "checkpoint": {} if ckpt is None else {"every": ckpt},
        "workload": {"name": "synthetic-logreg", "num_ues": ues, "batch_size": 0},
        "train": {"local_steps": steps, "lr": {"eta": lr}},
        "strategy": {"name": "server-digital"},
        "engine": {"name": "inline", "batched": batched},
        "output": {"dir": tempfile.mkdtemp(prefix="fsb"), "plot": False},
    })


def fedsim_inline(cfg: ExperimentConfig) -> tuple[list[float], torch.Tensor]:
    """Round-end times and the final model of a fedsim run on the inline engine."""
    times: list[float] = []
    log = Recorder.log

    def timed(self: Recorder, row: dict) -> None:
        log(self, row)
        times.append(time.perf_counter())

    result: dict[str, Any] = {}
    Recorder.log = timed  # type: ignore[method-assign]
    try:
        run_experiment(cfg, quiet=True, result=result)
    finally:
        Recorder.log = log  # type: ignore[method-assign]
    return times, result["final_model"]


def plain_loop(cfg: ExperimentConfig) -> tuple[list[float], torch.Tensor]:
    """The same FedAvg as a Python loop over rounds and UEs on the workload's own methods."""
    wl = build_workload(cfg.workload, cfg.seed)
    K, n = cfg.train.local_steps, wl.num_ues
    lr = make_lr(cfg.train.lr, cfg.rounds * K)
    q = wl.ue_weights().to(wl.dtype)
    w = wl.init_params()
    wl.evaluate(w)
    times = [time.perf_counter()]
    for r in range(1, cfg.rounds + 1):
        models = torch.stack([wl.local_sgd(w, ue, (r - 1) * K, K, lr) for ue in range(n)])
        w = q @ models
        if r % cfg.eval_every == 0 or r == cfg.rounds:
            wl.evaluate(w)
        times.append(time.perf_counter())
    return times, w


def per_ue_round_ms(times: list[float], ues: int, warmup: int) -> float:
    return 1e3 * (times[-1] - times[warmup]) / (len(times) - 1 - warmup) / ues


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ues", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1, help="local SGD steps K per round")
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--warmup", type=int, default=3, help="rounds left out of the timing")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs per side")
    ap.add_argument("--batched", action="store_true",
                    help="fedsim with engine.batched = true (all UEs' steps at once); the plain loop stays per UE")
    ap.add_argument("--checkpoint-every", type=int, default=0,
                    help="fedsim's checkpoint.every (default 0: none, like the plain loop; -1: fedsim's auto)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = None if args.checkpoint_every < 0 else args.checkpoint_every
    print(f"synthetic-logreg (d = 610), N = {args.ues} UEs, K = {args.steps}, {args.rounds} rounds, "
          f"server-digital, 1 thread, fedsim checkpoint.every = {'auto' if ckpt is None else ckpt}, "
          f"engine.batched = {args.batched}; "
          f"best of {args.repeat}")
    for label, every in (("eval every round", 1), ("eval at the end  ", args.rounds)):
        cfg = config(args.ues, args.rounds, args.steps, args.lr, every, ckpt, args.batched)
        build_workload(cfg.workload, cfg.seed)  # data and optimum built once, outside the timing
        plain = fed = float("inf")
        for _ in range(args.repeat):
            t_plain, w_plain = plain_loop(cfg)
            t_fed, w_fed = fedsim_inline(cfg)
            torch.testing.assert_close(w_fed, w_plain, rtol=1e-9, atol=1e-12)  # same work, same numbers
            plain = min(plain, per_ue_round_ms(t_plain, args.ues, args.warmup))
            fed = min(fed, per_ue_round_ms(t_fed, args.ues, args.warmup))
        print(f"  {label}: plain loop {plain:6.3f} ms, fedsim inline {fed:6.3f} ms per UE-round; "
              f"ratio {fed / plain:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
