"""The ``fedsim`` command line. Every user error exits with code 2 and a message that says
what to change; nothing is written before the experiment validates.

The commands import the run machinery (torch, Flower) when they run, not at import, so that
``fedsim --help`` and ``fedsim list`` answer at once."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedsim.cli_report import report
from fedsim.errors import FedsimError, RunInterrupted

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Simulate federated learning at the wireless edge (Flower on Ray).")
err = Console(stderr=True)


def _fail(exc: FedsimError) -> None:
    if isinstance(exc, RunInterrupted):  # Ctrl-C: not a user error; 130 as for SIGINT
        err.print(f"{exc}; continue with: fedsim run --resume RUN_DIR", highlight=False)
        raise typer.Exit(code=130)
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    experiment: Annotated[
        Path | None, typer.Argument(help="experiment TOML file, or the name of a shipped experiment (see "
                                         "`fedsim list`); omit for the quickstart")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override KEY.PATH=VALUE (repeatable)")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="ray (default) or inline")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="join an existing Ray cluster, e.g. 127.0.0.1:6379")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="parent folder for run directories (default: runs)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    resume: Annotated[
        Path | None, typer.Option(help="continue RUN_DIR from its last checkpoint (metrics identical to an "
                                       "uninterrupted run)")
    ] = None,
) -> None:
    """Run an experiment and write its run directory.

    An experiment with a non-empty `[sweep]` table runs every variant of the grid in one sweep
    folder (index.json, a run directory per variant, figures/): in parallel as Ray tasks with
    the `ray` engine (the default), one after another with `--engine inline`.

    Examples:

        fedsim run                                   # the shipped quickstart
        fedsim run quickstart --set rounds=20 --set workload.num_ues=10
        fedsim run my-experiment.toml --engine inline
        fedsim run heavy_tail --ray-address 127.0.0.1:6379
        fedsim run quickstart --set 'sweep.seed=[0, 1, 2]'
        fedsim run --resume runs/quickstart-20250101T000000Z   # after a crash or kill
    """
    overrides = _cli_overrides(set_, engine, ray_address, out)
    if resume is not None:
        _resume(resume, experiment, overrides, quiet)
        return
    _run(experiment, overrides, quiet)


def _cli_overrides(set_: list[str] | None, engine: str | None, ray_address: str | None, out: Path | None) -> list[str]:
    """``--set`` items plus the options that are shorthands for keys."""
    overrides = list(set_ or [])
    if engine is not None:
        overrides.append(f"engine.name={engine}")
    if ray_address is not None:
        overrides.append(f"engine.ray_address={ray_address}")
    if out is not None:
        overrides.append(f"output.dir={str(out)!r}")
    return overrides


def _run(experiment: Path | None, overrides: list[str], quiet: bool) -> None:
    from fedsim.config import QUICKSTART, load_experiment, read_toml
    from fedsim.runner import run_experiment
    from fedsim.sweep import split_sweep

    try:
        source = experiment if experiment is not None else QUICKSTART
        data = read_toml(source)
        if split_sweep(data, overrides)[1]:
            _run_sweep(data, overrides, str(source), quiet)
            return
        run_dir = run_experiment(load_experiment(source, overrides), quiet=quiet)
    except FedsimError as exc:
        _fail(exc)
    _report(run_dir)


def _resume(run_dir: Path, experiment: Path | None, overrides: list[str], quiet: bool) -> None:
    from fedsim.run.resume import resume_config
    from fedsim.runner import run_experiment

    try:
        cfg = resume_config(run_dir, experiment, overrides)
        if cfg.sweep:
            raise FedsimError(f"--resume {run_dir}: this is a sweep; resume sweeps through their sweep folder")
        run_experiment(cfg, quiet=quiet, resume=run_dir)
    except FedsimError as exc:
        _fail(exc)
    _report(run_dir)


def _report(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary.get("final", {})
    shown = ", ".join(f"{k}={final[k]:.4g}" for k in ("loss", "accuracy", "gap") if k in final)
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


def _run_sweep(data: dict, overrides: list[str], source: str, quiet: bool) -> None:
    """Validate every variant (nothing is written if one is invalid), run them, print a table."""
    from rich.table import Table

    from fedsim.sweep import base_config, expand_sweep, run_sweep, sweep_table

    variants = expand_sweep(data, overrides, source=source)
    base = base_config(data, overrides, source=source)
    sweep_dir = run_sweep(variants, base, quiet=quiet)
    rows = sweep_table(sweep_dir)
    keys = ["loss", "accuracy", "gap"]
    if any(row["retrained_accuracy"] is not None for row in rows):  # architecture searches
        keys.append("retrained_accuracy")
    table = Table("variant", "status", "rounds", *(k.replace("_", " ") for k in keys), title=f"sweep {base.name}")
    for row in rows:
        rounds = "-" if row["rounds"] is None else str(row["rounds"])
        finals = ("-" if row[k] is None else f"{row[k]:.4g}" for k in keys)
        table.add_row(row["id"], str(row["status"]), rounds, *finals)
    Console(width=max(120, Console().width)).print(table)
    typer.echo(f"sweep folder: {sweep_dir}")


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

    A sweep folder stands for all of its variants' run directories.

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
    for f in files:
        desc = ""
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                desc = line.lstrip("# ").strip()
                break
        try:
            name = tomllib.loads(f.read_text(encoding="utf-8")).get("name", f.stem)
        except tomllib.TOMLDecodeError:
            name = f.stem
        typer.echo(f"  {f.stem:<24} {name:<24} {desc}")


app.command()(report)


def main() -> None:
    try:
        app()
    except FedsimError as exc:  # pragma: no cover - commands catch their own
        err.print(f"error: {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
