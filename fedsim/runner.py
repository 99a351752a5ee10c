"""Run one validated experiment end to end: run directory, engine, summary, figures."""

from __future__ import annotations

import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedsim.config import ExperimentConfig, to_toml_dict
from fedsim.recorder import Recorder
from fedsim.rundir import git_hash, new_run_dir, versions, write_config, write_summary
from fedsim.session import Session, set_session


def run_experiment(cfg: ExperimentConfig, *, quiet: bool = False, plot: bool | None = None,
                   result: dict[str, Any] | None = None) -> Path:
    """Run ``cfg`` and return its run directory. The summary records how it ended, including
    failures (which are re-raised after the summary is written). If ``result`` is given it
    receives the final model(s): ``final_model`` ``[d]`` or ``final_models`` {ue: ``[d]``}."""
    from fedsim.client import client_app
    from fedsim.engines import run_inline, run_ray
    from fedsim.server import preflight, server_app

    num_ues = preflight(cfg)
    run_dir = new_run_dir(cfg.output.dir, cfg.name)
    write_config(run_dir, to_toml_dict(cfg))
    started = time.monotonic()
    summary: dict[str, Any] = {
        "status": "running",
        "rounds": 0,
        "seed": cfg.seed,
        "engine": cfg.engine.name,
        "started_at": datetime.now(UTC).isoformat(),
        "versions": versions(),
        "git": git_hash(),
    }
    write_summary(run_dir, summary)
    recorder = Recorder(run_dir, cfg.rounds, quiet=quiet, label=cfg.name)
    session = Session(cfg, recorder)
    set_session(session)
    error: BaseException | None = None
    try:
        with recorder:
            if cfg.engine.name == "inline":
                run_inline(server_app, client_app, num_ues)
            else:
                run_ray(server_app, client_app, num_ues, cfg.engine)
        summary.update({k: v for k, v in session.result.items() if k in ("status", "rounds")})
        if result is not None:
            result.update(session.result)
    except BaseException as exc:  # noqa: BLE001 - record, then re-raise
        error = exc
        summary["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        summary["error"] = "".join(traceback.format_exception_only(exc)).strip()
        summary["rounds"] = recorder.rows[-1]["round"] if recorder.rows else 0
    finally:
        set_session(None)
        summary["wall_s"] = round(time.monotonic() - started, 3)
        summary["finished_at"] = datetime.now(UTC).isoformat()
        summary["final"] = _final(recorder.rows)
        write_summary(run_dir, summary)
    if (plot if plot is not None else cfg.output.plot) and recorder.rows:
        from fedsim.plots import plot_runs

        plot_runs([run_dir], out=run_dir / "figures" / "convergence")
    if error is not None:
        raise error
    return run_dir


def _final(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The last value of every metric (a metric need not be present on every round)."""
    final: dict[str, Any] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                final[k] = v
    return final
