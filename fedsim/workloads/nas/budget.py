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
limit. In the cell space the cost model is additive over ops and an edge's ops do not depend on
which node feeds it, so a genotype costs the all-``ops[0]`` genotype plus one per-op increment per edge
(measured once per profile from the uniform genotypes); the derivation then searches every per-node op
pair combination exactly (|ops|^(2·nodes), each node's inputs the best for its ops), and random search
redraws until the genotype fits.

Resources come from :func:`fedsim.workloads.nas.resources.measure` of real children, never from a
formula, so the budget means what ``architecture.json`` reports. The constraint acts when the
architecture is derived (and on random-search candidates); the supernet search itself is unchanged.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from fedsim.workloads.latency import LatencyBudget, op_summary
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
    """The most conv edges a genotype may keep within ``max_params``/``max_flops``. ValueError when even
    the smallest genotype exceeds it (naming its params and FLOPs), or, with a ``latency`` budget, when no
    genotype within that count meets every UE's latency limit (the latency is then enforced exactly by
    :func:`cell_derive_within` / :func:`cell_random_within`)."""
    has_free = any(o not in PARAM_OPS for o in space.real_ops)
    has_conv = any(o in PARAM_OPS for o in space.real_ops)
    counts = range(0 if has_free else 2 * space.nodes, (2 * space.nodes if has_conv else 0) + 1)
    best = None
    for k in counts:
        res = resources(cell_genotype_with(space, k))
        if not within(res, max_params, max_flops):
            if best is None:
                raise ValueError(f"no genotype meets {budget_text(max_params, max_flops)}: the smallest has "
                                 f"{res.params} parameters and {res.flops} FLOPs per example")
            break
        best = k
    if latency is not None:
        cell_derive_within(space, torch.zeros(space.num_edges, len(space.ops)), int(best), latency)
    return int(best)


@functools.lru_cache(maxsize=32)
def cell_latency_costs(space: Any, latency: LatencyBudget) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct profile p (rows): the latency ``base[p]`` of the genotype using ``real_ops[0]`` on every
    edge, ``delta[p, r]`` the extra ms of op r on one edge (the cost model is additive over ops and an
    edge's ops do not depend on its input, so a genotype costs base + Σ_edges delta[op]) and ``limit[p]``."""
    edges = 2 * space.nodes
    pairs = latency.pairs()
    summaries = [op_summary(space.child(cell_genotype_with(space, edges if o in PARAM_OPS else 0, o, o)),
                            space.example_input()) for o in space.real_ops]  # every edge op o
    lat = np.array([[latency.cost_of(sm, p) for sm in summaries] for p, _ in pairs])
    return lat[:, 0], (lat - lat[:, :1]) / edges, np.array([lim for _, lim in pairs])


def _cell_cost_ok(space: Any, latency: LatencyBudget, ops: list[list[str]]) -> bool:
    base, delta, limit = cell_latency_costs(space, latency)
    idx = [space.real_ops.index(o) for node in ops for o in node]
    return bool(np.all(base + delta[:, idx].sum(1) <= limit + 1e-12))


def cell_random_within(space: Any, generator: torch.Generator, max_conv_edges: int,
                       latency: LatencyBudget | None = None, tries: int = 10_000) -> Architecture:
    """:func:`_cell_random_within`; with ``latency``, redrawn until the genotype meets every UE's limit."""
    for _ in range(tries):
        arch = _cell_random_within(space, generator, max_conv_edges)
        if latency is None or _cell_cost_ok(space, latency, [[op for op, _ in arch[f"node{j}"]]
                                                             for j in range(space.nodes)]):
            return arch
    raise ValueError(f"no genotype within {latency.text()} in {tries} uniform draws; relax max_latency_ms")


def _cell_random_within(space: Any, generator: torch.Generator, max_conv_edges: int) -> Architecture:
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


def cell_derive_within(space: Any, alpha: torch.Tensor, max_conv_edges: int,
                       latency: LatencyBudget | None = None) -> Architecture:
    """The genotype of largest Σ log softmax(α) over its kept edges' ops with at most
    ``max_conv_edges`` conv edges (exact; ties: the first found, inputs and ops in index order); with
    ``latency`` also within every UE's limit (exact, :func:`_cell_derive_latency`)."""
    if latency is not None:
        return _cell_derive_latency(space, alpha, max_conv_edges, latency)
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


def _cell_derive_latency(space: Any, alpha: torch.Tensor, max_conv_edges: int, latency: LatencyBudget,
                         limit: int = 4_000_000) -> Architecture:
    """Exact search over per-node op pairs (|ops|^(2·nodes) combinations; each node's inputs are then the
    best pair for its ops, as neither cost depends on them) for the best score within the budget."""
    logp = space.probs(alpha).log()
    real = [space.ops.index(o) for o in space.real_ops]
    r = len(real)
    if r ** (2 * space.nodes) > limit:
        raise ValueError(f"a latency budget on {space.nodes} nodes x {r} ops is too large to search exactly")
    base, delta, lim = cell_latency_costs(space, latency)
    conv = torch.tensor([o in PARAM_OPS for o in space.real_ops], dtype=torch.long)
    node_best = []  # per node: [r, r] best score and its inputs
    for j in range(space.nodes):
        best = torch.full((r, r), -math.inf, dtype=torch.float64)
        arg = [[None] * r for _ in range(r)]
        for i1, i2 in itertools.combinations(range(2 + j), 2):
            sc = logp[space.edge(j, i1), real][:, None].double() + logp[space.edge(j, i2), real][None, :].double()
            better = sc > best
            for a, b in better.nonzero().tolist():
                arg[a][b] = (i1, i2)
            best = torch.where(better, sc, best)
        node_best.append((best.reshape(-1), arg))
    score = torch.zeros(1, dtype=torch.float64)
    cost = torch.zeros(len(base), 1, dtype=torch.float64)
    nconv = torch.zeros(1, dtype=torch.long)
    pair_cost = torch.as_tensor(delta)[:, :, None] + torch.as_tensor(delta)[:, None, :]  # [P, r, r]
    pair_conv = (conv[:, None] + conv[None, :]).reshape(-1)
    for best, _ in node_best:
        score = (score[:, None] + best[None, :]).reshape(-1)
        cost = (cost[:, :, None] + pair_cost.reshape(len(base), 1, -1)).reshape(len(base), -1)
        nconv = (nconv[:, None] + pair_conv[None, :]).reshape(-1)
    ok = (torch.as_tensor(base)[:, None] + cost <= torch.as_tensor(lim)[:, None] + 1e-12).all(0)
    ok &= (nconv <= max_conv_edges) & torch.isfinite(score)
    if not bool(ok.any()):
        raise ValueError(f"no genotype meets {latency.text()} (with at most {max_conv_edges} conv edges)")
    flat = int(torch.where(ok, score, torch.tensor(-math.inf, dtype=torch.float64)).argmax())
    arch = {}
    for j in reversed(range(space.nodes)):
        flat, pick = divmod(flat, r * r)
        a, b = divmod(pick, r)
        i1, i2 = node_best[j][1][a][b]
        arch[f"node{j}"] = [[space.real_ops[a], i1], [space.real_ops[b], i2]]
    return {f"node{j}": arch[f"node{j}"] for j in range(space.nodes)}


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
