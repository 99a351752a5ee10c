"""Pieces every strategy shares: flat-vector records, reply ordering, seeded UE sampling.

A model crosses the medium as one flat vector ``[d]`` inside an ``ArrayRecord``. Replies are
always processed in partition-id order, never arrival order, so that Ray's scheduling cannot
change a single number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message

from channels.rng import torch_generator

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
PARTITION_ID = "partition-id"
NUM_EXAMPLES = "num-examples"
TRANSMITTED = "transmitted"  # reply metric: 1.0 when the reply's first vector is a transmission


#: Array serialisation type for raw contiguous bytes: Flower's default (``numpy.ndarray``) writes
#: and parses a .npy header for every array, which dominated the cost of small messages.
RAW_STYPE = "fedsim.raw"


def to_array(t: torch.Tensor) -> Array:
    """A Flower ``Array`` holding the tensor's raw bytes."""
    a = t.detach().cpu().contiguous().numpy()
    return raw_array(a.dtype.str, tuple(int(n) for n in a.shape), a.tobytes())


def raw_array(dtype: str, shape: tuple[int, ...], data: bytes) -> Array:
    """``Array(dtype=dtype, shape=shape, stype=RAW_STYPE, data=data)`` built without its generic
    argument parsing (~4 us of a ~90 us UE-round): the same instance state, a fresh dirty object."""
    arr = Array.__new__(Array)
    arr.__dict__.update(_is_dirty=True, dtype=dtype, shape=shape, stype=RAW_STYPE, data=data)
    return arr


def array_to_numpy(a: Array) -> np.ndarray:
    """A read-only numpy view of an ``Array`` of either serialisation type."""
    if a.stype == RAW_STYPE:
        return np.frombuffer(a.data, dtype=np.dtype(a.dtype)).reshape(a.shape)
    return a.numpy()


def to_record(*vectors: torch.Tensor) -> ArrayRecord:
    """One ArrayRecord holding the given flat tensors, in order."""
    record = ArrayRecord()  # filled item by item: ArrayRecord(array_dict=...) copies every Array
    for i, v in enumerate(vectors):
        record[str(i)] = to_array(v)
    return record


def from_record(record: ArrayRecord, device: torch.device | None = None) -> list[torch.Tensor]:
    """The tensors of an ArrayRecord, in order (copies, safe to modify), on ``device`` (CPU by
    default)."""
    out = [torch.from_numpy(array_to_numpy(a).copy()) for a in record.values()]
    if device is not None and device.type != "cpu":
        out = [t.to(device) for t in out]
    return out


@dataclass
class Reply:
    """A successful UE reply: its partition id, vectors and scalar metrics."""

    ue: int
    vectors: list[torch.Tensor]
    metrics: dict[str, float]


@dataclass
class Failure:
    """A UE whose reply carried an error instead of content."""

    ue: int | None
    node_id: int
    reason: str


def split_replies(replies: Iterable[Message], ue_of_node: dict[int, int]) -> tuple[list[Reply], list[Failure]]:
    """Separate good replies from errors; good ones sorted by partition id."""
    good: list[Reply] = []
    bad: list[Failure] = []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            bad.append(Failure(ue_of_node.get(node), node, str(msg.error.reason)))
            continue
        content = msg.content
        metrics = dict(content[METRICS]) if METRICS in content else {}
        ue = int(metrics.get(PARTITION_ID, ue_of_node.get(node, -1)))
        vectors = from_record(content[ARRAYS]) if ARRAYS in content else []
        good.append(Reply(ue, vectors, {k: float(v) for k, v in metrics.items()}))
    good.sort(key=lambda r: r.ue)
    bad.sort(key=lambda f: (f.ue is None, f.ue if f.ue is not None else f.node_id))
    return good, bad


def transmissions(replies: list[Reply]) -> list[Reply]:
    """The replies whose first vector is a transmission (a UE may reply without transmitting)."""
    return [r for r in replies if r.metrics.get(TRANSMITTED) == 1.0]


def split_finite(replies: list[Reply], *, first_only: bool = False) -> tuple[list[Reply], list[Reply]]:
    """``(finite, non_finite)``: replies whose vectors (or only the first) hold no inf/NaN.
    One ``isfinite`` over all vectors stacked when they share shape and dtype (the usual case)."""
    vecs = [r.vectors[:1] if first_only else r.vectors for r in replies]
    flat = [v for vs in vecs for v in vs]
    if flat and all(v.shape == flat[0].shape and v.dtype == flat[0].dtype for v in flat):
        rows = torch.stack(flat).reshape(len(flat), -1)
        # A finite row sum proves the row finite (inf/NaN propagate) and is ~3x cheaper than an
        # elementwise isfinite; rows whose sum is not finite (NaN, inf or overflow) get the exact test.
        ok = torch.isfinite(rows.sum(1))
        if not bool(ok.all()):
            ok = torch.isfinite(rows).all(1)
        ok = ok.tolist()
    else:
        ok = [bool(torch.isfinite(v).all()) for v in flat]
    finite, non_finite, i = [], [], 0
    for r, vs in zip(replies, vecs, strict=True):
        (finite if all(ok[i : i + len(vs)]) else non_finite).append(r)
        i += len(vs)
    return finite, non_finite


def sample_ues(seed: int, round: int, num_ues: int, fraction: float) -> list[int]:
    """A seeded sample of ``max(1, round(fraction * N))`` UE ids, sorted. Fraction 1 -> all."""
    if fraction >= 1.0:
        return list(range(num_ues))
    k = max(1, int(round_half_up(fraction * num_ues)))
    perm = torch.randperm(num_ues, generator=torch_generator(seed, "sampling", round))
    return sorted(perm[:k].tolist())


def round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))
