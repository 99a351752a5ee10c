"""Injected UE faults, decided identically on the server and in every UE.

A fault plan is a pure function of (config, round, UE): unavailability draws come from
``channels.rng`` stream ``"faults"`` keyed by (seed, round), so both engines, a resumed run and
the server's bookkeeping all see the same faults. The UE acts them out (``apply_in_ue``: it
raises, or transmits NaN, or does not transmit); the server records them per round
(``injected``) and screens non-finite contributions with the configured policy
(``screen_replies``).

Kinds, in order of precedence for one (round, UE):
``unavailable`` (the UE raises before doing anything), ``raise`` (raises mid-training, after
computing, before saving state), ``straggler`` (compute time over the deadline: its
transmission misses the superposition), ``nan`` (transmits a NaN vector).

``faults.kill_at`` is not a UE fault but a testing aid for kill-and-resume: :func:`kill_if_due`
(called by the last hook, after the round's row and checkpoint are written) sends SIGKILL to the
run's own process, so a test kills a run at an exact round however loaded the machine is.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import torch
from flwr.app import Message, MetricRecord

from channels.rng import numpy_generator
from fedsim.errors import ConfigError
from strategies.common import ARRAYS, METRICS, TRANSMITTED, from_record, to_record

KINDS = ("unavailable", "raise", "straggler", "nan")


class InjectedFault(RuntimeError):
    """Raised inside a UE by fault injection (becomes an error reply, as a real crash would)."""


def slowdowns(cfg: Any, num_ues: int) -> torch.Tensor:
    """Per-UE compute-time factor ``[N]`` (1 unless ``faults.slowdown`` names the UE)."""
    f = torch.ones(num_ues, dtype=torch.float64)
    for ue, factor in cfg.faults.slowdown:
        if ue < num_ues:
            f[ue] = factor
    return f


@lru_cache(maxsize=4096)
def _unavailable_draws(seed: int, round: int, num_ues: int, p: float) -> frozenset[int]:
    u = numpy_generator(seed, "faults", round).random(num_ues)
    return frozenset(int(i) for i in (u < p).nonzero()[0])


def plan(cfg: Any, round: int, num_ues: int, tau_cp: torch.Tensor | None = None,
         steps: int = 1) -> dict[int, str]:
    """UE id -> fault kind for ``round`` (UEs without a fault are absent). ``tau_cp`` ``[N]``
    (per-UE compute time of one step, seconds) and ``steps`` are needed for stragglers."""
    f = cfg.faults
    out: dict[int, str] = {}
    if not f.active:
        return out
    if f.deadline is not None and f.slowdown and tau_cp is not None:
        times = steps * tau_cp * slowdowns(cfg, num_ues)
        for ue in (times > f.deadline).nonzero().flatten().tolist():
            out[int(ue)] = "straggler"
    for r, ue in f.nan_at:
        if r == round and ue < num_ues:
            out[ue] = "nan"
    for r, ue in f.raise_at:
        if r == round and ue < num_ues:
            out[ue] = "raise"
    unavailable = set(_unavailable_draws(int(cfg.seed), round, num_ues, f.unavailable)) if f.unavailable else set()
    unavailable |= {ue for r, ue in f.trace if r == round and ue < num_ues}
    for ue in unavailable:
        out[ue] = "unavailable"
    return dict(sorted(out.items()))


def injected(fault_plan: dict[int, str]) -> dict[str, list[int]]:
    """Kind -> sorted UE ids, for the metrics row (empty kinds omitted)."""
    out: dict[str, list[int]] = {}
    for ue, kind in fault_plan.items():
        out.setdefault(kind, []).append(ue)
    return {k: out[k] for k in KINDS if k in out}


def check_faults(cfg: Any, num_ues: int) -> None:
    """Refuse fault entries naming a UE that does not exist (ConfigError)."""
    f = cfg.faults
    for key in ("trace", "raise_at", "nan_at"):
        for r, ue in getattr(f, key):
            if ue >= num_ues:
                raise ConfigError(f"faults.{key}: UE {ue} in [{r}, {ue}] does not exist (UEs are 0..{num_ues - 1})")
    for ue, _ in f.slowdown:
        if ue >= num_ues:
            raise ConfigError(f"faults.slowdown: UE {ue} does not exist (UEs are 0..{num_ues - 1})")


# ----------------------------------------------------------------------------- server side


def screen_replies(replies: Iterable[Message], policy: str) -> list[Message]:
    """Apply the non-finite policy to the replies before the strategy aggregates them.

    ``exclude``: unchanged (the strategies leave non-finite transmissions out and record a failure).
    ``zero``: non-finite entries of a transmission become 0 (the UE still counts).
    ``skip-round``: if any transmission is non-finite, nobody's transmission is aggregated: the
    non-finite ones are still recorded as failures, the finite ones are withdrawn (their replies
    keep any reported vectors, so UE-held models are still delivered and observed).
    """
    replies = list(replies)
    if policy == "exclude":
        return replies

    def vectors(m: Message) -> list[torch.Tensor]:
        return [] if m.has_error() or ARRAYS not in m.content else from_record(m.content[ARRAYS])

    def transmits(m: Message) -> bool:
        return not m.has_error() and float(dict(m.content[METRICS]).get(TRANSMITTED, 0.0)) == 1.0

    bad = [m for m in replies if transmits(m) and vectors(m) and not bool(torch.isfinite(vectors(m)[0]).all())]
    if not bad:
        return replies
    if policy == "zero":
        for m in bad:
            vs = vectors(m)
            vs[0] = torch.nan_to_num(vs[0], nan=0.0, posinf=0.0, neginf=0.0)
            m.content[ARRAYS] = to_record(*vs)
        return replies
    bad_ids = {id(m) for m in bad}
    for m in replies:  # skip-round
        if transmits(m) and id(m) not in bad_ids:
            m.content[ARRAYS] = to_record(*vectors(m)[1:])  # keep only the reported vectors
            m.content[METRICS] = MetricRecord({**dict(m.content[METRICS]), TRANSMITTED: 0.0})
    return replies


# ----------------------------------------------------------------------------- UE side


def injected_error(kind: str, ue: int, round: int, deadline: float | None = None) -> InjectedFault:
    """The error a UE raises for an injected ``unavailable``, ``raise`` or (server-based) ``straggler``."""
    if kind == "unavailable":
        return InjectedFault(f"injected fault: UE {ue} unavailable in round {round}")
    if kind == "straggler":
        return InjectedFault(f"straggler: UE {ue} missed the deadline of {deadline} s in round {round}")
    return InjectedFault(f"injected fault: UE {ue} raised mid-training in round {round}")


def apply_before(kind: str | None, ue: int, round: int) -> None:
    """The UE's reaction before it computes anything."""
    if kind == "unavailable":
        raise injected_error(kind, ue, round)


def apply_after(kind: str | None, ue: int, round: int, v: torch.Tensor | None) -> torch.Tensor | None:
    """The UE's reaction after computing its transmission ``v`` (before saving its state)."""
    if kind == "raise":
        raise injected_error(kind, ue, round)
    if kind == "nan" and v is not None:
        return torch.full_like(v, float("nan"))
    return v


# ----------------------------------------------------------------------------- testing aid


def kill_if_due(cfg: Any, round: int, resumed: bool) -> None:
    """``faults.kill_at``: SIGKILL this process when ``round`` is the configured round of a run
    that did not start from a checkpoint (a resumed run continues past it). Nothing is flushed or
    cleaned up: the process ends as under ``kill -9``, Ray's processes and temp dir included."""
    if cfg.faults.kill_at is not None and round == cfg.faults.kill_at and not resumed:
        os.kill(os.getpid(), signal.SIGKILL)
