"""The ``fedsim report`` command (registered in fedsim.cli with ``app.command()(report)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedsim.errors import FedsimError


def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories and/or sweep folders")],
    out: Annotated[Path | None, typer.Option(help="output folder (default: the first RUN_DIR)")] = None,
    target: Annotated[
        float | None,
        typer.Option(help="target of the convergence metric (gap, else loss) for rounds-/time-to-target"),
    ] = None,
) -> None:
    """Write report.md and figures/report-*.png: measured vs theory curves, fitted exponents
    against the theoretical ones, rounds-/time-to-target (median [IQR] across seeds), a heat map
    over (alpha, interference level), server vs server-free panels and the overlap speed-up.

    Every figure is also written as a vector PDF beside its PNG (200 dpi), in the style of
    `fedsim plot`. A group with a single seed gets its value without an interval and no band.

    Examples:

        fedsim report runs/heavy_tail-20250101T000000Z
        fedsim report runs/a-* runs/b-* --out reports/ab --target 0.01
    """
    from fedsim.report import build_report

    try:
        path = build_report(run_dirs, out=out, target=target)
    except FedsimError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(str(path))
