"""Messages between the round loop and the UEs: discovery, sending with retries, and the UEs'
private state for checkpoints."""

from __future__ import annotations

import time
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsim.errors import FedsimError
from fedsim.runtime.checkpoint import TensorBag
from strategies.common import METRICS, PARTITION_ID, array_to_numpy

NODE_DISCOVERY_TIMEOUT_S = 300.0
#: Flower error codes that mean the UE's code raised (a UE fault, recorded, not retried).
UE_ERROR_CODES = (1, 2)  # LOAD_CLIENT_APP_EXCEPTION, CLIENT_APP_RAISED_EXCEPTION
MAX_RETRIES = 2


def discover_nodes(grid: Grid, num_ues: int, timeout: float = NODE_DISCOVERY_TIMEOUT_S) -> dict[int, int]:
    """Map partition id -> node id for all ``num_ues`` nodes (waits out Flower's start-up race,
    where only some nodes are registered)."""
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < num_ues:
        if time.monotonic() > deadline:
            raise FedsimError(f"only {len(list(grid.get_node_ids()))} of {num_ues} UEs came up in {timeout:.0f} s")
        time.sleep(0.01)
    node_ids = sorted(grid.get_node_ids())
    replies = send(grid, [Message(RecordDict(), n, MessageType.QUERY) for n in node_ids])
    mapping: dict[int, int] = {}
    for rep in replies:
        if rep.has_error():
            raise FedsimError(f"UE on node {rep.metadata.src_node_id} failed to start: {rep.error.reason}")
        mapping[int(rep.content[METRICS][PARTITION_ID])] = rep.metadata.src_node_id
    if sorted(mapping) != list(range(num_ues)):
        raise FedsimError(f"expected partitions 0..{num_ues - 1}, got {sorted(mapping)}")
    return mapping


def send(grid: Grid, msgs: list[Message], retried: list[int] | None = None) -> list[Message]:
    """``send_and_receive`` that re-sends a message whose reply is an infrastructure error (for
    example a Ray actor that died mid-round), up to MAX_RETRIES times. A UE's state only
    changes when its ClientApp returns, so a re-sent message computes the same numbers.
    Re-sent destinations are appended to ``retried`` (node ids)."""
    by_dst = {m.metadata.dst_node_id: m for m in msgs}
    replies = {r.metadata.src_node_id: r for r in grid.send_and_receive(msgs)}
    for _ in range(MAX_RETRIES):
        again = [n for n, r in replies.items() if r.has_error() and r.error.code not in UE_ERROR_CODES]
        if not again:
            break
        fresh = [Message(by_dst[n].content, n, by_dst[n].metadata.message_type) for n in again]
        if retried is not None:
            retried.extend(again)
        for r in grid.send_and_receive(fresh):
            replies[r.metadata.src_node_id] = r
    return list(replies.values())


def snapshot_ue_states(grid: Grid, node_of_ue: dict[int, int], bag: TensorBag) -> list[list[Any]] | None:
    """Every UE's private records as [[ue, record, key, tensor name], ...] (a ``train.snapshot``
    message; works on both engines). None if a UE did not answer."""
    msgs = [Message(RecordDict(), node_of_ue[u], "train.snapshot") for u in sorted(node_of_ue)]
    rows: list[list[Any]] = []
    for rep in sorted(send(grid, msgs), key=lambda m: m.metadata.src_node_id):
        if rep.has_error():
            return None
        ue = int(rep.content[METRICS][PARTITION_ID])
        for name, record in rep.content.items():
            if name == METRICS:
                continue
            if not len(record):
                rows.append([ue, name, "", None])  # an empty record (no blocks in flight) still exists
            for key, arr in record.items():
                rows.append([ue, name, key, bag.put(torch.from_numpy(array_to_numpy(arr).copy()))])
    return rows


def restore_ue_states(grid: Grid, node_of_ue: dict[int, int], rows: list[list[Any]], bag: TensorBag) -> None:
    """Send each UE its checkpointed records (``train.restore``) before the first resumed round."""
    per_ue: dict[int, dict[str, dict[str, Any]]] = {u: {} for u in node_of_ue}
    for ue, name, key, tname in rows:
        arrays = per_ue[int(ue)].setdefault(name, {})
        if tname is not None:
            arrays[key] = Array.from_numpy_ndarray(bag.get(tname).numpy())
    msgs = [Message(RecordDict({name: ArrayRecord(array_dict=arrays) for name, arrays in per_ue[u].items()}),
                    node_of_ue[u], "train.restore") for u in sorted(node_of_ue)]
    for rep in send(grid, msgs):
        if rep.has_error():
            raise FedsimError(f"resume: a UE could not restore its state: {rep.error.reason}")
