"""From TOML text and ``--set`` overrides to a validated :class:`ExperimentConfig`.

Invalid input raises :class:`fedsim.errors.ConfigError` naming the key path, the bad value and
what is allowed; nothing is written to disk before validation succeeds.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fedsim.config.experiment import ExperimentConfig
from fedsim.config.messages import format_errors
from fedsim.errors import ConfigError

#: The experiment files that ship inside the package (``fedsim list`` shows them).
EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
QUICKSTART = EXPERIMENTS_DIR / "quickstart.toml"


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=1.5"`` -> (["a", "b"], 1.5). Values are read as TOML, else taken as strings; a value
    that opens a list, table or quoted string must be valid TOML (ConfigError with a hint)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, for example workload.num_ues=10")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in path):
        raise ConfigError(f"--set {item!r}: empty key path")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if not raw.startswith(_TOML_OPENERS):
            return path, raw  # a bare word such as server-ota is the string itself
        raise ConfigError(_malformed_value(item, key.strip(), raw, exc)) from None
    return path, value


# A value starting with one of these was meant as TOML; taking it as a string would hide the typo.
_TOML_OPENERS = ("[", "{", '"', "'")


def _malformed_value(item: str, key: str, raw: str, exc: tomllib.TOMLDecodeError) -> str:
    why = re.sub(r"\s*\(at (end of document|line \d+, column \d+)\)", "", str(exc)).lower()
    kind, example = {"[": ("a list", "[0, 1]"), "{": ("a table", '{name = "sas", alpha = 1.5}')}.get(
        raw[0], ("a string", '"text"'))
    return (f"--set {item!r}: the value {raw} is not valid TOML ({why}); write {kind} as "
            f"--set '{key}={example}' (quote the whole item, or the shell splits it at spaces)")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key.path=value`` in a copy of ``data``. A part named by a string (for example
    ``interference = "sas"``) opens as the table ``{name = "sas"}`` when a key below it is set."""
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if isinstance(child, str):
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def shorthand_overrides(engine: str | None = None, out: str | Path | None = None,
                        ray_address: str | None = None) -> list[str]:
    """``--set`` items for the options that are shorthands for keys (``--engine``, ``--out``,
    ``--ray-address``, and the same keyword arguments of ``fedsim.run``)."""
    items = []
    if engine is not None:
        items.append(f"engine.name={engine!r}")
    if ray_address is not None:
        items.append(f"engine.ray_address={ray_address!r}")
    if out is not None:
        items.append(f"output.dir={str(out)!r}")
    return items


def resolve_experiment_path(path: str | Path) -> Path:
    """``path`` itself, or the shipped experiment of that name (``heavy_tail`` or
    ``heavy_tail.toml``) when no such file exists here."""
    p = Path(path)
    if p.exists() or p.parent != Path("."):
        return p
    shipped = EXPERIMENTS_DIR / (p.name if p.suffix == ".toml" else f"{p.name}.toml")
    return shipped if shipped.is_file() else p


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read an experiment file (or a shipped experiment by name), turning every failure into a
    ConfigError."""
    p = resolve_experiment_path(path)
    if not p.exists():
        raise ConfigError(f"experiment file not found: {p} (`fedsim list` shows the shipped experiments)")
    if not p.is_file():
        raise ConfigError(f"experiment path is not a file: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a UTF-8 text file ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: malformed TOML: {exc}") from None
    if not _has_value(data):  # an empty file would silently run every default (50 rounds)
        raise ConfigError(f"{p}: the experiment file sets nothing (no keys); start from a shipped experiment "
                          "(`fedsim list`) or omit the file to run the quickstart")
    return data


def _has_value(node: dict[str, Any]) -> bool:
    """Whether ``node`` holds a key that is not an empty table (``[workload]`` alone sets nothing)."""
    return any(not isinstance(v, dict) or _has_value(v) for v in node.values())


def validate(data: dict[str, Any], source: str = "experiment") -> ExperimentConfig:
    """Validate a plain dict into an ExperimentConfig or raise a readable ConfigError."""
    _reject_non_finite(data, [])
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n" + format_errors(exc, data)) from None


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load ``path`` (the shipped quickstart when None), apply overrides, validate."""
    source = str(path) if path is not None else str(QUICKSTART)
    data = read_toml(source)
    data = apply_overrides(data, overrides or [])
    return validate(data, source)


def to_toml_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The fully resolved config as TOML-writable data (None values dropped)."""
    return cfg.model_dump(mode="json", exclude_none=True)


def _reject_non_finite(node: Any, path: list[str]) -> None:
    # TOML allows nan/inf literals; no fedsim setting accepts them.
    if isinstance(node, dict):
        for k, v in node.items():
            _reject_non_finite(v, [*path, str(k)])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _reject_non_finite(v, [*path, str(i)])
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{'.'.join(path)}: got {node!r}; NaN and infinity are not allowed")
