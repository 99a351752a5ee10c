"""Search and fidelity spaces over config keys.

A search space is an ordered list of dimensions, each a dotted config key (``train.lr.eta``,
``workload.filters``) with a finite list of values: a grid of choices. A point of the space is
a vector of grid indices (one integer per dimension), so every method works on integers and the
config follows by looking the values up. Integer grids such as the filters ``16x + 16`` of the
segmentation search are written out as the list of their values.

A fidelity space is the same over keys that make an evaluation cheaper or harder (``rounds``,
``strategy.fraction``, ``workload.num_ues``, ``channel.gsnr_db``, ``channel.interference.alpha``);
each list runs from the cheapest to the full fidelity, and the full fidelity is its last value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.config import parse_override
from fedsim.errors import ConfigError

__all__ = ["Dimension", "FidelitySpace", "SearchSpace", "assignments", "canonical_key", "expand_indexed",
           "toml_literal"]

# ``workload.filters[1]``: one entry of a list-valued key (per-level choices of an architecture)
_INDEXED = re.compile(r"^(?P<key>[A-Za-z0-9_.-]+)\[(?P<i>[0-9]+)\]$")


@dataclass(frozen=True)
class Dimension:
    """One config key and its grid of values."""

    key: str
    values: tuple[Any, ...]

    @property
    def size(self) -> int:
        return len(self.values)


def _dimensions(table: dict[str, Any], what: str) -> list[Dimension]:
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{what}: expected a table of dotted config keys to lists of values, got {table!r}")
    dims = []
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{what}.{key}: expected a non-empty list of values, got {values!r}")
        if key in ("seed", "output.dir", "sweep") or key.startswith(("sweep.", "output.", "engine.")):
            raise ConfigError(f"{what}.{key}: cannot be searched (the search owns seeds, output and engine)")
        for v in values:
            toml_literal(v, f"{what}.{key}")
        dims.append(Dimension(key, tuple(values)))
    return dims


class SearchSpace:
    """A grid over config keys; points are integer index vectors."""

    def __init__(self, table: dict[str, Any], what: str = "space") -> None:
        self.dims = _dimensions(table, what)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([d.size for d in self.dims], dtype=np.int64)

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dims]

    @property
    def cardinality(self) -> int:
        return int(np.prod(self.sizes))

    def clip(self, index: np.ndarray) -> np.ndarray:
        """Round a real vector to the nearest grid point inside the space (round half to even)."""
        return np.clip(np.rint(np.asarray(index, dtype=float)), 0, self.sizes - 1).astype(np.int64)

    def config(self, index: np.ndarray | list[int]) -> dict[str, Any]:
        """The ``{key: value}`` of a grid point."""
        return {d.key: d.values[int(i)] for d, i in zip(self.dims, index, strict=True)}

    def index_of(self, config: dict[str, Any]) -> list[int]:
        """The grid point of a ``{key: value}`` config (ConfigError if a value is off the grid)."""
        out = []
        for d in self.dims:
            if d.key not in config or config[d.key] not in d.values:
                raise ConfigError(f"space.{d.key}: value {config.get(d.key)!r} is not on the grid {list(d.values)}")
            out.append(d.values.index(config[d.key]))
        return out

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` grid points drawn uniformly (with replacement), ``[n, D]``."""
        return rng.integers(0, self.sizes, size=(n, len(self.dims)))

    def all_points(self) -> np.ndarray:
        """Every grid point, ``[cardinality, D]``, the last dimension varying fastest."""
        grids = np.meshgrid(*(np.arange(s) for s in self.sizes), indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1)


class FidelitySpace(SearchSpace):
    """Fidelity keys, each with its levels from cheapest to full (the last)."""

    def __init__(self, table: dict[str, Any] | None) -> None:
        self.dims = _dimensions(table, "fidelity") if table else []

    def full(self) -> dict[str, Any]:
        """Every key at its last (full) level."""
        return {d.key: d.values[-1] for d in self.dims}

    def at_level(self, key: str, level: int) -> dict[str, Any]:
        """Full fidelity except ``key`` at its ``level``-th value."""
        out = self.full()
        dim = next(d for d in self.dims if d.key == key)
        out[key] = dim.values[level]
        return out


def toml_literal(value: Any, key: str) -> str:
    """``value`` as a TOML literal that ``--set`` reads back unchanged (ConfigError otherwise)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dict | list):
        text = _compound(value, key)
    else:
        raise ConfigError(f"{key}: unsupported value {value!r} (numbers, strings, booleans, lists or tables)")
    _, back = parse_override(f"v={text}")
    if back != value or type(back) is not type(value):
        raise ConfigError(f"{key}: value {value!r} cannot be written as a --set override")
    return text


def _compound(value: dict[str, Any] | list[Any], key: str) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v, key) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(v, key)}" for k, v in value.items()) + "}"


def assignments(*parts: dict[str, Any]) -> list[str]:
    """``key=value`` overrides for the configs ``parts`` (later parts win)."""
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return [f"{k}={toml_literal(v, k)}" for k, v in merged.items()]


def canonical_key(config: dict[str, Any], fidelity: dict[str, Any]) -> str:
    """One string for a (config, fidelity) pair: sorted keys, compact JSON; the tabular key."""
    return json.dumps({"config": config, "fidelity": fidelity}, sort_keys=True, separators=(",", ":"))


def expand_indexed(values: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """Fold entries ``key[i] = v`` into whole lists ``key = [...]``, starting from the list that
    ``resolved`` (the base experiment with every default written out) holds at ``key``. Other
    entries pass through. ConfigError if ``key`` holds no list or ``i`` is past its end."""
    out: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {}
    for name, value in values.items():
        m = _INDEXED.match(name)
        if m is None:
            out[name] = value
            continue
        key, i = m.group("key"), int(m.group("i"))
        if key not in lists:
            lists[key] = _base_list(resolved, key, name)
        if i >= len(lists[key]):
            raise ConfigError(f"space.{name}: {key} has {len(lists[key])} entries in the base experiment")
        lists[key][i] = value
    out.update(lists)
    return out


def _base_list(resolved: dict[str, Any], key: str, name: str) -> list[Any]:
    node: Any = resolved
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, list):
        return list(node)
    raise ConfigError(f"space.{name}: {key} is not a list in the base experiment (got {node!r}); give the base "
                      f"a list, e.g. set = [\"{key}=[...]\"] with one entry per level")
