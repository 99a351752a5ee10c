"""Faster item access on Flower's records, with the same behaviour.

Every ``__setitem__`` of Flower 1.42's ``TypedDict`` (the base of ``RecordDict``,
``ArrayRecord``, ``MetricRecord`` and ``ConfigRecord``) evaluates ``cast(Callable[[K], None],
...)`` twice: two ``typing`` objects built per item, and ``__getitem__``, ``__iter__``,
``__len__`` and ``__contains__`` build a ``dict[K, V]`` alias each time. A fedsim UE-round sets
and reads about 20 items, so this costs about 8 % of the inline engine's time per UE-round
(``benchmarks/bench_inline_overhead.py``). :func:`install` replaces those five methods by ones
that run the same key and value checks and touch the same ``_data`` dict, without the runtime
casts. It is applied on import by the modules holding fedsim's ServerApp and ClientApp, so in
every process that runs them (Ray actors too), and only on the Flower minor version it was
written against (``pyproject.toml`` pins it).
"""

from __future__ import annotations

from typing import Any

import flwr
from flwr.app.message.typeddict import TypedDict

SUPPORTED = "1.42."


def _setitem(self: TypedDict, key: Any, value: Any) -> None:
    d = self.__dict__
    d["_check_key_fn"](key)
    d["_check_value_fn"](value)
    d["_data"][key] = value


def _getitem(self: TypedDict, item: Any) -> Any:
    return self.__dict__["_data"][item]


def _iter(self: TypedDict):
    return iter(self.__dict__["_data"])


def _len(self: TypedDict) -> int:
    return len(self.__dict__["_data"])


def _contains(self: TypedDict, key: object) -> bool:
    return key in self.__dict__["_data"]


def install() -> bool:
    """Patch ``TypedDict`` once; returns whether the fast methods are in place."""
    if getattr(TypedDict, "_fedsim_fast", False):
        return True
    if not flwr.__version__.startswith(SUPPORTED):
        return False
    TypedDict.__setitem__ = _setitem  # type: ignore[method-assign]
    TypedDict.__getitem__ = _getitem  # type: ignore[method-assign]
    TypedDict.__iter__ = _iter  # type: ignore[method-assign]
    TypedDict.__len__ = _len  # type: ignore[method-assign]
    TypedDict.__contains__ = _contains  # type: ignore[method-assign]
    TypedDict._fedsim_fast = True  # type: ignore[attr-defined]
    return True
