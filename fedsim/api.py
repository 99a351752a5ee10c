"""The Python entry points, for scripts and notebooks: :func:`run` and :func:`resume` do what
``fedsim run`` does and return the folder they wrote; :func:`load` (from
:mod:`fedsim.results.frame`) reads run and sweep folders back as one DataFrame.

    import fedsim
    folder = fedsim.run("quickstart", ["rounds=20"], engine="inline")
    df = fedsim.load(folder)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsim.config import QUICKSTART, apply_overrides, read_toml, shorthand_overrides, validate
from fedsim.errors import FedsimError
from fedsim.results.frame import load
from fedsim.results.sweepdir import is_sweep_dir
from fedsim.runner import run_experiment
from fedsim.runtime.resume import resume_config
from fedsim.sweep import base_config, expand_sweep, run_sweep, split_sweep, sweep_to_resume

__all__ = ["load", "resume", "run"]

Experiment = str | Path | Mapping[str, Any] | None


def run(experiment: Experiment = None, overrides: Sequence[str] = (), *, engine: str | None = None,
        out: str | Path | None = None, ray_address: str | None = None, quiet: bool = True) -> Path:
    """Run an experiment, or every variant of its ``[sweep]`` table, and return the run directory
    or the sweep folder.

    Args:
        experiment: a shipped experiment's name (``"heavy_tail"``), a TOML file, or the same
            content as a dict; None runs the quickstart.
        overrides: ``"key.path=value"`` items, as ``--set`` takes them (``"sweep={}"`` drops the
            sweep table).
        engine: ``"ray"`` or ``"inline"`` (default: the experiment's own, else ``"ray"``).
        out: parent folder of the run (default: the experiment's ``output.dir``, else ``runs``).
        ray_address: join an existing Ray cluster.
        quiet: no progress bar.

    Raises:
        ConfigError: bad input (nothing written). RunInterrupted: Ctrl-C during a sweep.
    """
    data, source = _read(experiment)
    items = [*overrides, *shorthand_overrides(engine, out, ray_address)]
    if not split_sweep(data, items)[1]:
        return run_experiment(validate(apply_overrides(data, items), source), quiet=quiet)
    base = base_config(data, items, source=source)
    return run_sweep(expand_sweep(data, items, source=source), base, quiet=quiet)


def resume(folder: str | Path, overrides: Sequence[str] = (), *, engine: str | None = None,
           experiment: str | Path | None = None, quiet: bool = True) -> Path:
    """Continue a killed run (from its last checkpoint) or sweep (its unfinished variants), as
    ``fedsim run --resume``; only ``[engine]`` and ``[output]`` may differ, also from
    ``experiment`` when it is given. Returns ``folder``."""
    folder = Path(folder)
    items = [*overrides, *shorthand_overrides(engine)]
    source = None if experiment is None else Path(experiment)
    if is_sweep_dir(folder):
        variants, base = sweep_to_resume(folder, source, items)
        return run_sweep(variants, base, quiet=quiet, resume=folder)
    cfg = resume_config(folder, source, items)
    if cfg.sweep:
        raise FedsimError(f"--resume {folder}: this is a sweep; resume sweeps through their sweep folder")
    run_experiment(cfg, quiet=quiet, resume=folder)
    return folder


def _read(experiment: Experiment) -> tuple[dict[str, Any], str]:
    if isinstance(experiment, Mapping):
        return dict(experiment), "experiment"
    source = str(experiment if experiment is not None else QUICKSTART)
    return read_toml(source), source


load = load  # re-exported: fedsim.api.load is fedsim.results.frame.load
