"""Caches of tensors kept within a byte budget, least recently used dropped first: the workloads
``build_workload`` keeps for the next run, and what a workload keeps of its own data.

A cache is a plain dict in insertion order, oldest first (``Workload.to_device`` rebuilds dicts as
plain dicts, so no ``OrderedDict`` method may be relied on)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch


def tensor_bytes(obj: Any, depth: int = 2) -> int:
    """Bytes of the torch tensors and numpy arrays ``obj`` holds in its attributes, lists, tuples
    and dicts (``depth`` levels down)."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if depth < 0:
        return 0
    if isinstance(obj, dict):
        items: Any = obj.values()
    elif isinstance(obj, list | tuple):
        items = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).values()
    else:
        return 0
    return sum(tensor_bytes(v, depth - 1) for v in items)


def recall(cache: dict, key: Hashable) -> Any:
    """``cache[key]``, now the most recently used, or None."""
    value = cache.pop(key, None)
    if value is not None:
        cache[key] = value
    return value


def keep_recent(cache: dict, key: Hashable, value: Any, budget: int,
                size: Callable[[Any], int] = tensor_bytes) -> None:
    """Store ``value`` as the most recently used entry and drop the oldest until the entries' sizes
    sum to at most ``budget``. A value larger than the budget by itself is not stored (and drops
    nothing)."""
    if size(value) > budget:
        return
    cache.pop(key, None)
    cache[key] = value
    while sum(size(v) for v in cache.values()) > budget:
        del cache[next(iter(cache))]
