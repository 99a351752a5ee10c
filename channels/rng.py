"""Explicit random generators keyed by (experiment seed, stream, round, UE).

Every random draw in fedsim comes from a generator built here; nothing touches global RNG
state. Keys are hashed through ``numpy.random.SeedSequence`` so that neighbouring keys give
independent streams, and so that changing one stream (say, the channel) never shifts another
(say, the data split).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

#: Stream names used across fedsim. Any string works; these are the conventional ones.
STREAMS = (
    "data",
    "init",
    "sampling",
    "fading",
    "interference",
    "minibatch",
    "augment",
    "faults",
)

_NO_UE = 2**31 - 1  # spawn-key slot for draws that belong to no single UE


def _stream_id(stream: str) -> int:
    return zlib.crc32(stream.encode("utf-8"))


def seed_sequence(seed: int, stream: str, round: int = 0, ue: int | None = None) -> np.random.SeedSequence:
    """The SeedSequence for one (seed, stream, round, ue) key. ``ue=None`` means "not per UE"."""
    if seed < 0 or round < 0:
        raise ValueError(f"seed and round must be non-negative, got seed={seed}, round={round}")
    ue_key = _NO_UE if ue is None else int(ue)
    return np.random.SeedSequence(
        entropy=int(seed), spawn_key=(_stream_id(stream), int(round), ue_key)
    )


def seed_int(seed: int, stream: str, round: int = 0, ue: int | None = None) -> int:
    """A 63-bit integer seed for libraries that want an int (numpy, flwr-datasets)."""
    state = seed_sequence(seed, stream, round, ue).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def torch_generator(
    seed: int, stream: str, round: int = 0, ue: int | None = None, device: str = "cpu"
) -> torch.Generator:
    """A fresh ``torch.Generator`` for one key."""
    g = torch.Generator(device=device)
    g.manual_seed(seed_int(seed, stream, round, ue))
    return g


def numpy_generator(seed: int, stream: str, round: int = 0, ue: int | None = None) -> np.random.Generator:
    """A fresh ``numpy.random.Generator`` for one key."""
    return np.random.default_rng(seed_sequence(seed, stream, round, ue))
