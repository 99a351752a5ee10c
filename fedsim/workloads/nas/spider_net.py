"""The masked supernet of ``nas-spider``: the cell space of ``nas-gdas`` (:mod:`.cells`) with every
candidate op of every edge of every cell allocated, each op switched by an alive mask and a gate.

Ops are numbered ``k = (cell · E + edge) · R + r`` over the R = |ops| candidate ops (``none`` is not a
candidate: a masked op is the zero op). Each cell has its own ops (unlike GDAS's shared α), so the
two cells may grow differently. Op k's output on its edge is

    y_k = m_k · sg(γ_k) · op_k(x),   sg(γ) = 1[γ > 0] forward, d sg / dγ = 1 (straight-through)

with m_k ∈ {0, 1} the alive mask. An op with m_k = 0 is never evaluated: it adds exactly zero and
its weights and gate get exactly zero gradient. One exception keeps the graph connected: when every
alive op of a node is off, the one with the largest gate runs (sg = 1), see
:meth:`SpiderSpace.effective_on`. Node j sums its incoming ops (zeros when none is alive); the
cell output is the mean of its nodes, as in :mod:`.cells`.

Resources of an alive set (one example, float32), by formula (the tests check them by hand and
against ``count_params`` of the child module):

- parameters = 9·C (stem) + 9·C²·(alive conv ops) + 10·(C·head_pool² + 1) (head);
- activation memory = 4 bytes · C·S² · (1 + cells·(nodes + 1) + alive ops): the feature maps a
  training forward pass keeps for the backward pass (stem output, every alive op's output, every
  node and every cell output; S = the cells' spatial side).

Architecture (JSON): ``{"cell0": {"node0": [[op, input], ...], ...}, ...}``, per cell and node the
alive ops as ``[op, input]`` (input 0 = s0, 1 = s1, 2 + i = node i), any number per node.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.workloads.nas.cells import NUM_CLASSES, OPS, PARAM_OPS, CellSpace, Layout, _norm

Architecture = dict[str, Any]


class SpiderSpace:
    """Op indexing, masked forward, resources and architectures of the grown cell network."""

    def __init__(self, cell_space: CellSpace) -> None:
        self.cs = cell_space
        self.ops = tuple(o for o in cell_space.ops if o != "none")
        self.R, self.E, self.cells = len(self.ops), cell_space.num_edges, cell_space.cells
        self.num_ops = self.cells * self.E * self.R
        self.layout = cell_space.layout()  # every param op of every edge of every cell
        ids = torch.arange(self.num_ops)
        self.op_cell, self.op_edge, self.op_kind = ids // (self.E * self.R), (ids // self.R) % self.E, ids % self.R
        self.is_param = torch.tensor([self.ops[r] in PARAM_OPS for r in self.op_kind.tolist()])
        self.edge_node_input = [(j, i) for j in range(cell_space.nodes) for i in range(2 + j)]
        c = cell_space.channels
        self.base_params = 9 * c + NUM_CLASSES * (c * cell_space.head_pool**2 + 1)
        self.conv_params = 9 * c * c
        s = cell_space.side // cell_space.stem_stride
        self.map_bytes = 4 * c * s * s
        self.base_maps = 1 + self.cells * (cell_space.nodes + 1)
        offsets = [0, *torch.tensor(self.layout.sizes).cumsum(0).tolist()]
        self.slices = {n: (offsets[i], offsets[i + 1]) for i, n in enumerate(self.layout.names)}

    def op_name(self, k: int) -> str:
        return self.ops[int(self.op_kind[k])]

    def weight_name(self, k: int) -> str | None:
        """Layout name of op k's weight (None for a parameter-free op)."""
        if not bool(self.is_param[k]):
            return None
        return f"cell{int(self.op_cell[k])}.edge{int(self.op_edge[k])}.{self.op_name(k)}"

    def weight_mask(self, alive: torch.Tensor) -> torch.Tensor:
        """``[layout.dim]`` bool: the entries of θ that alive ops (and stem, head) use."""
        keep = torch.ones(self.layout.dim, dtype=torch.bool)
        for k in torch.nonzero(self.is_param & ~alive.cpu()).flatten().tolist():
            a, b = self.slices[self.weight_name(k)]
            keep[a:b] = False
        return keep

    def effective_on(self, gates: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """``[num_ops]`` bool: the alive ops that run. An alive op runs when its gate is on; a node
        whose alive ops are all off keeps the one with the largest gate (lowest index on ties), so
        that gating never disconnects a node (a zero node would cut every gradient through it)."""
        gates, alive = gates.detach().cpu(), alive.cpu()
        node = self.op_cell * self.cs.nodes + torch.tensor([self.edge_node_input[e][0] for e in self.op_edge.tolist()])
        on = alive & (gates > 0)
        groups = self.cells * self.cs.nodes
        any_on = torch.zeros(groups, dtype=torch.bool).index_put_((node,), on, accumulate=True)
        key = torch.where(alive, gates, torch.full_like(gates, -torch.inf))
        best = torch.full((groups,), -torch.inf, dtype=key.dtype).scatter_reduce(0, node, key, "amax")
        cand = alive & ~any_on[node] & (key == best[node])
        ids = torch.arange(self.num_ops)
        last = torch.full((groups,), self.num_ops)
        first = last.scatter_reduce(0, node, torch.where(cand, ids, self.num_ops), "amin")
        return on | (cand & (ids == first[node]))

    # -- resources --------------------------------------------------------------------------
    def params(self, alive: torch.Tensor) -> torch.Tensor:
        """Parameters of the child of each alive set ``[..., num_ops]`` (int64 ``[...]``)."""
        return self.base_params + self.conv_params * (alive & self.is_param).sum(-1)

    def activation_bytes(self, alive: torch.Tensor) -> torch.Tensor:
        """Activation memory of a training forward pass per example, bytes (int64 ``[...]``)."""
        return self.map_bytes * (self.base_maps + alive.sum(-1))

    # -- forward ----------------------------------------------------------------------------
    def forward(self, views: dict[str, torch.Tensor], x: torch.Tensor, alive: torch.Tensor,
                gates: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
        """``[B, 10]`` logits on ``x [B, 1, H, W]``: only alive ops run, each times its straight-through
        gate (``gates`` None: all on). ``record`` (a list) receives per cell the list of states
        ``[s0, s1, node0, ...]`` with the nodes' gradients retained (the growth probe)."""
        cs = self.cs
        s = _norm(F.conv2d(x, views["stem"], stride=cs.stem_stride, padding=1))
        on = None
        if gates is not None:
            on = self.effective_on(gates, alive).to(gates) + gates - gates.detach()  # off: 0, still a gradient
        live = alive.cpu().view(self.cells, self.E, self.R).tolist()
        s0 = s1 = s
        for cell in range(self.cells):
            states = [s0, s1]
            for j in range(cs.nodes):
                acc = None
                for i in range(2 + j):
                    e = cs.edge(j, i)
                    for r, op in enumerate(self.ops):
                        if not live[cell][e][r]:
                            continue
                        y = OPS[op](states[i], views.get(f"cell{cell}.edge{e}.{op}"))
                        if on is not None:
                            y = y * on[(cell * self.E + e) * self.R + r]
                        acc = y if acc is None else acc + y
                node = torch.zeros_like(s0) if acc is None else acc
                if record is not None and node.requires_grad:
                    node.retain_grad()
                states.append(node)
            if record is not None:
                record.append(states)
            s0, s1 = s1, torch.stack(states[2:]).mean(0)
        h = F.adaptive_avg_pool2d(F.relu(s1), cs.head_pool).flatten(1)
        return F.linear(h, views["head.w"], views["head.b"])

    @torch.no_grad()
    def probe_scores(self, views: dict[str, torch.Tensor], record: list, dormant: torch.Tensor) -> torch.Tensor:
        """Growth statistic of every op ``[num_ops]`` (0 for ops not ``dormant``): the first-order
        decrease of the loss if the op joined its node with gate 1, −⟨∂L/∂node_j, op(s_i)⟩ (the
        gradients must have been computed by a backward pass through a ``record``-ed forward)."""
        out = torch.zeros(self.num_ops, dtype=torch.float32)
        for k in torch.nonzero(dormant.cpu()).flatten().tolist():
            cell, e = int(self.op_cell[k]), int(self.op_edge[k])
            j, i = self.edge_node_input[e]
            states = record[cell]
            grad = states[2 + j].grad
            if grad is None:
                continue
            name = self.weight_name(k)
            y = OPS[self.op_name(k)](states[i].detach(), None if name is None else views[name].detach())
            out[k] = -float((grad * y).sum())
        return out

    # -- architectures ----------------------------------------------------------------------
    def to_arch(self, alive: torch.Tensor) -> Architecture:
        """The alive set as the JSON architecture of the module docstring."""
        arch: Architecture = {f"cell{c}": {f"node{j}": [] for j in range(self.cs.nodes)} for c in range(self.cells)}
        for k in torch.nonzero(alive.cpu()).flatten().tolist():
            j, i = self.edge_node_input[int(self.op_edge[k])]
            arch[f"cell{int(self.op_cell[k])}"][f"node{j}"].append([self.op_name(k), i])
        return arch

    def from_arch(self, arch: Any) -> torch.Tensor:
        """``[num_ops]`` bool alive set of a JSON architecture; ValueError naming what is wrong."""
        if not isinstance(arch, dict) or set(arch) != {f"cell{c}" for c in range(self.cells)}:
            raise ValueError(f"arch must be a table with keys cell0..cell{self.cells - 1}, got {arch!r:.200}")
        alive = torch.zeros(self.num_ops, dtype=torch.bool)
        for c in range(self.cells):
            cell = arch[f"cell{c}"]
            want = {f"node{j}" for j in range(self.cs.nodes)}
            if not isinstance(cell, dict) or set(cell) != want:
                raise ValueError(f"arch['cell{c}'] must have keys {sorted(want)}, got {cell!r:.200}")
            for j in range(self.cs.nodes):
                for pair in cell[f"node{j}"]:
                    if not isinstance(pair, list | tuple) or len(pair) != 2 or pair[0] not in self.ops \
                            or isinstance(pair[1], bool) or not isinstance(pair[1], int) or not 0 <= pair[1] < 2 + j:
                        raise ValueError(f"arch['cell{c}']['node{j}'] entries must be [op, input] with op in "
                                         f"{list(self.ops)} and input in {list(range(2 + j))}, got {pair!r}")
                    alive[(c * self.E + self.cs.edge(j, pair[1])) * self.R + self.ops.index(pair[0])] = True
        return alive

    def child_layout(self, alive: torch.Tensor) -> Layout:
        """Layout of the child's own weights: stem, the alive param ops' kernels, head."""
        keep = {self.weight_name(k) for k in torch.nonzero(alive.cpu() & self.is_param).flatten().tolist()}
        pairs = [(n, s) for n, s in zip(self.layout.names, self.layout.shapes, strict=True)
                 if not n.startswith("cell") or n in keep]
        return Layout(tuple(n for n, _ in pairs), tuple(s for _, s in pairs))

    def random_alive(self, generator: torch.Generator, param_ops: int) -> torch.Tensor:
        """A random GDAS-style cell per cell (per node two distinct inputs, one op each) with exactly
        ``param_ops`` param ops in the whole network, placed uniformly among the ``cells·nodes·2``
        slots (clipped to the slot count); the other slots get a uniform parameter-free op."""
        nodes = self.cs.nodes
        slots = self.cells * nodes * 2
        conv = [r for r, o in enumerate(self.ops) if o in PARAM_OPS]
        free = [r for r, o in enumerate(self.ops) if o not in PARAM_OPS] or conv
        chosen = set(torch.randperm(slots, generator=generator)[: min(param_ops, slots) if conv else 0].tolist())
        alive, slot = torch.zeros(self.num_ops, dtype=torch.bool), 0
        for c in range(self.cells):
            for j in range(nodes):
                for i in sorted(torch.randperm(2 + j, generator=generator)[:2].tolist()):
                    pool = conv if slot in chosen else free
                    r = pool[int(torch.randint(len(pool), (1,), generator=generator))]
                    alive[(c * self.E + self.cs.edge(j, i)) * self.R + r] = True
                    slot += 1
        return alive


class SpiderChild(nn.Module):
    """A found architecture as a module holding only its own weights (resources, retraining)."""

    def __init__(self, space: SpiderSpace, alive: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.space, self.alive = space, alive.clone()
        self.layout = space.child_layout(alive)
        self.weights = nn.Parameter(torch.zeros(self.layout.dim) if weights is None else weights.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.space.forward(self.layout.views(self.weights), x, self.alive)
