"""Sweep variants as Ray tasks: one CPU each (and a GPU share on CUDA), every task running the
inline engine.

A sweep whose base experiment uses the ``ray`` engine does not start Flower's Ray runtime once
per variant (8-10 s of fixed cost each). Instead each variant becomes one Ray task
(``num_cpus=1``) that runs :func:`fedsim.runner.run_experiment` with ``engine.name = "inline"``:
the same ServerApp and ClientApp, in one process, no nested Ray. The tasks spread over the
local cores (a private local Ray: loopback only, no dashboard, bounded object store, short
temp dir removed afterwards) or over every node of the cluster at ``engine.ray_address`` /
``RAY_ADDRESS``.

A task writes its run directory into a private temp dir on whichever node runs it and returns
the files; the driver writes them into the sweep folder (so a cluster needs no shared
filesystem). Results arrive in completion order; the caller gets each one as it lands.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import channels
import fedsim
import strategies
from fedsim.config import EngineConfig, ExperimentConfig
from fedsim.engines.env import engine_environment
from fedsim.engines.ray import cluster_address, gpus_per_ue, ray_init_args, remove_when_released
from fedsim.errors import RunDirError
from fedsim.results.rundir import PROJECT_ROOT, atomic_write_bytes, unique_dir
from fedsim.runner import run_experiment

#: Files and folders of a run directory, relative path -> bytes.
Files = dict[str, bytes]
# Ray sockets live in the temp dir; AF_UNIX paths are limited to 107 bytes, so keep it short.
_TEMP_PREFIX = "fss"


# --------------------------------------------------------------------------- worker side


def run_variant_files(cfg_json: str, partial: tuple[str, Files] | None = None) -> dict[str, Any]:
    """Run one variant inline in this process and return its run directory as bytes.

    ``cfg_json`` is the variant's validated config (``ExperimentConfig.model_dump_json()``);
    ``partial`` (name, files), an unfinished run directory of it to continue from its checkpoint.
    Returns ``{"name": run dir name or None, "files": Files, "status": str, "error": str | None,
    "wall_s": float, "cpu_s": float}`` (the task's wall and CPU seconds). Never raises for a
    failing variant: the failure is data.
    """
    # One thread: a variant's numbers must not depend on how many tasks share the node.
    torch.set_num_threads(1)
    started, cpu0 = time.monotonic(), time.process_time()
    cfg = ExperimentConfig.model_validate_json(cfg_json)
    cfg.engine.name = "inline"  # same Flower apps, no Ray inside a Ray task
    with tempfile.TemporaryDirectory(prefix="fsv") as tmp:
        cfg.output.dir = tmp
        error: str | None = None
        try:
            start = unpack_run_dir(Path(tmp), *partial) if partial is not None else None
            run_dir: Path | None = run_or_continue(cfg, start)
        except Exception as exc:  # noqa: BLE001 - one bad variant must not end the sweep
            error = f"{type(exc).__name__}: {exc}"
            dirs = [p for p in Path(tmp).iterdir() if p.is_dir()]
            run_dir = dirs[0] if len(dirs) == 1 else None
        files = pack_run_dir(run_dir) if run_dir is not None else {}
    return {"name": run_dir.name if run_dir is not None else None, "files": files,
            "status": _status_of(files) if error is None else "failed", "error": error,
            "wall_s": round(time.monotonic() - started, 3), "cpu_s": round(time.process_time() - cpu0, 3)}


def run_or_continue(cfg: ExperimentConfig, partial: Path | None) -> Path:
    """Continue ``partial`` (an unfinished run directory of ``cfg``) from its last checkpoint, or
    start ``cfg`` afresh when there is none or it cannot be continued (a corrupt checkpoint: the
    refusal changes nothing in it)."""
    if partial is not None:
        try:
            return run_experiment(cfg, quiet=True, resume=partial)
        except RunDirError:
            pass
    return run_experiment(cfg, quiet=True)


def pack_run_dir(run_dir: Path) -> Files:
    """Every regular file under ``run_dir`` (temp files of atomic writes excluded)."""
    out: Files = {}
    for p in sorted(run_dir.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            out[p.relative_to(run_dir).as_posix()] = p.read_bytes()
    return out


def _status_of(files: Files) -> str:
    try:
        return str(json.loads(files["summary.json"])["status"])
    except (KeyError, ValueError):
        return "failed"


# --------------------------------------------------------------------------- driver side


def unpack_run_dir(parent: Path, name: str, files: Files) -> Path:
    """Write ``files`` as the run directory ``parent/name`` (suffixed if taken); summary.json
    last, every file atomically, so a killed driver never leaves a run dir that looks done."""
    path = unique_dir(parent / name)
    for sub in ("figures", "checkpoints"):
        (path / sub).mkdir(exist_ok=True)
    for rel in sorted(files, key=lambda r: r == "summary.json"):
        atomic_write_bytes(path / rel, files[rel])
    return path


def sweep_init_args(engine: EngineConfig, temp_dir: str | None) -> dict[str, Any]:
    """``ray.init`` arguments for a sweep driver: the engine's, plus how the workers import fedsim."""
    args = ray_init_args(engine, temp_dir)
    address = cluster_address(engine)
    if not address:
        # The checkout on the workers' PYTHONPATH (as Flower does for its actors) lets them import
        # fedsim even when it is not pip-installed. It goes to Ray's job environment, never into
        # this process's os.environ.
        path = os.pathsep.join(
            dict.fromkeys(p for p in (str(PROJECT_ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)) if p))
        args["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
    else:
        # Other nodes may not have this checkout: ship the three packages with the job.
        args["runtime_env"] = {"py_modules": [fedsim, strategies, channels],
                               "env_vars": {"OMP_NUM_THREADS": "1"}}
    return args


@contextmanager
def ray_session(engine: EngineConfig) -> Iterator[Any]:
    """Start (or join) Ray for a sweep, yield the ``ray`` module, and always shut it down. Ray is
    imported and started inside :func:`engine_environment` (its variables, restored afterwards)."""
    with engine_environment():
        import ray

        if ray.is_initialized():
            raise RuntimeError("Ray is already initialised in this process; fedsim starts and stops its own")
        temp_dir = None if cluster_address(engine) else tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir="/tmp")
        try:
            ray.init(**sweep_init_args(engine, temp_dir))
            yield ray
        finally:
            if ray.is_initialized():
                ray.shutdown()
            if temp_dir:
                remove_when_released(temp_dir)


def run_parallel(jobs: list[tuple[int, ExperimentConfig, tuple[str, Files] | None]], engine: EngineConfig,
                 on_result: Callable[[int, dict[str, Any]], None],
                 on_start: Callable[[int], None] | None = None) -> None:
    """Run each ``(key, config, partial)`` of ``jobs`` as a Ray task (``partial``: a run directory
    to continue, see :func:`run_variant_files`); call ``on_result(key, result)`` as each
    finishes (completion order; ``result`` as from :func:`run_variant_files`).

    A task that dies (worker crash, out of memory) yields a ``failed`` result. Ctrl-C cancels
    what is still queued or running and shuts Ray down before the KeyboardInterrupt propagates.
    ``on_start(n_workers)`` is called once Ray is up, with the number of CPUs it offers.
    """
    if not jobs:
        return
    # A CUDA sweep's tasks need a GPU share: Ray hides the GPUs from tasks that ask for none.
    gpus = gpus_per_ue(engine.model_copy(update={"cpus_per_ue": 1.0}))
    with ray_session(engine) as ray:
        task = ray.remote(num_cpus=1, num_gpus=gpus)(run_variant_files)
        if on_start is not None:
            on_start(int(ray.cluster_resources().get("CPU", 1)))
        pending = {task.remote(cfg.model_dump_json(), partial): key for key, cfg, partial in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    key = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - the task itself died
                        reason = "".join(traceback.format_exception_only(exc)).strip()
                        result = {"name": None, "files": {}, "status": "failed", "error": reason}
                    on_result(key, result)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
