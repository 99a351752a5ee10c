"""Run one validated experiment end to end: run directory, engine, summary, figures."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedsim.config import ExperimentConfig, to_toml_dict
from fedsim.errors import RunDirError, RunInterrupted
from fedsim.recorder import Recorder
from fedsim.rundir import git_hash, new_run_dir, versions, write_config, write_summary
from fedsim.session import Session, set_session


def run_experiment(cfg: ExperimentConfig, *, quiet: bool = False, plot: bool | None = None,
                   result: dict[str, Any] | None = None, resume: Path | None = None) -> Path:
    """Run ``cfg`` and return its run directory. The summary records how it ended, including
    failures (which are re-raised after the summary is written). If ``result`` is given it
    receives the final model(s): ``final_model`` ``[d]`` or ``final_models`` {ue: ``[d]``}.

    ``resume``: an existing run directory of ``cfg`` (checked by :func:`prepare_resume`); the run
    continues from its last checkpoint in that directory."""
    from fedsim.client import client_app
    from fedsim.device import run_device
    from fedsim.engines import check_ray_address, run_inline, run_ray
    from fedsim.server import preflight, server_app

    num_ues = preflight(cfg)
    if cfg.engine.name == "ray":
        check_ray_address(cfg.engine)
    started = time.monotonic()
    if resume is None:
        try:
            run_dir = new_run_dir(cfg.output.dir, cfg.name)
        except OSError as exc:
            raise RunDirError(f"cannot create a run directory under output.dir = {cfg.output.dir!r}: "
                              f"{exc.strerror or exc}; choose a writable folder with --out") from None
        write_config(run_dir, to_toml_dict(cfg))
        checkpoint, previous_rows = None, []
        summary: dict[str, Any] = {}
    else:
        run_dir = Path(resume)
        checkpoint, previous_rows, summary = prepare_resume(run_dir)
    summary.update({
        "status": "running",
        "rounds": previous_rows[-1]["round"] if previous_rows else 0,
        "seed": cfg.seed,
        "engine": cfg.engine.name,
        "device": str(run_device(cfg)),
        "started_at": summary.get("started_at", datetime.now(UTC).isoformat()),
        "versions": versions(),
        "git": git_hash(),
    })
    if resume is not None:
        summary["resumed"] = int(summary.get("resumed", 0)) + 1
        summary["resumed_from_round"] = checkpoint.round if checkpoint is not None else 0
    write_summary(run_dir, summary)
    recorder = Recorder(run_dir, cfg.rounds, quiet=quiet, label=cfg.name)
    recorder.rows = list(previous_rows)
    session = Session(cfg, recorder, run_dir=run_dir, resume=checkpoint)
    set_session(session)
    error: BaseException | None = None
    try:
        with recorder, _stop_on_ctrl_c(session):
            if cfg.engine.name == "inline":
                run_inline(server_app, client_app, num_ues)
            else:
                run_ray(server_app, client_app, num_ues, cfg.engine)
        summary.update({k: v for k, v in session.result.items() if k in ("status", "rounds", "diverged_round")})
        if result is not None:
            result.update(session.result)
    except BaseException as exc:  # noqa: BLE001 - record, then re-raise
        error = exc
        summary["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt | RunInterrupted) else "failed"
        summary["error"] = "".join(traceback.format_exception_only(exc)).strip()
        summary["rounds"] = recorder.rows[-1]["round"] if recorder.rows else 0
    finally:
        set_session(None)
        summary["wall_s"] = round(time.monotonic() - started, 3)
        if "analytics" in session.result:  # time spent in OnlineAnalytics (overhead, issue 5)
            summary["analytics_s"] = round(session.result["analytics"].total_s, 4)
        summary["finished_at"] = datetime.now(UTC).isoformat()
        summary["final"] = _final(recorder.rows)
        summary.update(count_faults(recorder.rows))
        write_summary(run_dir, summary)
    if (plot if plot is not None else cfg.output.plot) and recorder.rows:
        from fedsim.plots import plot_runs

        plot_runs([run_dir], out=run_dir / "figures" / "convergence")
    if error is None and summary.get("status") == "completed":
        error = _finish_search(cfg, run_dir, session, summary, quiet)
    if error is not None:
        raise error
    return run_dir


def _finish_search(cfg: ExperimentConfig, run_dir: Path, session: Session, summary: dict[str, Any],
                   quiet: bool) -> BaseException | None:
    """Architecture searches: derive the architecture and retrain it (fedsim.retrain). Returns
    the retraining's exception, if any, after recording it in the summary."""
    from fedsim.retrain import RetrainFailed, finish_search, is_search
    from fedsim.workloads import build_workload

    if not is_search(cfg, build_workload(cfg.workload, cfg.seed)):
        return None
    error = None
    try:
        summary["search"] = finish_search(cfg, run_dir, session.result, quiet=quiet)
    except RetrainFailed as exc:
        summary["search"], error = exc.found, exc.cause
    write_summary(run_dir, summary)
    return error


@contextlib.contextmanager
def _stop_on_ctrl_c(session: Session) -> Iterator[None]:
    """First Ctrl-C: finish the current round, then stop cleanly (Ray is shut down, the summary
    says "interrupted", `--resume` continues). A second Ctrl-C aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        session.stop.set()
        signal.signal(signal.SIGINT, previous)
        print("\nstopping after this round (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: Sections a resumed run may change: where and how it runs, never what it computes.
RESUMABLE_CHANGES = ("engine", "output")


def resume_config(run_dir: Path, experiment: Path | None, overrides: list[str]) -> ExperimentConfig:
    """The config to resume ``run_dir`` with: its own ``config.toml`` (plus engine/output
    overrides). When ``experiment`` (and ``--set``) is given too it must describe the same run:
    otherwise ConfigError naming what differs (the workload first)."""
    from fedsim.config import ConfigError, load_experiment, validate

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"--resume {run_dir}: no such folder")
    if not (run_dir / "config.toml").is_file() or not (run_dir / "summary.json").is_file():
        raise RunDirError(f"--resume {run_dir}: not a fedsim run directory (needs config.toml and summary.json)")
    try:
        saved = load_experiment(run_dir / "config.toml")
    except ConfigError as exc:
        raise RunDirError(f"--resume {run_dir}: its config.toml is not valid: {exc}") from None
    own = [o for o in overrides if o.split("=", 1)[0].strip().split(".")[0] in RESUMABLE_CHANGES]
    given = load_experiment(experiment, overrides) if experiment is not None else None
    if given is None and len(own) != len(overrides):
        given = load_experiment(run_dir / "config.toml", overrides)
    if given is not None:
        a = to_toml_dict(saved)
        b = to_toml_dict(given)
        if a["workload"] != b["workload"]:
            raise ConfigError(f"--resume {run_dir}: the given config's workload {b['workload']} does not match "
                              f"the checkpointed run's workload {a['workload']}")
        differ = sorted(k for k in set(a) | set(b) if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k))
        if differ:
            raise ConfigError(f"--resume {run_dir}: the given config differs from the run's config.toml in "
                              f"{', '.join(differ)}; resume with the run's own config (omit EXPERIMENT)")
    data = apply_overrides_dict(to_toml_dict(saved), own)
    return validate(data, str(run_dir / "config.toml"))


def apply_overrides_dict(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    from fedsim.config import apply_overrides

    return apply_overrides(data, overrides)


def prepare_resume(run_dir: Path) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Check ``run_dir`` can be resumed, load its checkpoint (verified) and cut
    ``metrics.jsonl`` back to the checkpointed round (atomically). Returns (checkpoint or None,
    the rows kept, the old summary). Raises RunDirError, before changing anything, when the
    folder is not a resumable run."""
    import json

    from fedsim.checkpoint import load_checkpoint
    from fedsim.rundir import atomic_write_text, read_metrics

    if not (run_dir / "config.toml").is_file() or not (run_dir / "summary.json").is_file():
        raise RunDirError(f"{run_dir}: not a fedsim run directory (needs config.toml and summary.json)")
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{run_dir}/summary.json is corrupt: {exc}") from None
    if summary.get("status") in ("completed", "diverged"):
        raise RunDirError(f"{run_dir}: the run has already {summary['status']}; nothing to resume")
    checkpoint = load_checkpoint(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    keep = int(checkpoint.meta["metrics_lines"]) if checkpoint is not None else 0
    if len(rows) < keep:
        raise RunDirError(f"{run_dir}/metrics.jsonl has {len(rows)} complete rows but the checkpoint needs {keep}")
    rows = rows[:keep]
    # keep the first ``keep`` lines byte for byte (read_metrics already stopped at a torn line)
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines(keepends=True) if keep else []
    lines = [ln for ln in lines if ln.strip()][:keep]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines))
    return checkpoint, rows, summary


def count_faults(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals for summary.json: failed UE replies, injected faults by kind, retried messages."""
    failures = sum(int(r.get("failures", 0) or 0) for r in rows)
    injected: dict[str, int] = {}
    retried = 0
    for r in rows:
        for kind, ues in (r.get("injected") or {}).items():
            injected[kind] = injected.get(kind, 0) + len(ues)
        retried += len(r.get("retried_ues") or [])
    out: dict[str, Any] = {"failures_total": failures}
    if injected:
        out["faults"] = injected
    if retried:
        out["retried_total"] = retried
    return out


def _final(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The last value of every metric (a metric need not be present on every round)."""
    final: dict[str, Any] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                final[k] = v
    return final
