"""The ``fedsim`` command line. Every user error exits with code 2 and a message that says
what to change; nothing is written before the experiment validates. A sweep in which a variant
failed while running exits with code 1; Ctrl-C exits with 130.

The commands import the run machinery (torch, Flower) when they run, not at import, so that
``fedsim --help`` and ``fedsim list`` answer at once."""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

import fedsim
from fedsim.cli_report import report
from fedsim.cli_search import search
from fedsim.errors import FedsimError, RunInterrupted

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Simulate federated learning at the wireless edge (Flower on Ray).")
err = Console(stderr=True)


#: Exit codes: user error (nothing written), a sweep with a variant that failed while running,
#: Ctrl-C (as for SIGINT).
USER_ERROR, VARIANT_FAILED, INTERRUPTED = 2, 1, 130


def _fail(exc: FedsimError) -> None:
    if isinstance(exc, RunInterrupted):  # Ctrl-C: not a user error
        hint = "" if "--resume" in str(exc) else "; continue with: fedsim run --resume RUN_DIR"
        err.print(f"{exc}{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=INTERRUPTED)
    # escaped: messages quote TOML and pip extras ("fedsim[tensorboard]") that rich would read as markup
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code=USER_ERROR)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"fedsim {fedsim.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    pass


@app.command()
def run(
    experiment: Annotated[
        Path | None, typer.Argument(help="experiment TOML file, or the name of a shipped experiment (see "
                                         "fedsim list); omit for the quickstart", show_default=False)
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override KEY.PATH=VALUE (repeatable); quote an item "
                                                     "with spaces: --set 'sweep.seed=[0, 1]'")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="ray (default) or inline; a sweep's variants run in "
                                                    "parallel as Ray tasks with ray, one after another "
                                                    "with inline")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="join an existing Ray cluster, e.g. 127.0.0.1:6379")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="parent folder for run directories and sweep folders (default: runs)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    resume: Annotated[
        Path | None, typer.Option(help="continue RUN_DIR from its last checkpoint (metrics identical to an "
                                       "uninterrupted run), or SWEEP_DIR: its unfinished variants")
    ] = None,
) -> None:
    """Run an experiment and write its run directory.

    EXPERIMENT is a TOML file or the name of a shipped experiment (`fedsim list`); without it,
    the quickstart runs.

    An experiment with a non-empty `[sweep]` table is a sweep: every variant of the grid runs in
    one sweep folder (index.json, a run directory per variant, figures/). **Sweep variants run in
    parallel as Ray tasks** with the `ray` engine (the default), one CPU each; with
    `--engine inline` they run one after another in this process. Every variant is validated
    and preflighted before anything is written.

    Exit codes: 0 done; 1 a sweep variant failed while running (see index.json; `--resume`
    reruns it); 2 bad input, nothing written; 130 stopped by Ctrl-C (`--resume` continues).

    Examples:

        fedsim run                                   # the shipped quickstart
        fedsim run quickstart --set rounds=20 --set workload.num_ues=10
        fedsim run my-experiment.toml --engine inline
        fedsim run heavy_tail --ray-address 127.0.0.1:6379
        fedsim run quickstart --set 'sweep.seed=[0, 1, 2]'
        fedsim run --resume runs/quickstart-20250101T000000Z   # a run or a sweep, after a crash or kill
    """
    overrides = _cli_overrides(set_, engine, ray_address, out)
    if resume is not None:
        _resume(resume, experiment, overrides, quiet)
        return
    _run(experiment, overrides, quiet)


def _cli_overrides(set_: list[str] | None, engine: str | None, ray_address: str | None, out: Path | None) -> list[str]:
    """``--set`` items plus the options that are shorthands for keys."""
    from fedsim.config import shorthand_overrides

    return [*(set_ or []), *shorthand_overrides(engine, out, ray_address)]


def _run(experiment: Path | None, overrides: list[str], quiet: bool) -> None:
    from fedsim.api import run
    from fedsim.results.sweepdir import is_sweep_dir

    try:
        folder = run(experiment, overrides, quiet=quiet)
    except FedsimError as exc:
        _fail(exc)
    if is_sweep_dir(folder):
        _sweep_report(folder)
    else:
        _report(folder)


def _resume(path: Path, experiment: Path | None, overrides: list[str], quiet: bool) -> None:
    from fedsim.api import resume
    from fedsim.results.sweepdir import is_sweep_dir

    try:
        resume(path, overrides, experiment=experiment, quiet=quiet)
    except FedsimError as exc:
        _fail(exc)
    if is_sweep_dir(path):
        _sweep_report(path)
    else:
        _report(path)


def _report(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary.get("final", {})
    # metrics.jsonl writes a non-finite value as null (a diverged run's last loss, for one)
    shown = ", ".join(f"{k}={'non-finite' if final[k] is None else format(final[k], '.4g')}"
                      for k in ("loss", "accuracy", "gap") if k in final)
    typer.echo(
        f"{summary['status']}: {summary['rounds']} rounds in {summary['wall_s']:.1f} s; {shown}"
    )
    found = summary.get("search")
    if found:
        from fedsim.results.architecture import architecture_text

        res, re = found.get("resources", {}), found.get("retrain", {})
        typer.echo(f"found architecture: {architecture_text(found.get('architecture'))}")
        typer.echo(f"  {res.get('params')} parameters, {res.get('flops')} FLOPs/example, "
                   f"{res.get('latency_ms')} ms/example (architecture.json)")
        budget = found.get("budget")
        if budget:
            limits = ", ".join(f"{k} = {budget[k]}" for k in ("max_params", "max_flops") if budget.get(k) is not None)
            typer.echo(f"  budget {limits}: {'met' if budget.get('met') else 'NOT met'}")
        if re:
            acc = re.get("final", {}).get("accuracy")
            typer.echo(f"  retrained from scratch: {re.get('status')}, {re.get('rounds')} rounds"
                       + (f", accuracy={acc:.4g}" if acc is not None else "") + f" ({re.get('run_dir', '')})")
    typer.echo(f"run directory: {run_dir}")


def _sweep_report(sweep_dir: Path) -> None:
    """The table of variants; exit code 1 if one failed while running (or was cut off)."""
    from rich.table import Table

    from fedsim.sweep import read_index, sweep_table
    from fedsim.sweep.resume import DONE

    rows = sweep_table(sweep_dir)
    keys = ["loss", "accuracy", "gap"]
    if any(row["retrained_accuracy"] is not None for row in rows):  # architecture searches
        keys.append("retrained_accuracy")
    table = Table("variant", "status", "rounds", *(k.replace("_", " ") for k in keys),
                  title=f"sweep {read_index(sweep_dir).get('name', sweep_dir.name)}")
    for row in rows:
        rounds = "-" if row["rounds"] is None else str(row["rounds"])
        finals = ("-" if row[k] is None else f"{row[k]:.4g}" for k in keys)
        table.add_row(row["id"], str(row["status"]), rounds, *finals)
    Console(width=max(120, Console().width)).print(table)
    typer.echo(f"sweep folder: {sweep_dir}")
    bad = [row["id"] for row in rows if row["status"] not in DONE]
    if bad:
        err.print(f"[bold red]error:[/] {len(bad)} of {len(rows)} variants did not finish (first: {bad[0]}); "
                  f"their errors are in {sweep_dir / 'index.json'}; rerun them with: fedsim run --resume {sweep_dir}",
                  highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(code=VARIANT_FAILED)


@app.command()
def plot(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="one or more run directories or sweep folders")
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option(help="metric to plot (repeatable); default loss, accuracy, gap"),
    ] = None,
    x: Annotated[str, typer.Option(help="x axis: round or sim_time")] = "round",
    out: Annotated[
        Path | None,
        typer.Option(help="output file without extension (PNG and PDF are written)"),
    ] = None,
) -> None:
    """Overlay runs; runs that differ only in seed become a median line with an IQR band.

    A sweep folder stands for all of its variants' run directories. The figure is one column wide
    (3.5 in, 8-pt text), one panel per metric, the legend below: axis labels with symbols and
    units, legend entries naming what differs between the runs, log-log axes for gap and
    distance against rounds, bands only across two or more seeds. Written as PDF and as PNG at
    200 dpi.

    Examples:

        fedsim plot runs/a-* runs/b-* --metric gap --x sim_time --out figs/gap
        fedsim plot runs/my-sweep-20250101T000000Z --x sim_time
    """
    from fedsim.plots import plot_runs

    target = out or (run_dirs[0] / "figures" / f"{'-'.join(metric or ['default'])}-vs-{x}")
    try:
        written = plot_runs(run_dirs, metrics=metric, x=x, out=target)
    except FedsimError as exc:
        _fail(exc)
    for p in written:
        typer.echo(str(p))


@app.command("list")
def list_experiments() -> None:
    """List the experiments shipped with fedsim, and the folder they live in.

    Run one by name (`fedsim run heavy_tail`); copy its file to change it.
    """
    from fedsim.config import EXPERIMENTS_DIR

    files = sorted(EXPERIMENTS_DIR.glob("*.toml"))
    if not files:
        typer.echo(f"no experiments found in {EXPERIMENTS_DIR}")
        return
    typer.echo(f"shipped experiments (run one with `fedsim run NAME`; copy its file from {EXPERIMENTS_DIR} "
               "to change it):")
    rows = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        try:
            name = str(tomllib.loads(text).get("name", f.stem))
        except tomllib.TOMLDecodeError:
            name = f.stem
        rows.append((f.stem, name, _description(text)))
    wide = [max(len(r[k]) for r in rows) for k in (0, 1)]
    indent = " " * (2 + wide[0] + 2 + wide[1] + 2)
    width = max(len(indent) + 30, shutil.get_terminal_size((100, 24)).columns)
    for stem, name, desc in rows:
        first = f"  {stem:<{wide[0]}}  {name:<{wide[1]}}  "
        typer.echo(textwrap.fill(desc, width, initial_indent=first, subsequent_indent=indent,
                                  break_on_hyphens=False) if desc else first)


# A sentence ends at . ! or ? before a space, except after these abbreviations.
_SENTENCE_END = re.compile(r"[.!?](?=\s)")
_NOT_AN_END = (" al.", "e.g.", "i.e.", " vs.", " fig.", " cf.")


def _description(text: str) -> str:
    """The first sentence of a file's leading comment, however many lines it spans."""
    lines = []
    for line in text.splitlines():
        body = line[1:].strip() if line.startswith("#") else ""
        if not body or line.startswith("#   "):  # the paragraph ends (a blank line, a command example)
            break
        lines.append(body)
    paragraph = " ".join(lines)
    for m in _SENTENCE_END.finditer(paragraph):
        if not paragraph[: m.end()].lower().endswith(_NOT_AN_END):
            return paragraph[: m.end()]
    return paragraph


app.command()(report)
app.command()(search)


def main() -> None:
    try:
        app(prog_name="fedsim")
    except FedsimError as exc:  # pragma: no cover - commands catch their own
        err.print(f"error: {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
