"""Runs behind docs/results/segmentation.md and its figure.

    python docs/figures/segmentation.py run [--seeds 0 1] [--workers 2]   # segmentation_runs.json (+ the figure)
    python docs/figures/segmentation.py table                             # the table rows of the page

Every run is experiments/seg_unet.toml without its sweep, with one (filters, seed): 20 UEs, 30 rounds
x 5 local Adam steps, digital FedAvg. The run of the middle size with seed 0 also draws
segmentation_slices.png: test slices of four sites with ground truth and prediction.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "segmentation_runs.json"
SIZES = ([2, 4, 8], [4, 8, 16], [8, 16, 32], [13, 26, 52])
FIGURE_SIZE = [8, 16, 32]
METRICS = ("dice", "dice_lv", "dice_myo", "dice_rv", "accuracy", "loss")


def one(job: tuple[list[int], int]) -> dict:
    import tempfile

    import torch

    from fedsim.config import EXPERIMENTS_DIR, read_toml
    from fedsim.results.rundir import load_run
    from fedsim.runner import run_experiment
    from fedsim.sweep import expand_sweep
    from fedsim.workloads import build_workload

    torch.set_num_threads(1)
    filters, seed = job
    ov = ["sweep={}", f"workload.filters={filters}", f"seed={seed}", f"output.dir={tempfile.mkdtemp()!r}",
          "checkpoint.every=0"]
    cfg = expand_sweep(read_toml(EXPERIMENTS_DIR / "seg_unet.toml"), ov, source="seg_unet")[0].config
    t = time.perf_counter()
    res: dict = {}
    run = load_run(run_experiment(cfg, quiet=True, plot=False, result=res))
    seconds = time.perf_counter() - t
    last = [r for r in run.metrics if "dice" in r][-1]
    wl = build_workload(cfg.workload, seed)
    if filters == FIGURE_SIZE and seed == 0:
        figure(wl, res["final_model"])
    return {"filters": filters, "seed": seed, "params": wl.dim, "rounds": cfg.rounds, "seconds": seconds,
            **{k: last[k] for k in METRICS}}


def figure(wl, w) -> None:
    """Test slices of four sites: image, ground truth, prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.colors import ListedColormap

    per = wl.cfg.test_per_site
    rows = [s * per for s in (0, 5, 10, 15) if s * per < len(wl.y_test)]
    x, y = wl.x_test[rows], wl.y_test[rows]
    with torch.no_grad():
        pred = wl.logits(w.to(torch.float32), x).argmax(1)
    cmap = ListedColormap(["black", "tab:red", "tab:green", "tab:blue"])
    fig, axes = plt.subplots(3, len(rows), figsize=(1.9 * len(rows), 5.6))
    for j, r in enumerate(rows):
        for i, (img, title) in enumerate(((x[j, 0], "image"), (y[j], "truth"), (pred[j], "prediction"))):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray" if i == 0 else cmap, vmin=None if i == 0 else 0, vmax=None if i == 0 else 3,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(title)
        axes[0, j].set_title(f"site {r // per}", fontsize=9)
    fig.suptitle("seg-unet test slices (red LV, green myocardium, blue RV)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "segmentation_slices.png", dpi=110)


def run(seeds: list[int], workers: int) -> None:
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    done = {(tuple(r["filters"]), r["seed"]) for r in rows}
    jobs = [(f, s) for s in seeds for f in SIZES if (tuple(f), s) not in done]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for r in pool.imap_unordered(one, jobs):
            rows.append(r)
            OUT.write_text(json.dumps(rows, indent=1))
            print(r["filters"], r["seed"], f"dice {r['dice']:.3f}", f"{r['seconds']:.0f}s", flush=True)


def table() -> None:
    import numpy as np

    rows = json.loads(OUT.read_text())
    print("| filters | parameters | seeds | mean foreground Dice | LV | myocardium | RV | pixel accuracy "
          "| median time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in SIZES:
        sel = [r for r in rows if r["filters"] == f]
        if not sel:
            continue
        cells = []
        for k in ("dice", "dice_lv", "dice_myo", "dice_rv", "accuracy"):
            v = [r[k] for r in sel]
            cells.append(f"{np.mean(v):.3f}" + (f" ({min(v):.3f}-{max(v):.3f})" if len(v) > 1 else ""))
        seeds = ", ".join(str(r["seed"]) for r in sorted(sel, key=lambda r: r["seed"]))
        print(f"| {f} | {sel[0]['params']:,} | {seeds} | " + " | ".join(cells)
              + f" | {np.median([r['seconds'] for r in sel]):.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["run", "table"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    run(a.seeds, a.workers) if a.what == "run" else table()


if __name__ == "__main__":
    main()
