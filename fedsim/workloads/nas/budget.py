"""Resource constraints (``max_params``, ``max_flops``) for the gradient searches ``nas-gdas`` and
``nas-dash``: the derived architecture is the most probable one within the budget.

The score of an architecture is Σ log softmax(α) over its decisions. Without a budget its maximum is
the usual derivation (argmax per layer; in the cell space the DARTS rule: per node the two edges
with the most probable non-``none`` op). With a budget it is found exactly:

- cell space: the params and FLOPs of a genotype depend only on how many conv edges it keeps
  (every conv weight is ``[C, C, 3, 3]``, every cell has the same spatial size, and torch's FLOP
  counter does not count pooling), so the budget is a maximum number of conv edges, and a
  knapsack over nodes of each node's best choice with 0, 1 or 2 conv edges gives the optimum;
- DASH: the dilation changes neither params nor FLOPs, so each layer keeps its best dilation per
  kernel size and the |K|^L kernel combinations are enumerated.

``max_latency_ms`` (one number or one per UE) bounds the latency of the child on every UE's device
profile (``latency_profiles``, UE n -> profile n mod their number), priced by the per-op cost model of
:mod:`fedsim.workloads.latency` from the child's op summary; the found architecture meets every UE's
limit. The cell space's conv-edge knapsack stays exact for it: the cost model is additive over ops, so
a genotype with k conv edges costs at most the dearest genotype made of one conv op and one free op,
and ``max_conv_edges`` is the largest k for which every such genotype fits.

Resources come from :func:`fedsim.workloads.nas.resources.measure` of real children, never from a
formula, so the budget means what ``architecture.json`` reports. The constraint acts when the
architecture is derived (and on random-search candidates); the supernet search itself is unchanged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import BaseModel, Field, model_validator

from fedsim.workloads.latency import LatencyBudget
from fedsim.workloads.nas.cells import PARAM_OPS
from fedsim.workloads.nas.resources import Resources, measure

Architecture = dict[str, Any]


class LatencyFields(BaseModel):
    """``max_latency_ms`` / ``latency_profiles`` of a search config (per UE)."""

    max_latency_ms: float | list[float] | None = Field(
        None, description="budget: the child's latency (ms per forward of one batch, per-op cost model) on every "
        "UE's device profile; one number for all UEs or one per UE")
    latency_profiles: list[str] | None = Field(
        None, description="device profile of UE n = latency_profiles[n % len] (None: the shipped profiles in order)")

    @model_validator(mode="after")
    def _check_latency(self) -> LatencyFields:
        self.latency_budget  # noqa: B018  (validates names and lengths)
        return self

    @property
    def latency_budget(self) -> LatencyBudget | None:
        if self.max_latency_ms is None:
            return None
        return LatencyBudget.per_ue(self.max_latency_ms, self.latency_profiles, self.num_ues)  # type: ignore[attr-defined]


class BudgetFields(LatencyFields):
    """``max_params`` / ``max_flops`` / ``max_latency_ms`` of a search config (mixed into GdasConfig and DashConfig)."""

    max_params: int | None = Field(None, ge=1, description="budget: the derived child has at most this many weights")
    max_flops: int | None = Field(None, ge=1, description="budget: the derived child's FLOPs per example at most")

    @property
    def budget(self) -> tuple | None:
        """``(max_params, max_flops)``, plus the :class:`LatencyBudget` when ``max_latency_ms`` is set;
        None when nothing is set."""
        lat = self.latency_budget
        if lat is not None:
            return (self.max_params, self.max_flops, lat)
        return None if self.max_params is None and self.max_flops is None else (self.max_params, self.max_flops)


def budget_resources(space: Any, arch: Architecture, budget: tuple | None) -> Resources:
    """Params and FLOPs of ``arch``'s child, with its op summary when ``budget`` has a latency part."""
    return measure(space.child(arch), space.example_input(), latency=False, ops=bool(budget and len(budget) > 2))


def check_fits(res: Resources, budget: tuple, what: str) -> None:
    if not within(res, *budget):
        lat = "" if len(budget) < 3 else f" and {max(budget[2].latencies(res.ops)):.3g} ms on its slowest UE"
        raise ValueError(f"{what} has {res.params} parameters and {res.flops} FLOPs per example{lat}, over "
                         f"{budget_text(*budget)}")


def within(res: Resources, max_params: int | None, max_flops: int | None, latency: LatencyBudget | None = None) -> bool:
    """``res`` meets the budget (a latency budget needs ``res.ops``: measure with ``ops=True``)."""
    if latency is not None and res.ops is None:
        raise ValueError("a latency budget needs the op summary: measure(..., ops=True)")
    return ((max_params is None or res.params <= max_params) and (max_flops is None or res.flops <= max_flops)
            and (latency is None or latency.fits(res.ops)))


def budget_text(max_params: int | None, max_flops: int | None, latency: LatencyBudget | None = None) -> str:
    parts = [f"max_params = {max_params}" if max_params is not None else "",
             f"max_flops = {max_flops}" if max_flops is not None else "",
             latency.text() if latency is not None else ""]
    return " and ".join(p for p in parts if p)


def limit_mlp_latency(space: Any, latency: LatencyBudget | None) -> Any:
    """``space`` (a :class:`~fedsim.workloads.nas.tabular.TabularSpace`) with ``feasible_idx`` also
    requiring the MLP's latency to fit every UE's limit (vectorised), and ``latency_report(arch)``."""
    base, widths = space.feasible_idx, torch.tensor(space.widths)

    def feasible_idx(idx: torch.Tensor) -> torch.Tensor:
        return base(idx) & latency.mlp_fits(widths[idx], space.d_in, space.num_classes)

    def latency_report(arch: Architecture) -> dict[str, Any]:
        if latency is None:
            return {}
        res = measure(space.child(arch), space.example_input(), latency=False, ops=True)
        return {"max_latency_ms": list(latency.limits), "latency_profiles": list(latency.profiles),
                "latency_ms_per_ue": [round(t, 5) for t in latency.latencies(res.ops)]}

    if latency is not None:
        space.feasible_idx = feasible_idx
    space.latency_report = latency_report
    return space


def budget_report(budget: tuple, res: Resources) -> dict[str, Any]:
    """The JSON-able budget block of ``architecture.json``: limits, per-UE latencies, whether it is met."""
    out: dict[str, Any] = {"max_params": budget[0], "max_flops": budget[1], "met": within(res, *budget)}
    if len(budget) > 2:
        out.update(max_latency_ms=list(budget[2].limits), latency_profiles=list(budget[2].profiles),
                   latency_ms_per_ue=[round(t, 5) for t in budget[2].latencies(res.ops)])
    return out


# -- cell space (nas-gdas) ----------------------------------------------------------------------
def cell_genotype_with(space: Any, conv_edges: int, conv: str | None = None, free: str | None = None) -> Architecture:
    """A genotype keeping exactly ``conv_edges`` conv edges (the first ones, node by node), every conv
    edge op ``conv`` and every other ``free`` (default: the first of each kind)."""
    conv = conv or next((o for o in space.real_ops if o in PARAM_OPS), None)
    free = free or next((o for o in space.real_ops if o not in PARAM_OPS), None)
    arch, left = {}, conv_edges
    for j in range(space.nodes):
        pairs = []
        for i in (0, 1):
            use_conv = left > 0 or free is None
            pairs.append([conv if use_conv else free, i])
            left -= int(use_conv)
        arch[f"node{j}"] = pairs
    return arch


def cell_conv_edge_budget(space: Any, max_params: int | None, max_flops: int | None,
                          resources: Callable[[Architecture], Resources], latency: LatencyBudget | None = None) -> int:
    """The most conv edges a genotype may keep within the budget (with a latency budget: every
    genotype of one conv op and one free op with that many conv edges fits). ValueError when even the
    smallest genotype exceeds it (naming the smallest genotype's params and FLOPs)."""
    conv_ops = [o for o in space.real_ops if o in PARAM_OPS]
    free_ops = [o for o in space.real_ops if o not in PARAM_OPS]
    counts = range(0 if free_ops else 2 * space.nodes, (2 * space.nodes if conv_ops else 0) + 1)
    variants = list(itertools.product(conv_ops or [None], free_ops or [None])) if latency else [(None, None)]
    best = None
    for k in counts:
        all_res = [resources(cell_genotype_with(space, k, c, f)) for c, f in variants]
        res = max(all_res, key=lambda r: -min(latency.slack(r.ops)) if latency else 0)
        if not all(within(r, max_params, max_flops, latency) for r in all_res):
            if best is None:
                raise ValueError(f"no genotype meets {budget_text(max_params, max_flops)}: the smallest has "
                                 f"{res.params} parameters and {res.flops} FLOPs per example")
            break
        best = k
    return int(best)


def cell_random_within(space: Any, generator: torch.Generator, max_conv_edges: int) -> Architecture:
    """A uniform genotype conditioned on keeping at most ``max_conv_edges`` conv edges, drawn
    exactly (no rejection, so a tight budget cannot stall): the number of conv edges from the
    truncated binomial, which of the ``2·nodes`` edges they are uniformly, then inputs and ops
    uniformly within their class."""
    edges = 2 * space.nodes
    conv = [o for o in space.real_ops if o in PARAM_OPS]
    free = [o for o in space.real_ops if o not in PARAM_OPS]
    q = len(conv) / len(space.real_ops)
    weights = torch.tensor([math.comb(edges, c) * q**c * (1 - q) ** (edges - c)
                            for c in range(min(edges, max_conv_edges) + 1)], dtype=torch.float64)
    if float(weights.sum()) == 0.0:
        raise ValueError(f"no genotype has at most {max_conv_edges} conv edges")
    count = int(torch.multinomial(weights, 1, generator=generator))
    conv_slots = set(torch.randperm(edges, generator=generator)[:count].tolist())
    arch, slot = {}, 0
    for j in range(space.nodes):
        pairs = []
        for i in sorted(torch.randperm(2 + j, generator=generator)[:2].tolist()):
            pool = conv if slot in conv_slots else free
            pairs.append([pool[int(torch.randint(len(pool), (1,), generator=generator))], i])
            slot += 1
        arch[f"node{j}"] = pairs
    return arch


def cell_derive_within(space: Any, alpha: torch.Tensor, max_conv_edges: int) -> Architecture:
    """The genotype of largest Σ log softmax(α) over its kept edges' ops with at most
    ``max_conv_edges`` conv edges (exact; ties: the first found, inputs and ops in index order)."""
    logp = space.probs(alpha).log()
    conv_idx = [i for i, o in enumerate(space.ops) if o in PARAM_OPS]
    free_idx = [i for i, o in enumerate(space.ops) if o not in PARAM_OPS and o != "none"]

    def best(edge: int, idx: list[int]) -> tuple[float, str] | None:
        if not idx:
            return None
        i = max(idx, key=lambda t: (float(logp[edge, t]), -t))
        return float(logp[edge, i]), space.ops[i]

    table: dict[int, tuple[float, list]] = {0: (0.0, [])}
    for j in range(space.nodes):
        options: dict[int, tuple[float, list]] = {}
        for i1, i2 in itertools.combinations(range(2 + j), 2):
            for c1, c2 in itertools.product((0, 1), repeat=2):
                b1 = best(space.edge(j, i1), conv_idx if c1 else free_idx)
                b2 = best(space.edge(j, i2), conv_idx if c2 else free_idx)
                if b1 is None or b2 is None:
                    continue
                score = b1[0] + b2[0]
                if c1 + c2 not in options or score > options[c1 + c2][0]:
                    options[c1 + c2] = (score, [[b1[1], i1], [b2[1], i2]])
        nxt: dict[int, tuple[float, list]] = {}
        for k, (s, chosen) in table.items():
            for c, (s2, pairs) in options.items():
                if k + c <= max_conv_edges and (k + c not in nxt or s + s2 > nxt[k + c][0]):
                    nxt[k + c] = (s + s2, [*chosen, pairs])
        table = nxt
    if not table:
        raise ValueError(f"no genotype has at most {max_conv_edges} conv edges")
    _, chosen = max(table.values(), key=lambda v: v[0])
    return {f"node{j}": pairs for j, pairs in enumerate(chosen)}


# -- layered (k, d) space (nas-dash) --------------------------------------------------------------
def layered_derive_within(logp: torch.Tensor, pairs: Sequence[tuple[int, int]], names: Sequence[str],
                          fits: Callable[[Architecture], bool]) -> Architecture:
    """The architecture {name: {"kernel", "dilation"}} of largest Σ_l logp[l, choice] for which
    ``fits`` holds; ``logp [L, |pairs|]``. Per layer and kernel only the best dilation can win
    (the dilation does not change the cost), so |K|^L combinations are checked, best first."""
    kernels = sorted({k for k, _ in pairs})
    per_layer = []
    for row in logp:
        best = {}
        for j, (k, d) in enumerate(pairs):
            if k not in best or float(row[j]) > best[k][0]:
                best[k] = (float(row[j]), d)
        per_layer.append(best)
    combos = sorted(itertools.product(kernels, repeat=len(names)),
                    key=lambda ks: -sum(per_layer[layer][k][0] for layer, k in enumerate(ks)))
    for ks in combos:
        arch = {n: {"kernel": k, "dilation": per_layer[layer][k][1]}
                for layer, (n, k) in enumerate(zip(names, ks, strict=True))}
        if fits(arch):
            return arch
    raise ValueError("no architecture fits the budget (every kernel combination was tried)")
