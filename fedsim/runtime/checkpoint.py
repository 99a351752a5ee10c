"""Checkpoints: plain tensors plus JSON, written atomically, verified on load.

Layout under ``RUN_DIR/checkpoints/``::

    state-<round>.pt   torch.save of a flat dict {name: tensor} (loaded with weights_only=True)
    latest.json        the commit point: round, file name, SHA-256 of the .pt file, every
                       tensor's dtype and shape, and the JSON state (clock, pending row,
                       analytics, medium inbox layout, UE record layout, metrics line count)

A checkpoint is written as: tensors to a temp file (fsync if ``checkpoint.fsync``), rename to ``state-<round>.pt``; then
``latest.json`` the same way; then older ``state-*.pt`` files are removed. A crash at any point
leaves the previous checkpoint intact. Loading checks the hash, the tensor names, dtypes and
shapes, so a tampered or truncated checkpoint raises :class:`fedsim.errors.RunDirError`.

What must be saved beyond models (found with the kill-and-resume identity test): the channel
result of the last round (server-free rows are logged one message later), the medium's inbox,
and the online analytics' state, whose tail-statistics subsampling uses a *progressive* numpy
generator (its position is saved as JSON). Every other random draw is keyed by
(seed, stream, round, ue) and needs nothing beyond the round counter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from channels import ChannelResult
from fedsim.errors import RunDirError
from fedsim.results.rundir import atomic_write_bytes

FORMAT = 2  # 2: the strategy state and the hooks' states are generic (pack/unpack)
LATEST = "latest.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the protocol round it follows, JSON state and named tensors."""

    round: int
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]


class TensorBag:
    """Collects tensors under generated names (``t0``, ``t1``, ...) for one checkpoint."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None):
        self.tensors: dict[str, torch.Tensor] = tensors if tensors is not None else {}

    def put(self, t: torch.Tensor | np.ndarray) -> str:
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(t))
        name = f"t{len(self.tensors)}"
        self.tensors[name] = t.detach().cpu().clone().contiguous()
        return name

    def get(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name].clone()
        except KeyError:
            raise RunDirError(f"checkpoint is inconsistent: tensor {name!r} is missing") from None


# ----------------------------------------------------------------------------- files


def save_checkpoint(run_dir: Path, round: int, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                    fsync: bool = True) -> Path:
    """Write a checkpoint for ``round`` atomically; returns the path of ``latest.json``."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(dict(tensors), buf)
    data = buf.getvalue()
    name = f"state-{round}.pt"
    atomic_write_bytes(folder / name, data, fsync)
    index = {
        "format": FORMAT,
        "round": round,
        "file": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "tensors": {k: [str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in tensors.items()},
        "meta": meta,
    }
    atomic_write_bytes(folder / LATEST, (json.dumps(index) + "\n").encode("utf-8"), fsync)
    for old in folder.glob("state-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return folder / LATEST


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The latest checkpoint of ``run_dir``, or None when none was written yet.

    Raises RunDirError for a tampered, truncated or inconsistent checkpoint."""
    folder = Path(run_dir) / "checkpoints"
    index_path = folder / LATEST
    if not index_path.exists():
        return None
    where = f"{index_path}"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {index.get('format') if isinstance(index, dict) else '?'}")
        rnd, name, digest = int(index["round"]), str(index["file"]), str(index["sha256"])
        layout, meta = dict(index["tensors"]), dict(index["meta"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{where} is corrupt ({exc}); delete the checkpoints folder to restart the run") from None
    if "/" in name or "\\" in name or not name.startswith("state-"):
        raise RunDirError(f"{where} names an unexpected file {name!r}")
    path = folder / name
    if not path.is_file():
        raise RunDirError(f"checkpoint file {path} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise RunDirError(f"checkpoint {path} does not match its recorded SHA-256 (truncated or modified); "
                          "delete the checkpoints folder to restart the run")
    try:
        tensors = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise RunDirError(f"checkpoint {path} cannot be read safely: {type(exc).__name__}") from None
    if not isinstance(tensors, dict) or set(tensors) != set(layout):
        raise RunDirError(f"checkpoint {path} holds other tensors than {where} lists")
    for k, t in tensors.items():
        dtype, shape = layout[k]
        if not isinstance(t, torch.Tensor) or str(t.dtype).removeprefix("torch.") != dtype or list(t.shape) != shape:
            raise RunDirError(f"checkpoint {path}: tensor {k} does not have dtype {dtype} and shape {shape}")
    return Checkpoint(rnd, meta, tensors)


# ----------------------------------------------------------------------------- sizes


def state_bytes(workload: Any, per_ue: bool) -> int:
    """Bytes of model state in a checkpoint: one model, or (server-free/overlap) about three
    per UE (model, sync model, inbox) plus their pending blocks."""
    item = torch.empty((), dtype=workload.dtype).element_size()
    return workload.dim * item * (3 * workload.num_ues if per_ue else 1)


def auto_every(cfg: Any, workload: Any, per_ue: bool) -> int:
    """``checkpoint.every`` when unset: every round up to ``auto_mib`` MiB of state, else
    proportionally less often (about ``auto_mib`` MiB written per round on average)."""
    if cfg.checkpoint.every is not None:
        return int(cfg.checkpoint.every)
    mib = state_bytes(workload, per_ue) / 2**20
    return max(1, math.ceil(mib / cfg.checkpoint.auto_mib))


# ----------------------------------------------------------------------------- objects


def _plain(v: Any) -> bool:
    """JSON round-trips ``v`` exactly (no tuples, no int dict keys)."""
    if v is None or isinstance(v, bool | int | str):
        return True
    if isinstance(v, float):
        return True
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def snapshot_attrs(obj: Any, bag: TensorBag) -> dict[str, Any]:
    """The mutable state of an object as JSON + tensors: its arrays, tensors, numpy generators
    and plain JSON values. Other attributes (configs, callables, workload) are rebuilt by the
    constructor from the config and are not saved."""
    out: dict[str, Any] = {}
    for k, v in vars(obj).items():
        if isinstance(v, np.ndarray) and v.dtype != object:
            out[k] = {"ndarray": bag.put(v)}
        elif isinstance(v, torch.Tensor):
            out[k] = {"tensor": bag.put(v)}
        elif isinstance(v, np.random.Generator):
            out[k] = {"rng": v.bit_generator.state}
        elif isinstance(v, np.generic):
            out[k] = {"value": v.item()}
        elif _plain(v):
            out[k] = {"value": v}
    return out


def restore_attrs(obj: Any, spec: dict[str, Any], bag: TensorBag) -> None:
    """Inverse of :func:`snapshot_attrs` on a freshly constructed object."""
    for k, s in spec.items():
        if "ndarray" in s:
            setattr(obj, k, bag.get(s["ndarray"]).numpy())
        elif "tensor" in s:
            setattr(obj, k, bag.get(s["tensor"]))
        elif "rng" in s:
            rng = getattr(obj, k)
            rng.bit_generator.state = s["rng"]
        else:
            setattr(obj, k, s["value"])


def channel_to(res: Any, bag: TensorBag) -> dict[str, Any] | None:
    """A ``channels.ChannelResult`` as JSON + tensors (None stays None)."""
    if res is None:
        return None
    out: dict[str, Any] = {}
    for f in dataclasses.fields(res):
        v = getattr(res, f.name)
        if isinstance(v, torch.Tensor):
            out[f.name] = {"tensor": bag.put(v)}
        elif f.name == "extras":
            out[f.name] = {"extras": {k: ({"tensor": bag.put(x)} if isinstance(x, torch.Tensor) else {"value": x})
                                      for k, x in v.items() if isinstance(x, torch.Tensor) or _plain(x)}}
        else:
            out[f.name] = {"value": v.item() if hasattr(v, "item") else v}
    return out


def channel_from(spec: dict[str, Any] | None, bag: TensorBag) -> Any:
    """Inverse of :func:`channel_to`."""
    if spec is None:
        return None
    kwargs: dict[str, Any] = {}
    for k, s in spec.items():
        if "tensor" in s:
            kwargs[k] = bag.get(s["tensor"])
        elif "extras" in s:
            kwargs[k] = {n: (bag.get(x["tensor"]) if "tensor" in x else x["value"]) for n, x in s["extras"].items()}
        else:
            kwargs[k] = s["value"]
    return ChannelResult(**kwargs)


def pack(obj: Any, bag: TensorBag) -> Any:
    """A nested structure of dicts, lists and tensors as JSON, its tensors put in ``bag``."""
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": bag.put(obj)}
    if isinstance(obj, dict):
        return {str(k): pack(v, bag) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [pack(v, bag) for v in obj]
    return obj


def unpack(obj: Any, bag: TensorBag) -> Any:
    """Inverse of :func:`pack`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return bag.get(obj["__tensor__"])
        return {k: unpack(v, bag) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, bag) for v in obj]
    return obj
