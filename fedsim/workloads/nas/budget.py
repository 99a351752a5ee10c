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
from pydantic import BaseModel, Field

from fedsim.workloads.nas.cells import PARAM_OPS
from fedsim.workloads.nas.resources import Resources

Architecture = dict[str, Any]


class BudgetFields(BaseModel):
    """``max_params`` / ``max_flops`` of a search config (mixed into GdasConfig and DashConfig)."""

    max_params: int | None = Field(None, ge=1, description="budget: the derived child has at most this many weights")
    max_flops: int | None = Field(None, ge=1, description="budget: the derived child's FLOPs per example at most")

    @property
    def budget(self) -> tuple[int | None, int | None] | None:
        """``(max_params, max_flops)`` when either is set."""
        return None if self.max_params is None and self.max_flops is None else (self.max_params, self.max_flops)


def check_fits(res: Resources, budget: tuple[int | None, int | None], what: str) -> None:
    if not within(res, *budget):
        raise ValueError(f"{what} has {res.params} parameters and {res.flops} FLOPs per example, over "
                         f"{budget_text(*budget)}")


def within(res: Resources, max_params: int | None, max_flops: int | None) -> bool:
    return (max_params is None or res.params <= max_params) and (max_flops is None or res.flops <= max_flops)


def budget_text(max_params: int | None, max_flops: int | None) -> str:
    parts = [f"max_params = {max_params}" if max_params is not None else "",
             f"max_flops = {max_flops}" if max_flops is not None else ""]
    return " and ".join(p for p in parts if p)


# -- cell space (nas-gdas) ----------------------------------------------------------------------
def cell_genotype_with(space: Any, conv_edges: int) -> Architecture:
    """A genotype keeping exactly ``conv_edges`` conv edges (the first ones, node by node)."""
    conv = next((o for o in space.real_ops if o in PARAM_OPS), None)
    free = next((o for o in space.real_ops if o not in PARAM_OPS), None)
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
                          resources: Callable[[Architecture], Resources]) -> int:
    """The most conv edges a genotype may keep within the budget. ValueError when even the
    smallest genotype exceeds it (naming the smallest genotype's params and FLOPs)."""
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
    raise ValueError("no architecture fits the budget")
