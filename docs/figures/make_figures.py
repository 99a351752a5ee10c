"""Redraw the committed figures of the docs from run directories or sweep folders, in fedsim's
figure style (fedsim.figstyle): one column wide, PNG at 200 dpi (and PDF with --pdf).

    python docs/figures/make_figures.py FIGURE PATH [PATH ...] [--where KEY=VALUE] [--target X]
                                        [--metric M ...] [--out DIR] [--pdf]

FIGURE is the file name without .png; PATH a sweep folder or run directories:

    quickstart                   fedsim plot: loss, accuracy, gap per round   (sweep of `quickstart`)
    moe_fluctuation              fedsim plot: routing_fluctuation per round   (`moe_switch_vs_stable`)
    server_vs_serverfree         report: gap per strategy, log-log            (`server_vs_serverfree`)
    server_vs_serverfree_theory  report: measured vs theory curves            (same, or the rho sweeps)
    heavy_tail_heatmap           report: rounds to target over (α, level)     (`heavy_tail`)
    heavy_tail_curves            fedsim plot: gap and consensus per round     (`heavy_tail`, one level)
    overlap_latency              report: accuracy vs simulated time per ratio (`overlap_latency`)

``--where channel.gsnr_db=20`` keeps only the runs whose (flattened) config has that value, for
figures drawn from part of a sweep; ``--target`` is the report's target (default: the report's
own, and 0.114 for overlap_latency, as in docs/results/claims.md; the figure itself does not depend on it).

Example (the claim figures, from the sweep folders the claims were run in):

    python docs/figures/make_figures.py server_vs_serverfree runs/server_vs_serverfree-<stamp>
    python docs/figures/make_figures.py heavy_tail_curves runs/heavy_tail-<stamp> --where channel.gsnr_db=20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

from fedsim.errors import FedsimError
from fedsim.plots import plot_runs
from fedsim.report import build_report
from fedsim.results.labels import flatten
from fedsim.results.rundir import load_run
from fedsim.results.sweepdir import expand_run_dirs

HERE = Path(__file__).resolve().parent
#: fedsim plot figures: name -> default metrics.
PLOTS = {
    "quickstart": None,  # fedsim plot's default: loss, accuracy, gap
    "moe_fluctuation": ["routing_fluctuation"],
    "heavy_tail_curves": ["gap", "consensus"],
}
#: report figures: name -> (the report's figure file, default target).
REPORT = {
    "server_vs_serverfree": ("report-server-vs-serverfree", None),
    "server_vs_serverfree_theory": ("report-curves", None),
    "heavy_tail_heatmap": ("report-heatmap", None),
    "overlap_latency": ("report-overlap", 0.114),
}


def _value(text: str) -> object:
    """A --where value as TOML reads it (``20`` a number, ``true`` a bool), else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def select(paths: Sequence[str], where: Sequence[str]) -> list[Path]:
    """The run directories under ``paths`` whose flattened config matches every KEY=VALUE."""
    runs = expand_run_dirs(list(paths))
    wanted = [(k, _value(v)) for k, _, v in (w.partition("=") for w in where)]
    keep = [r for r in runs if all(flatten(load_run(r).config).get(k) == v for k, v in wanted)]
    if not keep:
        raise SystemExit(f"no run under {', '.join(paths)} matches {' and '.join(where)}")
    return keep


def make(figure: str, paths: Sequence[str], *, where: Sequence[str] = (), target: float | None = None,
         metrics: Sequence[str] | None = None, out: Path = HERE, pdf: bool = False) -> list[Path]:
    """Draw ``figure`` from ``paths`` into ``out``; returns the files written."""
    runs = select(paths, where) if where else [Path(p) for p in paths]
    formats = ("png", "pdf") if pdf else ("png",)
    if figure in PLOTS:
        return plot_runs(runs, metrics=metrics or PLOTS[figure], out=out / figure, formats=formats)
    stem, default_target = REPORT[figure]
    with tempfile.TemporaryDirectory(prefix="fedsim-figs-") as tmp:
        build_report(runs, out=tmp, target=target if target is not None else default_target)
        written = []
        for fmt in formats:
            source = Path(tmp) / "figures" / f"{stem}.{fmt}"
            if not source.exists():
                raise SystemExit(f"the report of these runs has no {stem}.{fmt} (they do not differ in what it shows)")
            out.mkdir(parents=True, exist_ok=True)
            written.append(Path(shutil.copyfile(source, out / f"{figure}.{fmt}")))
        return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=[*PLOTS, *REPORT])
    parser.add_argument("paths", nargs="+", help="sweep folders and/or run directories")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="keep only runs whose config has this value (repeatable)")
    parser.add_argument("--target", type=float, default=None, help="the report's target (report figures)")
    parser.add_argument("--metric", action="append", default=None, help="metrics (fedsim plot figures)")
    parser.add_argument("--out", type=Path, default=HERE, help=f"output folder (default: {HERE})")
    parser.add_argument("--pdf", action="store_true", help="also write a PDF")
    args = parser.parse_args(argv)
    try:
        written = make(args.figure, args.paths, where=args.where, target=args.target, metrics=args.metric,
                       out=args.out, pdf=args.pdf)
    except FedsimError as exc:
        raise SystemExit(f"error: {exc}") from None
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
