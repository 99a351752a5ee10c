"""The ``fedsim search`` command (registered in fedsim.cli with ``app.command()(search)``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fedsim.errors import FedsimError, RunInterrupted


def search(
    spec: Annotated[Path | None, typer.Argument(help="search spec TOML file", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(help="parent folder of the search folder (default: runs)")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the search folder SEARCH_DIR after a kill")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Run a federated hyperparameter search: every method of the spec over its seeds, each
    candidate a whole federated run (live mode) or a table lookup (tabular mode).

    Writes a search folder: search.toml, candidates.jsonl/csv, curves.csv,
    figures/search-curves.{png,pdf}, summary.json and, live, a sweep folder per batch of
    candidates with their run directories. Live candidates of a batch run in parallel as Ray
    tasks with the `ray` engine. Exit codes: 0 done; 2 bad input, nothing written; 130 Ctrl-C
    (`--resume` continues).

    Examples:

        fedsim search my-search.toml --out runs
        fedsim search --resume runs/my-search-20260101T000000Z
    """
    from fedsim.search import load_spec, run_search

    try:
        if resume is None:
            if spec is None:
                raise FedsimError("give a search spec (SPEC.toml) or --resume SEARCH_DIR")
            folder = run_search(load_spec(spec), out, quiet=quiet)
        else:
            folder = run_search(None, resume=resume, quiet=quiet)  # type: ignore[arg-type]
    except RunInterrupted as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=130) from None
    except FedsimError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    for method, final in summary.get("final", {}).items():
        typer.echo(f"{method}: best {summary['metric']} median {final['best_median']:.4g} "
                   f"after {final['x']:.0f} evaluations (regret {final['regret_median']:.3g})")
    typer.echo(f"search folder: {folder}")
