"""Parameter sweeps: a ``[sweep]`` table expands into a grid of validated variants.

    [sweep]
    "strategy.name" = ["server-digital", "server-ota"]
    "train.lr.eta" = [0.1, 0.3]
    seed = [0, 1, 2]

The grid is the cartesian product, keys in file order and values in list order (the last key
varies fastest). Every variant is validated before any runs. With the ``ray`` engine (the
default) the variants run in parallel as Ray tasks, each on the inline engine, over the local
cores or a cluster (:mod:`fedsim.parallel`); with ``inline`` they run one after another in this
process. A sweep writes one folder:

    <output.dir>/<name>-<UTC timestamp>/
      index.json      name, created, total, keys, workers (parallel), and per variant: id,
                      assignments, run_dir (relative), status (pending, queued, running,
                      completed, diverged, failed, interrupted), error, and for a parallel
                      variant the task's wall_s / cpu_s; rewritten atomically as each variant ends
      sweep.toml      the resolved base config with its (flattened) sweep table
      <run dirs>      one ordinary run directory per variant (see fedsim.rundir)
      figures/        convergence.{png,pdf} (against round) and convergence-sim_time.{png,pdf}
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from fedsim.config import ExperimentConfig, apply_overrides, parse_override, to_toml_dict, validate
from fedsim.errors import ConfigError, FedsimError, RunDirError
from fedsim.rundir import atomic_write_text, dumps, stamped_dir
from fedsim.runner import run_experiment

INDEX = "index.json"
DONE = ("completed", "diverged")  # statuses a resumed sweep does not rerun
_KEY_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")
_MAX_ID = 100
# Keys the sweep machinery owns: every variant runs inside the sweep folder.
_RESERVED = ("sweep", "output.dir")


@dataclass
class Variant:
    """One point of the grid: a validated config (``sweep == {}``) and how it was made."""

    index: int
    id: str
    assignments: list[str]  # ``key=value`` with TOML values, usable as ``--set`` overrides
    config: ExperimentConfig


# --------------------------------------------------------------------------- expansion


def split_sweep(
    cfg_data: dict[str, Any], overrides: list[str]
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Apply ``overrides`` and separate the sweep: (base data without ``sweep``, flat sweep).

    ``--set sweep.train.lr.eta=[0.1, 0.3]`` adds or replaces one sweep entry (``--set 'sweep={}'``
    clears it); any other override applies to the base. The sweep table may use quoted dotted
    keys (``"train.lr.eta" = [...]``) or TOML's nested form; both flatten to dotted keys.
    """
    plain = [o for o in overrides if not _is_sweep_override(o)]
    data = apply_overrides(cfg_data, plain)
    raw = data.pop("sweep", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep: expected a table of dotted keys to lists of values, got {raw!r}")
    sweep = _flatten_sweep(raw, "")
    for item in overrides:
        if not _is_sweep_override(item):
            continue
        path, value = parse_override(item)
        if len(path) == 1:  # --set sweep={...}: replace the whole table
            if not isinstance(value, dict):
                raise ConfigError(f"--set {item!r}: sweep must be a table, for example sweep={{}}")
            sweep = _flatten_sweep(value, "")
        else:
            # An existing key keeps its place in the order; a new one goes last.
            sweep.update(_flatten_sweep({".".join(path[1:]): value}, ""))
    for key, values in sweep.items():
        parts = key.split(".")
        if not all(_KEY_PART.match(p) for p in parts):
            raise ConfigError(f"sweep: {key!r} is not a dotted config key such as train.lr.eta")
        if key in _RESERVED or parts[0] == "sweep":
            raise ConfigError(f"sweep.{key}: cannot be swept "
                              "(every variant runs inside the sweep folder)")
        if not isinstance(values, list):
            raise ConfigError(f"sweep.{key}: expected a list of values, got {values!r}; "
                              f"write for example {key} = [{_toml_value(values, key)}]")
        if not values:
            raise ConfigError(f"sweep.{key}: needs at least one value")
    return data, sweep


def base_config(cfg_data: dict[str, Any], overrides: list[str], *,
                source: str = "experiment") -> ExperimentConfig:
    """The validated base experiment, its ``sweep`` flattened to dotted keys."""
    data, sweep = split_sweep(cfg_data, overrides)
    return validate({**data, "sweep": sweep}, source)


def expand_sweep(cfg_data: dict[str, Any], overrides: list[str], *,
                 source: str = "experiment") -> list[Variant]:
    """The cartesian product of the sweep, every variant validated (no sweep: one variant).

    Raises ConfigError naming the variant and the key if any variant is invalid, before
    anything runs or is written.
    """
    data, sweep = split_sweep(cfg_data, overrides)
    keys = list(sweep)
    # Keys with a single value add nothing to tell variants apart; leave them out of ids.
    id_keys = [k for k in keys if len(sweep[k]) > 1] or keys
    combos = list(itertools.product(*(sweep[k] for k in keys)))
    width = max(3, len(str(len(combos) - 1)))
    variants: list[Variant] = []
    errors: list[str] = []
    for i, combo in enumerate(combos):
        values = dict(zip(keys, combo, strict=True))
        assignments = [f"{k}={_toml_value(v, k)}" for k, v in values.items()]
        vid = _variant_id(i, width, {k: values[k] for k in id_keys})
        try:
            # Same code path as --set, so a variant is reproducible from its assignments.
            vdata = apply_overrides(data, assignments)
            cfg = validate(vdata, f"{source}: sweep variant {vid}")
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        variants.append(Variant(i, vid, assignments, cfg))
    if errors:
        more = f"\n({len(errors)} of {len(combos)} variants are invalid; the first is shown)"
        raise ConfigError(errors[0] + (more if len(errors) > 1 else ""))
    return variants


def _is_sweep_override(item: str) -> bool:
    key = item.split("=", 1)[0].strip()
    return key == "sweep" or key.startswith("sweep.")


def _flatten_sweep(node: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_sweep(v, key + "."))
        else:
            out[key] = v
    return out


def _toml_value(value: Any, key: str) -> str:
    """``value`` as a TOML literal that ``parse_override`` reads back unchanged."""
    text = _literal(value, key)
    _, back = parse_override(f"v={text}")
    if back != value or type(back) is not type(value):
        raise ConfigError(f"sweep.{key}: value {value!r} cannot be written as a --set override")
    return text


def _literal(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # non-finite floats are rejected by validate before they run
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v, key) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k)} = {_literal(v, key)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ConfigError(f"sweep.{key}: unsupported value {value!r} "
                      "(use numbers, strings, booleans, lists or tables)")


def _variant_id(index: int, width: int, values: dict[str, Any]) -> str:
    """``003-strategy.name=server-ota,seed=1``: index first (unique), filesystem-safe."""
    parts = [f"{k}={v if isinstance(v, str) else _literal(v, k).replace(' ', '')}"
             for k, v in values.items()]
    text = _UNSAFE.sub("_", ",".join(parts))
    vid = f"{index:0{width}d}" + (f"-{text}" if text else "")
    return vid[:_MAX_ID]


# --------------------------------------------------------------------------- running


def run_sweep(variants: list[Variant], base_cfg: ExperimentConfig, *, quiet: bool = False,
              resume: Path | None = None, plot: bool = True, parallel: bool | None = None) -> Path:
    """Run ``variants`` in a sweep folder and return that folder.

    ``parallel`` (default: the base engine is ``ray``) runs the variants as Ray tasks, one CPU
    each, every task on the inline engine over the same Flower apps (see :mod:`fedsim.parallel`):
    over the local cores, or over the cluster at ``engine.ray_address`` / ``RAY_ADDRESS``.
    Otherwise (base engine ``inline``) they run one after another in this process. Either way a
    variant's metrics equal those of running it alone.

    A new folder ``<base_cfg.output.dir>/<name>-<UTC timestamp>/`` is created unless
    ``resume`` names an existing sweep folder; then variants recorded as completed or
    diverged (whose run directory still exists) are skipped and the rest rerun. A variant
    that raises is recorded as failed and the sweep goes on; Ctrl-C records ``interrupted``
    (shutting Ray down) and stops. ``index.json`` is rewritten atomically as each variant
    finishes. ``plot`` writes the overall figures at the end.
    """
    if resume is not None:
        sweep_dir = Path(resume)
        index = _resume_index(sweep_dir, variants)
    else:
        sweep_dir = new_sweep_dir(base_cfg.output.dir, base_cfg.name)
        index = {
            "name": base_cfg.name,
            "created": datetime.now(UTC).isoformat(),
            "total": len(variants),
            "keys": base_cfg.sweep,
            "variants": [
                {"id": v.id, "assignments": v.assignments, "run_dir": None, "status": "pending"}
                for v in variants
            ],
        }
        atomic_write_text(sweep_dir / "sweep.toml", tomli_w.dumps(to_toml_dict(base_cfg)))
    _write_index(sweep_dir, index)

    todo = [i for i, entry in enumerate(index["variants"]) if not _is_done(sweep_dir, entry)]
    if parallel is None:
        parallel = base_cfg.engine.name == "ray"
    progress = None if quiet else _progress()
    task = None
    if progress is not None:
        progress.start()
        task = progress.add_task(base_cfg.name, total=len(variants),
                                 completed=len(variants) - len(todo), current="")
    try:
        if parallel:
            _run_parallel(variants, todo, base_cfg, sweep_dir, index, progress, task)
        else:
            for i in todo:
                variant, entry = variants[i], index["variants"][i]
                if progress is not None and task is not None:
                    progress.update(task, current=variant.id)
                entry.update(status="running", run_dir=None)
                entry.pop("error", None)
                _write_index(sweep_dir, index)
                _run_variant(variant, sweep_dir, entry, index)
                if progress is not None and task is not None:
                    progress.advance(task)
    finally:
        if progress is not None:
            progress.stop()
    index["finished"] = datetime.now(UTC).isoformat()
    _write_index(sweep_dir, index)
    if plot:
        _plot_sweep(sweep_dir, index)
    return sweep_dir


def _run_parallel(variants: list[Variant], todo: list[int], base_cfg: ExperimentConfig, sweep_dir: Path,
                  index: dict[str, Any], progress: Any, task: Any) -> None:
    """The unfinished variants as Ray tasks; each result is written and indexed as it lands."""
    from fedsim.parallel import run_parallel, unpack_run_dir

    entries = index["variants"]
    for i in todo:
        entries[i].update(status="queued", run_dir=None)
        entries[i].pop("error", None)
    _write_index(sweep_dir, index)
    finished: set[int] = set()

    def started(workers: int) -> None:
        index["workers"] = workers
        if progress is not None and task is not None:
            progress.update(task, current=f"{workers} workers")

    def landed(i: int, result: dict[str, Any]) -> None:
        entry = entries[i]
        if result.get("name") and result.get("files"):
            entry["run_dir"] = unpack_run_dir(sweep_dir, result["name"], result["files"]).name
        entry["status"] = result["status"]
        if result.get("error"):
            entry["error"] = result["error"]
        for key in ("wall_s", "cpu_s"):  # the task's own seconds: how busy the workers were
            if key in result:
                entry[key] = result[key]
        finished.add(i)
        _write_index(sweep_dir, index)
        if progress is not None and task is not None:
            progress.update(task, advance=1, current=variants[i].id)

    try:
        run_parallel([(i, variants[i].config) for i in todo], base_cfg.engine, landed, started)
    except BaseException as exc:
        for i in todo:
            if i not in finished:
                entries[i]["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                if not isinstance(exc, KeyboardInterrupt):
                    entries[i]["error"] = f"{type(exc).__name__}: {exc}"
        _write_index(sweep_dir, index)
        raise


def new_sweep_dir(out_dir: str | Path, name: str) -> Path:
    """Create ``out_dir/<name>-<UTC timestamp>`` (suffixed if taken); no subfolders."""
    return stamped_dir(out_dir, name)


def read_index(sweep_dir: str | Path) -> dict[str, Any]:
    """The parsed ``index.json`` of a sweep folder."""
    p = Path(sweep_dir) / INDEX
    if not p.exists():
        raise RunDirError(f"{sweep_dir}: not a fedsim sweep folder (no {INDEX})")
    try:
        index = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{p} is corrupt: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("variants"), list):
        raise RunDirError(f"{p} is corrupt: no list of variants")
    return index


def is_sweep_dir(path: str | Path) -> bool:
    """A sweep folder has an index.json and, unlike a run directory, no config.toml."""
    p = Path(path)
    return (p / INDEX).is_file() and not (p / "config.toml").exists()


def variant_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run directories of a sweep's variants that exist, in variant order."""
    out = []
    for entry in read_index(sweep_dir)["variants"]:
        rd = entry.get("run_dir")
        if rd and (Path(sweep_dir) / rd / "config.toml").exists():
            out.append(Path(sweep_dir) / rd)
    return out


def expand_run_dirs(paths: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Replace each sweep folder in ``paths`` by its variants' run directories."""
    out: list[Path] = []
    for p in paths:
        if is_sweep_dir(p):
            dirs = variant_run_dirs(p)
            if not dirs:
                raise RunDirError(f"{p}: this sweep has no variant run directories yet")
            out.extend(dirs)
        else:
            out.append(Path(p))
    return out


def sweep_table(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per variant: id, status, rounds, the final loss/accuracy/gap and, for architecture
    searches, the retrained architecture's accuracy (None if absent)."""
    rows = []
    for entry in read_index(sweep_dir)["variants"]:
        summary: dict[str, Any] = {}
        if entry.get("run_dir"):
            sp = Path(sweep_dir) / entry["run_dir"] / "summary.json"
            if sp.exists():
                summary = json.loads(sp.read_text(encoding="utf-8"))
        final = summary.get("final", {})
        retrained = summary.get("search", {}).get("retrain", {}).get("final", {})
        rows.append({"id": entry["id"], "status": entry.get("status"),
                     "rounds": summary.get("rounds"),
                     **{k: final.get(k) for k in ("loss", "accuracy", "gap")},
                     "retrained_accuracy": retrained.get("accuracy")})
    return rows


def _run_variant(variant: Variant, sweep_dir: Path, entry: dict[str, Any],
                 index: dict[str, Any]) -> None:
    cfg = variant.config.model_copy(deep=True)
    cfg.output.dir = str(sweep_dir)
    before = {p.name for p in sweep_dir.iterdir()}
    try:
        # The sweep shows its own progress; a per-variant bar would fight with it.
        run_dir = run_experiment(cfg, quiet=True)
        entry["run_dir"] = run_dir.name
        entry["status"] = _summary_status(run_dir)
    except BaseException as exc:  # noqa: BLE001 - one bad variant must not end the sweep
        new = sorted({p.name for p in sweep_dir.iterdir() if p.is_dir()} - before - {"figures"})
        entry["run_dir"] = new[0] if len(new) == 1 else None
        entry["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        entry["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, Exception):
            _write_index(sweep_dir, index)
            raise
    _write_index(sweep_dir, index)


def _summary_status(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["status"])
    except (OSError, ValueError, KeyError):
        return "failed"


def _is_done(sweep_dir: Path, entry: dict[str, Any]) -> bool:
    rd = entry.get("run_dir")
    return entry.get("status") in DONE and bool(rd) and (sweep_dir / rd / "summary.json").exists()


def _resume_index(sweep_dir: Path, variants: list[Variant]) -> dict[str, Any]:
    index = read_index(sweep_dir)
    recorded = [(e.get("id"), e.get("assignments")) for e in index["variants"]]
    wanted = [(v.id, v.assignments) for v in variants]
    if recorded != wanted:
        pairs = zip(recorded, wanted, strict=False)
        diff = next((f"recorded {r[0]!r}, now {w[0]!r}" for r, w in pairs if r != w),
                    f"recorded {len(recorded)} variants, now {len(wanted)}")
        raise ConfigError(f"cannot resume {sweep_dir}: its variants differ from this experiment's "
                          f"({diff}); start a new sweep instead")
    index["total"] = len(variants)
    index.pop("finished", None)
    return index


def _write_index(sweep_dir: Path, index: dict[str, Any]) -> None:
    index["updated"] = datetime.now(UTC).isoformat()
    atomic_write_text(sweep_dir / INDEX, json.dumps(json.loads(dumps(index)), indent=2) + "\n")


def _plot_sweep(sweep_dir: Path, index: dict[str, Any]) -> None:
    from fedsim.plots import plot_runs
    from fedsim.rundir import read_metrics

    dirs = [d for d in variant_run_dirs(sweep_dir) if read_metrics(d / "metrics.jsonl")]
    if not dirs:
        return
    try:
        plot_runs(dirs, x="round", out=sweep_dir / "figures" / "convergence")
        plot_runs(dirs, x="sim_time", out=sweep_dir / "figures" / "convergence-sim_time")
    except FedsimError as exc:  # a figure is a convenience; the runs are already on disk
        index["plot_error"] = str(exc)
        _write_index(sweep_dir, index)


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]sweep {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
        console=Console(stderr=True),
        transient=False,
    )
