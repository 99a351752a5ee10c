"""A sweep's preflight: a single run's refusals, for every variant, before the sweep writes anything.

A single run refuses bad input with exit code 2 and writes nothing (:func:`fedsim.runtime.execute.preflight`);
a sweep must not turn the same input into a folder of failed variants. A single run's preflight
assembles the experiment, which builds the workload (seconds for some: synthetic-logreg solves for
w*), and a sweep would pay that twice per variant. So a sweep checks, per variant, what needs no
built workload: the memory estimate, the device, the strategy and channel parts, and the engine
the variant runs on (its GPU share and the Ray address); and once, that the folder the sweep writes
into can be written. What needs the built workload (the schedule, the batched path, a pipelined
overlap) is checked when each variant starts, as in a single run.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from channels import Channel
from fedsim.config import EngineConfig, ExperimentConfig
from fedsim.device import resolve_device
from fedsim.engines.ray import check_ray_address, gpus_per_ue
from fedsim.errors import ConfigError, FedsimError, RunDirError
from fedsim.runtime.assemble import check_memory
from fedsim.sweep.expand import Variant


def preflight_sweep(variants: list[Variant], base: ExperimentConfig, *, parallel: bool,
                    folder: Path | None = None) -> None:
    """Raise a FedsimError, before anything is written, if a variant would fail a single run's
    preflight: the message names the first bad variant and counts the bad ones. ``folder``: the
    sweep folder being resumed (else a new one goes under ``base.output.dir``)."""
    if folder is None:
        check_parent_writable(Path(base.output.dir), "output.dir", "create a sweep folder")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to the sweep folder {folder}: {os.strerror(errno.EACCES)}")
    memo: dict[str, FedsimError | None] = {}
    bad: list[tuple[Variant, FedsimError]] = []
    for v in variants:
        for key, check in _checks(v.config, base.engine, parallel):
            if key not in memo:
                memo[key] = _error_of(check)
            if memo[key] is not None:
                bad.append((v, memo[key]))
                break
    if bad:
        (first, exc), n = bad[0], len(bad)
        raise ConfigError(f"sweep variant {first.id}: {exc}\n({n} of {len(variants)} variants would fail; "
                          "the first is shown; nothing was written)")


def _checks(cfg: ExperimentConfig, base_engine: EngineConfig, parallel: bool
            ) -> list[tuple[str, Callable[[], Any]]]:
    """(memo key, check) pairs for one variant; the key is everything the check depends on, so a
    check shared by many variants (the Ray address, a workload's memory) runs once."""
    engine = base_engine.model_copy(update={"cpus_per_ue": 1.0}) if parallel else cfg.engine
    checks: list[tuple[str, Callable[[], Any]]] = [
        (f"device {cfg.engine.device}", lambda: resolve_device(cfg.engine.device)),
        (f"memory {cfg.seed} {cfg.workload.model_dump_json()}", lambda: check_memory(cfg)),
        (f"parts {cfg.strategy.model_dump_json()} {cfg.channel.model_dump_json()}",
         lambda: _parts(cfg)),
    ]
    if parallel or engine.name == "ray":  # a parallel sweep's tasks run on Ray whatever they run inside
        checks.append((f"engine {engine.model_dump_json()}", lambda: _engine(engine)))
    return checks


def _error_of(check: Callable[[], Any]) -> FedsimError | None:
    try:
        check()
    except FedsimError as exc:
        return exc
    return None


def _parts(cfg: ExperimentConfig) -> None:
    try:
        Channel(cfg.channel, cfg.make_strategy().receiver)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _engine(engine: EngineConfig) -> None:
    gpus_per_ue(engine)
    check_ray_address(engine)


def check_parent_writable(folder: Path, key: str, what: str) -> None:
    """Refuse (RunDirError) a ``folder`` in which nothing can be created, creating nothing: its
    nearest existing ancestor must be a writable directory."""
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    code = None
    if not probe.is_dir():
        code = errno.ENOTDIR
    elif not os.access(probe, os.W_OK | os.X_OK):
        code = errno.EACCES
    if code is not None:
        raise RunDirError(f"cannot {what} under {key} = {str(folder)!r}: {os.strerror(code)} ({probe}); "
                          "choose a writable folder with --out")
