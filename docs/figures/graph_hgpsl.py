"""Runs behind docs/results/graph.md and its figure.

    python docs/figures/graph_hgpsl.py run [--folds 10] [--channel-folds 5] [--seeds 0] [--readout max-sum]
                                                 # adds the missing rows to graph_hgpsl_runs.json
    python docs/figures/graph_hgpsl.py plot    # graph_hgpsl.png from it
    python docs/figures/graph_hgpsl.py table   # the table rows of docs/results/graph.md

Every run is experiments/graph_hgpsl.toml without its sweep, with one (arm, fold, seed); the final
server model is kept to compare the first pooling's kept nodes and learned edges on the test fold
against the digital run of the same fold, seed and pooling.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "graph_hgpsl_runs.json"
ARMS = {  # name -> overrides
    "digital": ["strategy.name='server-digital'"],
    "ota-gauss": ["strategy.name='server-ota'", "channel.interference='gaussian'"],
    "ota-sas1.5": ["strategy.name='server-ota'", "channel.interference={name='sas', alpha=1.5}"],
    "ota-gauss-40dB": ["strategy.name='server-ota'", "channel.interference='gaussian'", "channel.gsnr_db=40.0"],
    "ota-sas1.5-40dB": ["strategy.name='server-ota'", "channel.interference={name='sas', alpha=1.5}",
                        "channel.gsnr_db=40.0"],
    "relay": ["strategy.name='serverfree-relay'", "channel.interference='gaussian'"],
    "relay-40dB": ["strategy.name='serverfree-relay'", "channel.interference='gaussian'", "channel.gsnr_db=40.0"],
    "digital-r0.8": ["strategy.name='server-digital'", "workload.pooling_ratio=0.8"],
    "digital-cuneiform": ["strategy.name='server-digital'", "workload.dataset='cuneiform'"],
    "digital-synthetic": ["strategy.name='server-digital'", "workload.dataset='synthetic'"],
}  # analog arms at the experiment's 20 dB unless named; "digital*" arms run both poolings on every fold


# run only when named with --arms
OPTIONAL = ("relay", "relay-40dB", "digital-r0.8", "digital-cuneiform", "digital-synthetic")


def one(job: tuple[str, bool, int, int, int, str]) -> dict:
    import tempfile

    import torch

    from fedsim.config import EXPERIMENTS_DIR, read_toml
    from fedsim.results.rundir import load_run
    from fedsim.runner import run_experiment
    from fedsim.sweep import expand_sweep

    torch.set_num_threads(1)
    arm, sl, fold, seed, rounds, readout = job
    ov = ["sweep={}", f"workload.structure_learning={str(sl).lower()}", f"workload.fold={fold}", f"seed={seed}",
          f"rounds={rounds}", f"workload.readout={readout!r}",
          *ARMS[arm], f"output.dir={tempfile.mkdtemp()!r}", "checkpoint.every=0"]
    cfg = expand_sweep(read_toml(EXPERIMENTS_DIR / "graph_hgpsl.toml"), ov, source="graph_hgpsl")[0].config
    t = time.perf_counter()
    res: dict = {}
    run = load_run(run_experiment(cfg, quiet=True, plot=False, result=res))
    seconds = time.perf_counter() - t
    last = [r for r in run.metrics if "accuracy" in r][-1]
    from fedsim.workloads import build_workload

    wl = build_workload(cfg.workload, seed)
    # server-free: "accuracy" is the median over the UE-held models; the structure is UE 0's model's
    model = res["final_model"] if "final_model" in res else res["final_models"][0]
    struct = [(sorted(k), sorted(e)) for k, e in wl.pooled_structure(model)]
    return {"arm": arm, "sl": sl, "fold": fold, "seed": seed, "rounds": rounds, "readout": readout,
            "accuracy": last["accuracy"], "avg_accuracy": last.get("avg_accuracy"),
            "loss": last["loss"], "seconds": seconds, "structure": struct}


def key(r: dict) -> tuple:
    """(arm, structure learning, fold, seed, rounds, readout) of a row; rows from before the
    readout option used the published ``max-mean``."""
    return r["arm"], r["sl"], r["fold"], r["seed"], r.get("rounds", 40), r.get("readout", "max-mean")


def run(folds: int, channel_folds: int, seeds: list[int], workers: int, rounds: int, readout: str,
        arms: list[str]) -> None:
    """The digital arms with and without structure learning on ``folds`` folds; the analog arms (with
    structure learning) on the first ``channel_folds``. Rows already in the output are kept."""
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    done = {key(r) for r in rows}
    digital = [a for a in arms if a.startswith("digital")]
    jobs = [(a, sl, f, s, rounds, readout) for a in digital for s in seeds for f in range(folds)
            for sl in (True, False)]
    jobs += [(a, True, f, s, rounds, readout) for s in seeds for f in range(channel_folds) for a in arms
             if a not in digital]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for r in pool.imap_unordered(one, [j for j in jobs if j not in done]):
            rows.append(r)
            OUT.write_text(json.dumps(rows))
            print(r["arm"], r["sl"], r["fold"], r["seed"], f"{r['accuracy']:.3f}", f"{r['seconds']:.0f}s", flush=True)


def changes(a: list, b: list) -> tuple[float, float]:
    """Mean over test graphs: fraction of kept nodes that differ; 1 − Jaccard of the learned edges."""
    kept, edges = [], []
    for (ka, ea), (kb, eb) in zip(a, b, strict=True):
        kept.append(1 - len(set(ka) & set(kb)) / len(ka))
        ea, eb = {tuple(e) for e in ea}, {tuple(e) for e in eb}
        edges.append(1 - len(ea & eb) / max(1, len(ea | eb)))
    return sum(kept) / len(kept), sum(edges) / len(edges)


def groups(rows: list[dict]) -> list[tuple[str, bool, int, str, list[dict]]]:
    """(arm, structure learning, rounds, readout, rows) for every arm measured, in the table's order."""
    out = []
    for readout in ("max-mean", "max-sum"):
        for rounds in sorted({r.get("rounds", 40) for r in rows}):
            for arm in ARMS:
                for sl in (True, False):
                    sel = [r for r in rows if key(r)[:2] == (arm, sl) and key(r)[4:] == (rounds, readout)]
                    if sel:
                        out.append((arm, sl, rounds, readout, sel))
    return out


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    found = groups(json.loads(OUT.read_text()))
    labels = [f"{arm}\n{'HGP-SL' if sl else 'top-k'}\nR={rounds}\n{ro}" for arm, sl, rounds, ro, _ in found]
    accs = [[r["accuracy"] for r in sel] for *_, sel in found]
    fig, ax = plt.subplots(figsize=(14, 3.8))
    ax.boxplot(accs, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=6)
    for i, acc in enumerate(accs, 1):
        ax.scatter(np.full(len(acc), i) + np.linspace(-0.12, 0.12, len(acc)), acc, s=8, alpha=0.6)
    ax.axhline(0.82, ls="--", lw=0.8, color="grey")
    ax.set_ylabel("test-fold accuracy")
    ax.set_title("10 UEs, one point per test fold and seed; MUTAG except the cuneiform and synthetic arms; "
                 "server-free: median UE-held model; triangles: means; dashed: 0.82", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "graph_hgpsl.png", dpi=120)


def table() -> None:
    import numpy as np

    rows = json.loads(OUT.read_text())
    digital = {key(r)[2:]: r for r in rows if r["arm"] == "digital" and r["sl"]}
    for arm, sl, rounds, readout, sel in groups(rows):
        acc = np.array([r["accuracy"] for r in sel])
        keys = [key(r)[2:] for r in sel]
        ch = [changes(digital[k]["structure"], r["structure"]) for k, r in zip(keys, sel, strict=True)
              if sl and not arm.startswith("digital") and k in digital]
        ref = np.mean([digital[k]["accuracy"] for k in keys if k in digital]) if ch else None
        kept = f"{np.mean([c[0] for c in ch]):.3f}" if ch else "-"
        edge = f"{np.mean([c[1] for c in ch]):.3f}" if ch else "-"
        print(f"| {readout} | {arm} | {'HGP-SL' if sl else 'top-k'} | {rounds} | {len(sel)} | {acc.mean():.3f} | "
              f"{np.median(acc):.3f} | {'-' if ref is None else f'{ref:.3f}'} | {kept} | {edge} | "
              f"{np.median([r['seconds'] for r in sel]):.0f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["run", "plot", "table"])
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--channel-folds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--readout", choices=["max-mean", "max-sum"], default="max-sum")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=[a for a in ARMS if a not in OPTIONAL])
    a = p.parse_args()
    if a.what == "run":
        run(a.folds, a.channel_folds, a.seeds, a.workers, a.rounds, a.readout, a.arms)
    else:
        plot() if a.what == "plot" else table()
