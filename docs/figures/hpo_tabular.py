"""Searches behind docs/results/hpo.md and its figure.

    python docs/figures/hpo_tabular.py      # about a minute on 2 shared cores

Runs docs/examples/hpo_tabular.toml (every method, 20 seeds, tabular mode), copies its figure to
docs/figures/hpo_tabular.png, and prints the regret table; then runs the RL search alone with the
rewards sent digitally and over the air at three SNRs (same seeds) and prints the effect of the
analog noise on the final regret.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import tomllib
from pathlib import Path

from fedsim.search import run_search, spec_from_data

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent / "examples" / "hpo_tabular.toml"


def rows(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "curves.csv").open()))


def at(curves: list[dict], method: str, axis: str, x: float) -> dict:
    sel = [r for r in curves if r["method"] == method and r["axis"] == axis and float(r["x"]) <= x * 1.0001]
    return sel[-1]


def fmt(r: dict, key: str = "regret") -> str:
    return f"{float(r[key + '_median']):.4f} [{float(r[key + '_q25']):.4f}, {float(r[key + '_q75']):.4f}]"


def main() -> None:
    data = tomllib.loads(SPEC.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = run_search(spec_from_data(data), Path(tmp))
        shutil.copy(folder / "figures" / "search-curves.png", HERE / "hpo_tabular.png")
        curves = rows(folder)
        t_max = max(float(r["x"]) for r in curves if r["axis"] == "sim_time")
        print("| method | regret after 8 | after 16 | after 32 evaluations | at 1/4 of the largest simulated time |")
        print("|---|---|---|---|---|")
        for m in data["methods"]:
            cells = [fmt(at(curves, m, "evaluations", n)) for n in (8, 16, 32)]
            cells.append(fmt(at(curves, m, "sim_time", t_max / 4)))
            print(f"| {m} | " + " | ".join(cells) + " |")
        print(f"(largest cumulative simulated time {t_max:.3g} s)")
        print("\n| RL rewards sent | regret after 32 evaluations | best accuracy |")
        print("|---|---|---|")
        arms = [("digital", {"transport": "digital"})]
        arms += [(f"analog, Gaussian interference, {snr:g} dB", {"transport": "analog", "channel": {
            "interference": "gaussian", "gsnr_db": snr}}) for snr in (20.0, 0.0, -10.0)]
        for label, reward in arms:
            spec = spec_from_data({**data, "name": "rl-reward", "methods": ["rl"], "reward": reward})
            r = at(rows(run_search(spec, Path(tmp), plot=False)), "rl", "evaluations", 32)
            print(f"| {label} | {fmt(r)} | {fmt(r, 'best')} |")


if __name__ == "__main__":
    main()
