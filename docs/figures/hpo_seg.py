"""The seg-unet search at 15 CPU-minutes (docs/results/hpo.md, "Segmentation").

    python docs/figures/hpo_seg.py run --out /tmp/hpo-seg    # the searches; appends to hpo_seg_runs.json
    python docs/figures/hpo_seg.py table                     # the rows of the page
    python docs/figures/hpo_seg.py figure                    # docs/figures/hpo_seg.png

``run`` goes through the (method, seed) traces of docs/examples/hpo_seg_budget.toml one at a time
(two ``run`` processes with different ``--methods`` may run side by side):
a ``fedsim search`` of that one trace (its candidates one after another, inline engine), then a
``fedsim run`` of the trace's incumbent (the candidate with the best reward, first on ties) at the
base's full fidelity (20 UEs, 30 rounds). Every child runs with one torch thread; the CPU time of
each (user + system, from ``getrusage`` of the children) and its wall time are recorded. A full-
fidelity run of an incumbent already measured by an earlier trace is not repeated: its recorded
CPU time is charged to this trace too. Traces already in the JSON are skipped, so a killed ``run``
continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import tomli_w

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent / "examples" / "hpo_seg_budget.toml"
RUNS = HERE / "hpo_seg_runs.json"
FULL = ["rounds=30", "workload.num_ues=20"]  # the base's full fidelity


def _child(cmd: list[str], nice: int) -> tuple[float, float]:
    """Run ``cmd`` (niced, one thread); return (CPU seconds, wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(["nice", "-n", str(nice), *cmd], check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def _append(trace: dict, spec: str) -> None:
    """Add ``trace`` to the JSON under a lock, re-reading it first: two ``run`` processes (say, one
    per method) can share the file."""
    import fcntl

    with open(RUNS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _load()
        data["spec"] = spec
        data["traces"].append(trace)
        RUNS.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _load() -> dict:
    return json.loads(RUNS.read_text(encoding="utf-8")) if RUNS.is_file() else {"traces": []}


def run(out: Path, seeds: list[int], methods: list[str], nice: int) -> None:
    spec = tomllib.loads(SPEC.read_text(encoding="utf-8"))
    data = _load()
    data["spec"] = str(SPEC.relative_to(HERE.parent.parent))
    full_cache = {json.dumps(t["incumbent"]["config"], sort_keys=True): t["incumbent"] for t in data["traces"]}
    out.mkdir(parents=True, exist_ok=True)
    fedsim = str(Path(sys.executable).with_name("fedsim"))
    for seed in seeds:
        for method in methods:
            if any(t["method"] == method and t["seed"] == seed for t in data["traces"]):
                continue
            one = {**spec, "name": f"hpo-seg-{method}-s{seed}", "methods": [method], "seeds": [seed],
                   "experiment": "seg_unet"}
            spec_path = out / f"{one['name']}.toml"
            spec_path.write_text(tomli_w.dumps(one), encoding="utf-8")
            before = set(out.glob(f"{one['name']}-*"))
            cpu, wall = _child([fedsim, "search", str(spec_path), "--out", str(out), "--quiet"], nice)
            folder = sorted(set(out.glob(f"{one['name']}-*")) - before)[-1]
            recs = [json.loads(line) for line in (folder / "candidates.jsonl").read_text().splitlines()]
            best = max(range(len(recs)), key=lambda i: (recs[i]["reward"], -i))  # first of the best
            inc = recs[best]
            key = json.dumps(inc["config"], sort_keys=True)
            if key in full_cache:
                full = {**full_cache[key], "reused": True}
            else:
                cfg = folder / inc["run_dir"] / "config.toml"
                name = f"full-{method}-s{seed}"
                fcpu, fwall = _child([fedsim, "run", str(cfg), "--engine", "inline", "--quiet",
                                      *[a for s in [*FULL, f"output.dir={out}", f"output.run_name={name}"]
                                        for a in ("--set", s)]], nice)
                run_dir = sorted(out.glob(f"*{name}*"))[-1]
                final = json.loads((run_dir / "summary.json").read_text())["final"]
                full = {"config": inc["config"], "cpu_s": round(fcpu, 1), "wall_s": round(fwall, 1),
                        **{k: round(final[k], 4) for k in ("dice", "dice_lv", "dice_myo", "dice_rv")},
                        "reused": False}
                full_cache[key] = full
            trace = {
                "method": method, "seed": seed, "evaluations": len(recs), "folder": folder.name,
                "search_cpu_s": round(cpu, 1), "search_wall_s": round(wall, 1),
                "candidates": [{"config": r["config"], "dice": round(r["value"], 4),
                                "reward": round(r["reward"], 4)} for r in recs],
                "incumbent": {**full, "n": best, "screen_dice": round(inc["value"], 4),
                              "screen_reward": round(inc["reward"], 4)}}
            data["traces"].append(trace)
            _append(trace, data["spec"])
            print(f"{method} s{seed}: search {cpu / 60:.1f} CPU-min, incumbent {inc['config']} "
                  f"full Dice {full['dice']:.3f} (myo {full['dice_myo']:.3f}), "
                  f"total {(cpu + full['cpu_s']) / 60:.1f} CPU-min", flush=True)


def _arch(config: dict) -> str:
    f = [config[f"workload.filters[{i}]"] for i in range(3)]
    k = [config[f"workload.kernels[{i}]"] for i in range(3)]
    p = [config[f"workload.pooling[{i}]"] for i in range(2)]
    return f"{f}, k {k}, {'/'.join(p)}"


def table() -> None:
    data = _load()
    print("| method | seed | evaluations | incumbent (filters, kernels, pooling) | screening Dice | "
          "full Dice | LV | myocardium | RV | CPU-min search + full run | wall-min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in sorted(data["traces"], key=lambda t: (t["method"], t["seed"])):
        i = t["incumbent"]
        cpu = (t["search_cpu_s"] + i["cpu_s"]) / 60
        wall = (t["search_wall_s"] + (0 if i["reused"] else i["wall_s"])) / 60
        print(f"| {t['method']} | {t['seed']} | {t['evaluations']} | {_arch(i['config'])} | {i['screen_dice']:.3f} "
              f"| {i['dice']:.3f} | {i['dice_lv']:.3f} | {i['dice_myo']:.3f} | {i['dice_rv']:.3f} "
              f"| {t['search_cpu_s'] / 60:.1f} + {i['cpu_s'] / 60:.1f} = {cpu:.1f} | {wall:.1f} |")
    print()
    print("| method | seeds | full Dice median [range] | myocardium median [range] | CPU-min median [range] |")
    print("|---|---|---|---|---|")
    for m in sorted({t["method"] for t in data["traces"]}):
        ts = [t for t in data["traces"] if t["method"] == m]
        dice = _span([t["incumbent"]["dice"] for t in ts])
        myo = _span([t["incumbent"]["dice_myo"] for t in ts])
        cpu = _span([(t["search_cpu_s"] + t["incumbent"]["cpu_s"]) / 60 for t in ts], ".1f")
        print(f"| {m} | {len(ts)} | {dice} | {myo} | {cpu} |")


def _span(v: list[float], fmt: str = ".3f") -> str:
    return f"{statistics.median(v):{fmt}} [{min(v):{fmt}}, {max(v):{fmt}}]"


def figure() -> None:
    """Left: the incumbent's screening Dice (10 UEs, 10 rounds) against evaluations, one line per
    trace. Right: the incumbent's full-fidelity mean foreground and myocardium Dice per trace, and
    the grid's centre (the base U-Net) from docs/figures/segmentation_runs.json."""
    import numpy as np

    from fedsim import figstyle

    data = _load()
    methods = sorted({t["method"] for t in data["traces"]}, key=["rl", "random"].index)
    with figstyle.style():
        fig, axes = figstyle.new_figure(2, ncols=2, width=figstyle.PAGE_WIDTH)
        left, right = axes.flat
        handles = []
        for i, m in enumerate(methods):
            st = figstyle.group_style(i)
            ts = sorted((t for t in data["traces"] if t["method"] == m), key=lambda t: t["seed"])
            for t in ts:
                best, inc = -np.inf, []
                for c in t["candidates"]:  # the incumbent: best reward, first on ties
                    if c["reward"] > best:
                        best, val = c["reward"], c["dice"]
                    inc.append(val)
                (line,) = left.plot(np.arange(1, len(inc) + 1), inc, **{**st, "linewidth": 1.0})
            handles.append((line, f"{m} ({len(ts)} seeds)"))
            x = i + np.linspace(-0.12, 0.12, len(ts))
            right.plot(x - 0.2, [t["incumbent"]["dice"] for t in ts], "o", color=st["color"], markersize=4)
            right.plot(x + 0.2, [t["incumbent"]["dice_myo"] for t in ts], "s", color=st["color"], markersize=4,
                       markerfacecolor="none")
        # the grid's centre, the base U-Net, at full fidelity (docs/results/segmentation.md, seed 0)
        base = next(r for r in json.loads((HERE / "segmentation_runs.json").read_text(encoding="utf-8"))
                    if r["filters"] == [8, 16, 32] and r["seed"] == 0)
        j = len(methods)
        right.plot([j - 0.2], [base["dice"]], "x", color="0.2", markersize=5)
        right.plot([j + 0.2], [base["dice_myo"]], "x", color="0.2", markersize=5)
        methods = [*methods, "centre"]
        left.set_xlabel("evaluations")
        left.set_ylabel("incumbent's screening Dice")
        right.axhline(0.90, color="0.4", **figstyle.REFERENCE)
        right.axhline(0.83, color="0.4", **figstyle.REFERENCE)
        right.set_xticks([j + d for j in range(len(methods)) for d in (-0.2, 0.2)],
                         [f"{m}\n{w}" for m in methods for w in ("mean", "myo.")])
        right.set_ylabel("full-fidelity Dice")
        figstyle.legend_below(fig, [h for h, _ in handles], [lab for _, lab in handles],
                              title="per search seed; dashed: targets 0.90 (mean) and 0.83 (myocardium)")
    figstyle.save(fig, HERE / "hpo_seg", formats=("png",))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, default=Path("runs"))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--methods", nargs="+", default=["rl", "random"])
    r.add_argument("--nice", type=int, default=15)
    sub.add_parser("table")
    sub.add_parser("figure")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.out, args.seeds, args.methods, args.nice)
    elif args.cmd == "table":
        table()
    else:
        figure()


if __name__ == "__main__":
    main()
