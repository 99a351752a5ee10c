"""What tells runs apart: their configs flattened to dotted keys, the keys whose values differ, and
legend labels built from them (shared by ``fedsim plot`` and ``fedsim report``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from channels import ChannelConfig, Dispatch

#: Keys that never tell groups apart: bookkeeping, where and how a run ran, the replicate index.
IGNORED = {"name", "seed", "output.dir", "output.plot", "output.loggers", "output.mlflow_uri", "output.run_name",
           "engine.name", "engine.ray_address", "engine.num_cpus", "engine.cpus_per_ue", "engine.object_store_mb"}
#: Channel parts (fading law, interference model, power control): one value each, "sas(alpha=1.5)".
PART_KEYS = {f"channel.{n}" for n, f in ChannelConfig.model_fields.items()
             if any(isinstance(m, Dispatch) for m in f.metadata)}
#: Leaves that need their section to mean anything ("strategy.name", "overlap.enabled").
GENERIC_LEAVES = {"name", "enabled", "mode", "scale", "schedule"}


def part_text(value: Any) -> str:
    """A channel part as one value: its name, with its parameters in parentheses."""
    if isinstance(value, dict):
        args = ",".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value.get('name')}({args})" if args else str(value.get("name"))
    return str(value)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as ``{dotted key: value}``; a channel part stays one value (:func:`part_text`)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in PART_KEYS:
            out[key] = part_text(v)
        elif isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differing_keys(flats: Sequence[dict[str, Any]]) -> list[str]:
    """Keys whose values differ between the flattened configs. A key that only some runs have,
    with one value wherever it is present, differs only where another difference does not already
    explain it: ``strategy.mode`` exists only for server-free strategies (``strategy.name`` shows
    it), but ``channel.interference_mode = "common"`` set in some relay runs and left unset in
    others separates runs that nothing else tells apart."""
    keys = sorted({k for f in flats for k in f} - IGNORED)
    full = [k for k in keys if _varies(flats, k)]
    partial = [k for k in keys if k not in full and any(k not in f for f in flats)]
    return sorted(full + [k for k in partial if not _explained(flats, k, full)])


def _varies(flats: Sequence[dict[str, Any]], key: str) -> bool:
    return len({repr(f[key]) for f in flats if key in f}) > 1


def _explained(flats: Sequence[dict[str, Any]], key: str, others: Sequence[str]) -> bool:
    """Whether the runs that share every other differing value agree on having ``key``."""
    having: dict[tuple[str, ...], set[bool]] = {}
    for f in flats:
        having.setdefault(tuple(repr(f.get(k)) for k in others), set()).add(key in f)
    return all(len(v) == 1 for v in having.values())


def short_key(key: str, keys: Sequence[str]) -> str:
    """``key``'s last part when that names it unambiguously among ``keys``, else the whole key."""
    leaf = key.split(".")[-1]
    return leaf if leaf not in GENERIC_LEAVES and sum(k.split(".")[-1] == leaf for k in keys) == 1 else key


def label_of(values: dict[str, Any], keys: Sequence[str]) -> str:
    """``interference=sas(alpha=1.5), strategy.name=server-ota`` for the differing ``values``."""
    return ", ".join(f"{short_key(k, keys)}={v}" for k, v in values.items())
