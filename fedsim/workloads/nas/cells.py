"""The DARTS/GDAS cell search space of ``nas-gdas`` (GDAS: Dong & Yang, CVPR 2019, scaled down for CPU):
ops, the cell DAG, the flat parameter layout, genotype derivation and random architectures. Pure torch,
no data.

Network: stem conv3x3 (1 → C, stride 1 on 8×8 digits, 2 on 28×28 MNIST) + norm, then ``cells``
cells, then ReLU, global average pool and a linear classifier. Cell c takes the outputs of cells
c−2 and c−1 (s0, s1; both the stem for the first cell) and computes ``nodes`` intermediate nodes;
node j sums one op per incoming edge from each of {s0, s1, node 0, …, node j−1}. The cell output
is the MEAN of its nodes (not DARTS's concat + 1×1 preprocessing: it keeps C channels with no
extra parameters and the scale of a node independent of how many nodes there are). No reduction
cells: the inputs are already tiny. Edge e of node j from input i has index
``e = Σ_{j'<j} (2 + j') + i`` and ONE α row per edge is shared by all cells (as DARTS's normal cells).

Ops (C → C, stride 1, spatial size kept): ``conv3x3`` ReLU-conv-norm, ``dil_conv3x3`` ReLU-conv
(dilation 2)-norm (a full conv, not DARTS's separable one: at C = 8 it is the same size class),
``max_pool3x3``, ``avg_pool3x3``, ``skip`` (identity), ``none`` (zero). "norm" is a per-example
layer norm without affine parameters (``group_norm`` with one group): it needs no running
statistics, so nothing but ``w`` has to be averaged across UEs and evaluation equals training.

Genotype (the JSON-able architecture): ``{"node0": [[op, input], [op, input]], "node1": …}``:
for every node its two kept incoming edges, each as the chosen op (never ``none``) and the input
index (0 = s0, 1 = s1, 2 + j = node j). The discrete child network has only those edges and only
their ops' weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.workloads.nas.resources import Resources, measure
from fedsim.workloads.nas.taxonomy import Architecture, Decision, SearchSpace

NUM_CLASSES = 10
OP_NAMES = ("conv3x3", "dil_conv3x3", "max_pool3x3", "avg_pool3x3", "skip", "none")
PARAM_OPS = ("conv3x3", "dil_conv3x3")  # the ops with a [C, C, 3, 3] weight


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.group_norm(x, 1)


#: op name -> f(x, weight or None). Looked up at call time (tests count the calls).
OPS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "conv3x3": lambda x, k: _norm(F.conv2d(F.relu(x), k, padding=1)),
    "dil_conv3x3": lambda x, k: _norm(F.conv2d(F.relu(x), k, padding=2, dilation=2)),
    # channels-last: torch's CPU max-pool with stride 1 is ~4x faster there (same values)
    "max_pool3x3": lambda x, k: F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, 1, 1).contiguous(),
    "avg_pool3x3": lambda x, k: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
    "skip": lambda x, k: x,
    "none": lambda x, k: torch.zeros_like(x),
}

# A path through the network: per edge, the op that runs (``"none"`` = nothing runs) and an optional
# scalar it is multiplied by (the straight-through hard[idx] that carries α's gradient).
Path = list[tuple[str, torch.Tensor | None]]


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the weights in a flat vector (views, init)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def views(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> view of ``w [dim]`` shaped like that weight (no copy)."""
        return {k: c.view(s) for k, c, s in zip(self.names, w.split(self.sizes), self.shapes, strict=True)}

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """PyTorch's default init: U(±1/sqrt(fan_in)) per weight; a bias uses its layer's fan_in."""
        out, fan_in = [], 1
        for k, shape in zip(self.names, self.shapes, strict=True):
            if not k.endswith(".b"):
                fan_in = math.prod(shape[1:])
            bound = 1.0 / math.sqrt(fan_in)
            out.append((2 * torch.rand(math.prod(shape), generator=generator) - 1) * bound)
        return torch.cat(out) if out else torch.zeros(0)


class CellSpace(SearchSpace):
    """The cell space: one categorical decision (op) per edge, α ``[num_edges, |ops|]``."""

    def __init__(self, ops: Sequence[str], *, channels: int, cells: int, nodes: int, side: int,
                 stem_stride: int, head_pool: int = 2) -> None:
        unknown = [o for o in ops if o not in OP_NAMES]
        if unknown or len(set(ops)) != len(ops) or not any(o != "none" for o in ops):
            raise ValueError(f"ops must be distinct names from {OP_NAMES} with at least one that is not 'none', "
                             f"got {tuple(ops)}")
        self.ops = tuple(ops)
        self.real_ops = tuple(o for o in self.ops if o != "none")  # what a genotype may choose
        self.channels, self.cells, self.nodes = channels, cells, nodes
        self.side, self.stem_stride, self.head_pool = side, stem_stride, head_pool
        self.offsets = [sum(2 + k for k in range(j)) for j in range(nodes)]  # first edge of node j
        self.num_edges = sum(2 + j for j in range(nodes))
        self.decisions = tuple(Decision(f"edge{e}", self.ops) for e in range(self.num_edges))

    # -- layouts ----------------------------------------------------------------------------
    def edge(self, node: int, inp: int) -> int:
        return self.offsets[node] + inp

    def layout(self, arch: Architecture | None = None) -> Layout:
        """Weights of the supernet (``arch`` None: every param op on every edge of every cell)
        or of the discrete child of ``arch`` (only its edges' param ops). Shared names, so a
        child's weights are a sub-dict of the supernet's."""
        c = self.channels
        used = self.edge_ops(arch) if arch is not None else None
        names: list[str] = ["stem"]
        shapes: list[tuple[int, ...]] = [(c, 1, 3, 3)]
        for cell in range(self.cells):
            for e in range(self.num_edges):
                for op in PARAM_OPS:
                    if (op in self.ops if used is None else used.get(e) == op):
                        names.append(f"cell{cell}.edge{e}.{op}")
                        shapes.append((c, c, 3, 3))
        names += ["head.w", "head.b"]
        shapes += [(NUM_CLASSES, c * self.head_pool**2), (NUM_CLASSES,)]
        return Layout(tuple(names), tuple(shapes))

    # -- forward ----------------------------------------------------------------------------
    def forward(self, views: dict[str, torch.Tensor], x: torch.Tensor, path: Path) -> torch.Tensor:
        """``[B, 10]`` logits of the network on ``x [B, 1, H, W]`` along ``path`` (one entry per
        edge, shared by all cells): only the op named for each edge runs."""
        s = _norm(F.conv2d(x, views["stem"], stride=self.stem_stride, padding=1))
        s0 = s1 = s
        for cell in range(self.cells):
            s0, s1 = s1, self._cell(views, cell, s0, s1, path)
        h = F.adaptive_avg_pool2d(F.relu(s1), self.head_pool).flatten(1)
        return F.linear(h, views["head.w"], views["head.b"])

    def _cell(self, views, cell: int, s0: torch.Tensor, s1: torch.Tensor, path: Path) -> torch.Tensor:
        states = [s0, s1]
        for j in range(self.nodes):
            acc = None
            for i in range(2 + j):
                e = self.edge(j, i)
                op, scale = path[e]
                if op == "none":
                    continue  # contributes zero (and no gradient: the hard weight multiplies zeros)
                y = OPS[op](states[i], views.get(f"cell{cell}.edge{e}.{op}"))
                if scale is not None:
                    y = y * scale
                acc = y if acc is None else acc + y
            states.append(torch.zeros_like(s0) if acc is None else acc)
        return torch.stack(states[2:]).mean(0)

    def hard_path(self, weights: torch.Tensor) -> Path:
        """The single path of one-hot (straight-through) weights ``[E, |ops|]``: per edge the op at
        the hot index, scaled by that entry so that α receives its gradient."""
        idx = weights.detach().argmax(1)
        scale = weights.gather(1, idx[:, None])[:, 0]
        return [(self.ops[i], scale[e]) for e, i in enumerate(idx.tolist())]

    def argmax_path(self, alpha: torch.Tensor) -> Path:
        """Every edge runs its most likely op (α ``[E, |ops|]``), unscaled."""
        return [(self.ops[i], None) for i in alpha.argmax(1).tolist()]

    def arch_path(self, arch: Architecture) -> Path:
        """The genotype as a path: its kept edges run their op, every other edge is ``none``."""
        used = self.edge_ops(arch)
        return [(used.get(e, "none"), None) for e in range(self.num_edges)]

    # -- genotypes --------------------------------------------------------------------------
    def edge_ops(self, arch: Architecture) -> dict[int, str]:
        """Edge index -> op of a (validated) genotype."""
        return {self.edge(j, int(i)): op for j in range(self.nodes) for op, i in arch[f"node{j}"]}

    def validate(self, arch: Any) -> Architecture:
        """``arch`` as a clean genotype; ValueError naming the bad key and the allowed values."""
        if not isinstance(arch, dict):
            raise ValueError(f"arch must be a table node0..node{self.nodes - 1}, got {type(arch).__name__}")
        want = [f"node{j}" for j in range(self.nodes)]
        extra = sorted(set(arch) - set(want))
        if extra:
            raise ValueError(f"arch has unknown key(s) {extra}; allowed keys: {want}")
        out: Architecture = {}
        for j, key in enumerate(want):
            if key not in arch:
                raise ValueError(f"arch is missing {key!r} (needs all of {want})")
            edges = arch[key]
            if not isinstance(edges, list | tuple) or len(edges) != 2:
                raise ValueError(f"arch[{key!r}] must be two [op, input] pairs, got {edges!r}")
            pairs = []
            for pair in edges:
                if not isinstance(pair, list | tuple) or len(pair) != 2:
                    raise ValueError(f"arch[{key!r}] entries must be [op, input] pairs, got {pair!r}")
                op, inp = pair
                if op not in self.real_ops:
                    raise ValueError(f"arch[{key!r}] has op {op!r}; allowed ops: {list(self.real_ops)}")
                if isinstance(inp, bool) or not isinstance(inp, int) or not 0 <= inp < 2 + j:
                    raise ValueError(f"arch[{key!r}] has input {inp!r}; allowed inputs: {list(range(2 + j))} "
                                     "(0 = cell k-2, 1 = cell k-1, 2+i = node i)")
                pairs.append([op, inp])
            if pairs[0][1] == pairs[1][1]:
                raise ValueError(f"arch[{key!r}] uses input {pairs[0][1]} twice; the two edges need distinct inputs")
            out[key] = pairs
        return out

    def probs(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.softmax(alpha.detach().view(self.num_edges, len(self.ops)).to(torch.float64), dim=1)

    def derive(self, alpha: torch.Tensor) -> Architecture:
        """DARTS rule: per node the two incoming edges with the largest best non-``none`` op
        probability softmax(α), each with that op (ties: lower op / input index first)."""
        p = self.probs(alpha).cpu().masked_fill(torch.tensor([o == "none" for o in self.ops]), -1.0)
        best_p, best_op = p.max(1)
        arch: Architecture = {}
        for j in range(self.nodes):
            lo = self.offsets[j]
            strength = best_p[lo : lo + 2 + j]
            order = sorted(range(2 + j), key=lambda i: (-float(strength[i]), i))[:2]
            arch[f"node{j}"] = [[self.ops[int(best_op[lo + i])], i] for i in sorted(order)]
        return arch

    def random_architecture(self, generator: torch.Generator) -> Architecture:
        """A uniform genotype: per node two distinct inputs and for each a uniform non-``none`` op."""
        arch: Architecture = {}
        for j in range(self.nodes):
            inputs = sorted(torch.randperm(2 + j, generator=generator)[:2].tolist())
            ops = torch.randint(len(self.real_ops), (2,), generator=generator).tolist()
            arch[f"node{j}"] = [[self.real_ops[o], i] for o, i in zip(ops, inputs, strict=True)]
        return arch

    def random_architecture_like(self, params: int, generator: torch.Generator, *, tol: float = 0.3,
                                 max_tries: int = 1000) -> Architecture:
        """A uniform genotype whose child has ``params`` ± ``tol``·``params`` weights (rejection
        sampling); the random baseline of similar size. ValueError when none is found."""
        for _ in range(max_tries):
            arch = self.random_architecture(generator)
            if abs(self.layout(arch).dim - params) <= tol * params:
                return arch
        raise ValueError(f"no random architecture within ±{tol:.0%} of {params} parameters in {max_tries} draws")

    # -- resources --------------------------------------------------------------------------
    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, 1, self.side, self.side)

    def child(self, arch: Architecture, weights: torch.Tensor | None = None) -> nn.Module:
        """The discrete network of ``arch`` as a module (weights: its flat vector, default zeros)."""
        return DiscreteNet(self, self.validate(arch), weights)

    def resources(self, arch: Architecture, *, latency: bool = True) -> Resources:
        return measure(self.child(arch), self.example_input(), latency=latency)


class DiscreteNet(nn.Module):
    """A genotype's child network holding its flat weight vector as one parameter."""

    def __init__(self, space: CellSpace, arch: Architecture, weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.space, self.layout, self.path = space, space.layout(arch), space.arch_path(arch)
        w = torch.zeros(self.layout.dim) if weights is None else weights.detach().clone()
        self.weights = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.space.forward(self.layout.views(self.weights), x, self.path)
