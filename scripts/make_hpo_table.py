"""Record the tabular-mode lookup table of ``fedsim search`` (fedsim/search/data/hpo_table.json).

One small space on the cheap ``synthetic-logreg`` workload (10 UEs, over-the-air aggregation with
Gaussian interference): learning rate x local steps x minibatch size (72 configs), at the
fidelities rounds in {3, 9, 27} and geometric SNR in {0, 20} dB. Every config runs once per SNR
for 27 rounds, in this process, one thread; the lower round fidelities are the rows of that run
at rounds 3 and 9 (the learning rate is constant, so a 3-round run is exactly the first rows of a
27-round one: the script checks this for one config). Value = the test accuracy, cost = the
simulated wall clock (``sim_time``) at that round; a run that diverged before a round records no
value there (a search scores it ``fail_value``).

    python scripts/make_hpo_table.py            # about 5 minutes on 2 shared cores
    python scripts/make_hpo_table.py --check    # only the 3-round vs 27-round equality check

It prints the table's SHA-256; paste it into fedsim/search/tabular.py (SHIPPED_SHA256).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import torch

from fedsim.config import apply_overrides, read_toml, validate
from fedsim.results.rundir import read_metrics
from fedsim.runner import run_experiment
from fedsim.search.space import assignments, canonical_key
from fedsim.search.tabular import SHIPPED_TABLE, write_table

SPACE = {
    "train.lr.eta": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
    "train.local_steps": [1, 2, 4, 8],
    "workload.batch_size": [0, 8, 32],
}
FIDELITY = {"rounds": [3, 9, 27], "channel.gsnr_db": [0.0, 20.0]}
BASE = ["sweep={}", "strategy.name=server-ota", "workload.num_ues=10", "engine.name=inline",
        "output.plot=false", "checkpoint.every=0", "channel.interference=\"gaussian\""]
METRIC = "accuracy"


def run_rows(overrides: list[str], out: str) -> list[dict]:
    data = apply_overrides(read_toml("quickstart"), [*BASE, *overrides, f"output.dir={out!r}"])
    run_dir = run_experiment(validate(data, "make_hpo_table"), quiet=True)
    return read_metrics(run_dir / "metrics.jsonl")


def check_prefix(out: str) -> None:
    """A 3-round run equals the first rows of a 27-round one (value and cost)."""
    cfg = {"train.lr.eta": 0.3, "train.local_steps": 2, "workload.batch_size": 8}
    short = run_rows(assignments(cfg, {"rounds": 3, "channel.gsnr_db": 20.0}), out)
    long = run_rows(assignments(cfg, {"rounds": 27, "channel.gsnr_db": 20.0}), out)
    for key in (METRIC, "sim_time"):
        if short[3][key] != long[3][key]:
            sys.exit(f"round-3 {key} differs: {short[3][key]} vs {long[3][key]}")
    print("check: a 3-round run equals the first rows of a 27-round run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=SHIPPED_TABLE)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    records: dict[str, list[float | None]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hpo") as tmp:
        check_prefix(tmp)
        if args.check:
            return
        combos = list(itertools.product(*SPACE.values()))
        for j, combo in enumerate(combos):
            cfg = dict(zip(SPACE, combo, strict=True))
            for snr in FIDELITY["channel.gsnr_db"]:
                rows = run_rows(assignments(cfg, {"rounds": FIDELITY["rounds"][-1], "channel.gsnr_db": snr}), tmp)
                by_round = {r["round"]: r for r in rows}
                for rounds in FIDELITY["rounds"]:
                    row = by_round.get(rounds, {})
                    value = row.get(METRIC)
                    cost = row.get("sim_time", rows[-1].get("sim_time"))
                    records[canonical_key(cfg, {"rounds": rounds, "channel.gsnr_db": snr})] = [value, cost]
            print(f"{j + 1}/{len(combos)} configs, {time.monotonic() - started:.0f} s", flush=True)
    meta = {"workload": "synthetic-logreg", "base": BASE, "metric": METRIC, "maximize": True, "num_ues": 10,
            "command": "python scripts/make_hpo_table.py", "wall_s": round(time.monotonic() - started, 1)}
    sha = write_table(args.out, meta, SPACE, FIDELITY, records)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); SHA-256 {sha}")


if __name__ == "__main__":
    main()
