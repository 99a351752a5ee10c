"""Tabular mode: answer the objective from a lookup table recorded once from live runs, so that
search methods can be compared in seconds.

A table is a JSON file ``{"meta": {...}, "space": {key: values}, "fidelity": {key: levels},
"records": {canonical key: [value, cost]}}`` where the canonical key is
:func:`fedsim.search.space.canonical_key` of (config, fidelity). The shipped table
(``fedsim/search/data/hpo_table.json``, made by ``scripts/make_hpo_table.py``) is checked against
:data:`SHIPPED_SHA256` when it is read: a changed file is refused rather than silently answered from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fedsim.errors import ConfigError
from fedsim.search.objective import Benchmark, Candidate
from fedsim.search.space import FidelitySpace, SearchSpace, canonical_key

__all__ = ["SHIPPED_SHA256", "SHIPPED_TABLE", "TabularBenchmark", "load_table", "write_table"]

SHIPPED_TABLE = Path(__file__).parent / "data" / "hpo_table.json"
#: SHA-256 of the shipped table's bytes (update it with the table: scripts/make_hpo_table.py prints it).
SHIPPED_SHA256 = "02c4a7330913f1f0da48ae39a33234dd6033fa06410c799b3eb012bec8f76d54"


def load_table(path: str | Path | None = None, sha256: str | None = None) -> dict[str, Any]:
    """Read a table; the shipped one (``path`` None) must match :data:`SHIPPED_SHA256`, another
    one ``sha256`` when given. ConfigError if it is missing, malformed or altered."""
    p = Path(path) if path is not None else SHIPPED_TABLE
    want = SHIPPED_SHA256 if path is None else sha256
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tabular table {p}: {exc.strerror or exc}") from None
    if want is not None and hashlib.sha256(raw).hexdigest() != want:
        raise ConfigError(f"tabular table {p}: SHA-256 {hashlib.sha256(raw).hexdigest()} differs from the "
                          f"recorded {want}; the file was altered (regenerate it with scripts/make_hpo_table.py)")
    try:
        table = json.loads(raw)
        if not all(k in table for k in ("space", "fidelity", "records")):
            raise ValueError("needs space, fidelity and records")
    except ValueError as exc:
        raise ConfigError(f"tabular table {p}: malformed ({exc})") from None
    return table


def write_table(path: Path, meta: dict[str, Any], space: dict[str, list[Any]], fidelity: dict[str, list[Any]],
                records: dict[str, list[float | None]]) -> str:
    """Write a table (keys sorted, compact) and return its SHA-256."""
    text = json.dumps({"meta": meta, "space": space, "fidelity": fidelity,
                       "records": dict(sorted(records.items()))}, separators=(",", ":"), sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return hashlib.sha256((text + "\n").encode("utf-8")).hexdigest()


class TabularBenchmark(Benchmark):
    """The objective answered by looking ``(config, fidelity)`` up in a table."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.space = SearchSpace(table["space"])
        self.fidelity = FidelitySpace(table["fidelity"])
        self.records: dict[str, list[float | None]] = table["records"]
        self.metric = table.get("meta", {}).get("metric", "value")
        self.num_ues = int(table.get("meta", {}).get("num_ues", 1))

    def lookup(self, config: dict[str, Any], fidelity: dict[str, Any]) -> dict[str, Any]:
        """The recorded ``{value, cost}``; ConfigError for a pair the table does not hold."""
        key = canonical_key(config, fidelity)
        rec = self.records.get(key)
        if rec is None:
            raise ConfigError(f"the table has no entry for config {config} at fidelity {fidelity}")
        return {"value": rec[0], "cost": rec[1], "run_dir": None, "status": "table"}

    def evaluate(self, batch: list[Candidate], tag: str = "batch") -> list[dict[str, Any]]:
        return [self.lookup(c, f) for c, f in batch]

    def full_value(self, config: dict[str, Any]) -> float | None:
        return self.lookup(config, self.fidelity.full())["value"]

    def optimum(self) -> float | None:
        values = [self.full_value(self.space.config(i)) for i in self.space.all_points()]
        known = [v for v in values if v is not None]
        maximize = self.table.get("meta", {}).get("maximize", True)
        return (max(known) if maximize else min(known)) if known else None
