"""The shipped latency table: every architecture of :mod:`~fedsim.workloads.latency.space` measured
under every device profile (``latency_ms [P, A]``, float32, ms per forward of one batch, median of
the interleaved repeats), produced by ``scripts/measure_latency.py``.

The loader checks the file's SHA-256 against :data:`TABLE_SHA256` and refuses a file that does not
match, with a message saying how to regenerate or restore it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.errors import FedsimError
from fedsim.workloads.latency.space import NUM_ARCHS, PROFILES, DeviceProfile

TABLE_PATH = Path(__file__).parent / "data" / "cnn3_latency.npz"
#: SHA-256 of the shipped table (printed by ``scripts/measure_latency.py``).
TABLE_SHA256 = "db188db2ed527435660049f11c7202b2de47a5c74450ac31c31e63d7c2fb2728"


class LatencyTableError(FedsimError, ValueError):
    """The latency table is missing, corrupt or does not match the search space."""


@dataclass(frozen=True)
class LatencyTable:
    """``latency_ms [P, A]`` (ms per forward of one batch), the ``profiles`` (rows) and the
    measurement metadata (machine, torch version, load average, repeat agreement)."""

    latency_ms: np.ndarray
    profiles: tuple[DeviceProfile, ...]
    meta: dict

    def profile_index(self, name: str) -> int:
        names = [p.name for p in self.profiles]
        if name not in names:
            raise LatencyTableError(f"unknown device profile {name!r}; the table has {', '.join(names)}")
        return names.index(name)

    def row(self, profile: str) -> np.ndarray:
        """``[A]`` latencies of one profile."""
        return self.latency_ms[self.profile_index(profile)]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_table(path: str | Path | None = None, sha256: str | None = TABLE_SHA256) -> LatencyTable:
    """The latency table at ``path`` (default: the shipped one), after checking its SHA-256
    (``sha256=None`` skips the check, for a freshly measured table of your own)."""
    path = Path(TABLE_PATH if path is None else path)
    if not path.is_file():
        raise LatencyTableError(f"latency table {path} not found: reinstall fedsim or run "
                                "scripts/measure_latency.py --out <path>")
    if sha256 is not None and (digest := sha256_of(path)) != sha256:
        raise LatencyTableError(
            f"latency table {path} is corrupt or was changed: its SHA-256 is {digest}, expected {sha256}. "
            "Restore the shipped file (reinstall fedsim) or, after re-measuring with scripts/measure_latency.py, "
            "update TABLE_SHA256 in fedsim/workloads/latency/table.py")
    with np.load(path, allow_pickle=False) as data:
        lat = np.asarray(data["latency_ms"], dtype=np.float64)
        meta = json.loads(str(data["meta"]))
    profiles = tuple(DeviceProfile(**p) for p in meta["profiles"])
    if lat.shape != (len(profiles), NUM_ARCHS) or not np.all(np.isfinite(lat)) or lat.min() <= 0:
        raise LatencyTableError(f"latency table {path} has shape {lat.shape} (or non-positive values); "
                                f"expected ({len(profiles)}, {NUM_ARCHS}) positive milliseconds")
    return LatencyTable(lat, profiles, meta)


@functools.cache
def shipped_table() -> LatencyTable:
    """The shipped table, loaded and checked once per process."""
    table = load_table()
    if [p.name for p in table.profiles] != [p.name for p in PROFILES]:
        raise LatencyTableError("the shipped table's profiles differ from space.PROFILES: re-measure it")
    return table
