"""Sweeps: a ``[sweep]`` table expands into a grid of validated variants.

    [sweep]
    "strategy.name" = ["server-digital", "server-ota"]
    "train.lr.eta" = [0.1, 0.3]
    seed = [0, 1, 2]

The grid is the cartesian product, keys in file order and values in list order (the last key
varies fastest). Every variant is validated before any runs.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from channels import Channel
from fedsim.config import ExperimentConfig, apply_overrides, parse_override, validate
from fedsim.errors import ConfigError

_KEY_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,()-]")
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
            vdata.setdefault("output", {})["run_name"] = vid  # the variant's folder says what differs
            cfg = validate(vdata, f"{source}: sweep variant {vid}")
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        variants.append(Variant(i, vid, assignments, cfg))
    if errors:
        more = f"\n({len(errors)} of {len(combos)} variants are invalid; the first is shown)"
        raise ConfigError(errors[0] + (more if len(errors) > 1 else ""))
    refuse_ignored(sweep, variants)
    return variants


def refuse_ignored(sweep: dict[str, list[Any]], variants: list[Variant]) -> None:
    """A swept channel key that no variant's receiver uses varies nothing: refuse it (ConfigError)."""
    swept = [k for k, values in sweep.items() if len(values) > 1 and k.startswith("channel.")
             and len(k.split(".")) == 2]
    if not swept or not variants:
        return
    ignoring = [Channel(v.config.channel, v.config.make_strategy().receiver).receiver.ignored() for v in variants]
    for key in swept:
        field = key.split(".")[1]
        if all(field in ignored for ignored in ignoring):
            receivers = sorted({v.config.make_strategy().receiver for v in variants})
            raise ConfigError(f"sweep.{key}: every variant ignores channel.{field} (receiver "
                              f"{', '.join(receivers)} with this channel), so its values would change nothing; "
                              "drop it from the sweep")


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


def _short(value: Any, key: str) -> str:
    """A value as it reads in a variant id: a string as is, a named part as ``sas(alpha=1.5)``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        args = ",".join(f"{k}={_short(v, key)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({args})"
    return _literal(value, key).replace(" ", "")


def _variant_id(index: int, width: int, values: dict[str, Any]) -> str:
    """``003-strategy.name=server-ota,seed=1``: index first (unique), filesystem-safe."""
    parts = [f"{k}={_short(v, k)}" for k, v in values.items()]
    text = _UNSAFE.sub("_", ",".join(parts))
    vid = f"{index:0{width}d}" + (f"-{text}" if text else "")
    return vid[:_MAX_ID]


