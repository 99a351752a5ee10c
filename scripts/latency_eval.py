"""The numbers of docs/results/latency.md from the shipped table (no measuring):

    python scripts/latency_eval.py --rounds 100 --lr 0.2 --out latency_eval.json

1. the table: range, split-half agreement and load average (from its metadata), how FLOPs rank it,
   how differently the profiles rank it;
2. the per-op cost model's fit per profile;
3. leave-one-profile-out: the federated predictor (FedAvg of the shared weights, exact average, the
   same arithmetic as ``server-digital``) trained on the other 7 profiles, evaluated on the held-out one
   after fitting its embedding on ``adapt_shots`` measurements (each of ``--adapt-shots``, from the same
   trained weights: the held-out profile takes no part in training);
4. the baseline: gradient boosting trained centrally on 300 architectures of the held-out profile.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy import stats
from sklearn.ensemble import GradientBoostingRegressor

from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads.latency.costmodel import cost_model
from fedsim.workloads.latency.metrics import ranking_metrics
from fedsim.workloads.latency.predictor import arch_features
from fedsim.workloads.latency.space import NUM_ARCHS, layer_features
from fedsim.workloads.latency.table import shipped_table


def fedavg(cfg: dict, rounds: int, lr: float, steps: int, shots: list[int], seed: int = 0) -> dict:
    """FedAvg training, then the held-out evaluation after adapting on each number of ``shots``."""
    wl = build_workload(parse_workload_config(cfg), seed)
    w, states = wl.init_params(), [{} for _ in range(wl.num_ues)]
    q = wl.ue_weights().to(w.dtype)
    for r in range(rounds):
        w = q @ torch.stack([wl.local_train(w, n, r * steps, steps, lambda s: lr, states[n])
                             for n in range(wl.num_ues)])
    return {str(k): build_workload(parse_workload_config({**cfg, "adapt_shots": k}), seed).evaluate(w)
            for k in shots}


def gbm_baseline(y: np.ndarray, n_train: int = 300, seed: int = 0) -> dict:
    perm = np.random.default_rng(seed).permutation(NUM_ARCHS)
    x = arch_features(np.arange(NUM_ARCHS)).reshape(NUM_ARCHS, -1).numpy()
    model = GradientBoostingRegressor(random_state=seed).fit(x[perm[:n_train]], np.log(y[perm[:n_train]]))
    return ranking_metrics(np.exp(model.predict(x[perm[n_train:]])), y[perm[n_train:]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="the workload's seed (UE data, init, the shots)")
    ap.add_argument("--adapt-shots", default="10,20", help="comma-separated adapt_shots to evaluate")
    ap.add_argument("--activation", default="relu", choices=["relu", "tanh"])
    ap.add_argument("--adapt-scale", default="mape", choices=["mape", "log"])
    ap.add_argument("--adapt-choice", default="flops-strata", choices=["flops-strata", "random"])
    ap.add_argument("--out", default="latency_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    table, cm = shipped_table(), cost_model()
    flops = layer_features(np.arange(NUM_ARCHS))["flops"]
    names = [p.name for p in table.profiles]
    rank = np.array([[stats.spearmanr(a, b).statistic for b in table.latency_ms] for a in table.latency_ms])
    out: dict = {"args": vars(args), "meta": table.meta, "profiles": {},
                 "cross_profile_spearman": rank.round(4).tolist()}
    for j, name in enumerate(names):
        y = table.latency_ms[j]
        t0 = time.time()
        cfg = {"name": "latency-predictor", "holdout_profile": name, "activation": args.activation,
               "adapt_scale": args.adapt_scale, "adapt_choice": args.adapt_choice}
        fed = fedavg(cfg, args.rounds, args.lr, args.local_steps, [int(k) for k in args.adapt_shots.split(",")],
                     args.seed)
        out["profiles"][name] = {
            "min_ms": float(y.min()), "max_ms": float(y.max()),
            "flops": {k: round(v, 4) for k, v in ranking_metrics(flops, y).items() if k != "mape"},
            "cost_model": {"spearman": cm.fit_spearman[j], "median_ape": cm.fit_median_ape[j],
                           "coef_ms_per_op_flop_output": cm.coef[j].tolist()},
            "federated_predictor": {n: {k: round(v, 4) for k, v in m.items()} for n, m in fed.items()},
            "gbm_300_central": {k: round(v, 4) for k, v in gbm_baseline(y).items()},
            "seconds": round(time.time() - t0, 1),
        }
        print(name, json.dumps(out["profiles"][name]), flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
