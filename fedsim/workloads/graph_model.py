"""HGP-SL (Zhang et al., AAAI 2020) in plain torch on padded dense batches.

A batch is ``adj [B, n, n]`` (edge weights, zero on padding), ``x [B, n, F]`` and ``mask [B, n]``
(1 on real nodes). Every function is a pure function of tensors, so ``torch.func.vmap`` and
``grad`` run it over many UEs' parameter vectors at once.

- GCN layer: ``H' = D̃^-1/2 (A + I) D̃^-1/2 H W + b`` on the real nodes (Kipf and Welling).
- Node information score: ``p_i = ‖((I − D^-1/2 A D^-1/2) H)_i‖_1`` (a node its neighbours
  already describe well carries little information); isolated nodes score ``‖h_i‖_1``.
- Pooling: keep the ``⌈r N_g⌉`` highest-scoring nodes of each graph (scores rounded to 4 decimals,
  10 in float64, so that rounding noise does not rank tied nodes; ties: lower index first),
  ``H' = H[idx]``, ``A' = A[idx, idx]``. The selection itself passes no gradient, as in HGP-SL.
- Structure learning: ``e_ij = LeakyReLU_0.2(aᵀ[h'_i ‖ h'_j]) + λ A'_ij`` over the pairs of kept
  nodes within ``hops`` hops of each other in the graph before pooling (``hops = 0``: all pairs),
  ``A'' = sparsemax_j(e_ij)`` (or softmax) row by row. Without structure learning the pooled
  graph is the induced subgraph ``A'`` (plain top-k pooling, the ablation).
- Model: GCN → pool → r1, GCN → pool → r2, GCN → r3 with ``r = [max ‖ mean]`` (or
  ``[max ‖ sum]``, ``Arch.readout``) over the real nodes; ``z = ReLU(r1) + ReLU(r2) + ReLU(r3)``
  → Lin 2h→h → Lin h→h/2 → Lin h/2→C, ReLU and dropout between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

_FILL = -1e9  # a finite "minus infinity" for masked entries (keeps gradients finite)


@dataclass(frozen=True)
class Arch:
    """The model's shape and its pooling options."""

    num_features: int
    num_classes: int
    hidden: int = 128
    ratio: float = 0.5
    structure_learning: bool = True
    attention: Literal["sparsemax", "softmax"] = "sparsemax"
    lam: float = 1.0
    hops: int = 3
    readout: Literal["max-mean", "max-sum"] = "max-mean"

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every parameter, in flat-vector order."""
        h, half = self.hidden, self.hidden // 2
        return [("conv1.w", (self.num_features, h)), ("conv1.b", (h,)), ("conv2.w", (h, h)), ("conv2.b", (h,)),
                ("conv3.w", (h, h)), ("conv3.b", (h,)), ("pool1.att", (2 * h,)), ("pool2.att", (2 * h,)),
                ("lin1.w", (2 * h, h)), ("lin1.b", (h,)), ("lin2.w", (h, half)), ("lin2.b", (half,)),
                ("lin3.w", (half, self.num_classes)), ("lin3.b", (self.num_classes,))]


def unflatten(arch: Arch, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Name -> view of the flat vector ``w`` shaped like that parameter."""
    layout = arch.layout()
    chunks = w.split([math.prod(s) for _, s in layout])
    return {name: c.view(shape) for (name, shape), c in zip(layout, chunks, strict=True)}


def init_flat(arch: Arch, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Glorot-uniform GCN weights and attention vectors, zero GCN biases, PyTorch's default
    U(±1/√fan_in) for the linear layers; drawn from ``g``."""
    layout = arch.layout()
    shapes = dict(layout)
    out = []
    for name, shape in layout:
        if name.startswith("conv") and name.endswith(".b"):
            out.append(torch.zeros(math.prod(shape), dtype=dtype))
            continue
        if name.startswith(("conv", "pool")):  # Glorot: fan_in + fan_out (attention: 2h -> 1)
            bound = math.sqrt(6.0 / (sum(shape) if len(shape) == 2 else shape[0] + 1))
        else:  # a linear layer's weight or bias: its weight's fan-in
            bound = 1.0 / math.sqrt(shapes[name[:-2] + ".w"][0])
        out.append((2 * torch.rand(math.prod(shape), generator=g, dtype=dtype) - 1) * bound)
    return torch.cat(out)


# ------------------------------------------------------------------------------ pieces


def sparsemax(z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row ``z[..., :]`` (its ``valid`` entries) onto the probability
    simplex (Martins and Astudillo, 2016); invalid entries get 0. Every row needs a valid entry."""
    z = torch.where(valid, z, torch.full_like(z, _FILL))
    zs = torch.sort(z, dim=-1, descending=True).values
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cs = zs.cumsum(-1)
    size = ((1 + k * zs) > cs).sum(-1, keepdim=True)
    tau = (cs.gather(-1, size - 1) - 1) / size.to(z.dtype)
    return torch.clamp(z - tau, min=0) * valid


def masked_softmax(z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax of each row over its ``valid`` entries; invalid entries get 0."""
    return torch.softmax(torch.where(valid, z, torch.full_like(z, _FILL)), dim=-1) * valid


def sym_norm(a: torch.Tensor) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` with ``D = diag(row sums)``; rows and columns of degree 0 stay 0."""
    d = a.sum(-1)
    inv = torch.where(d > 0, d.clamp(min=1e-12).rsqrt(), torch.zeros_like(d))
    return inv.unsqueeze(-1) * a * inv.unsqueeze(-2)


def gcn(a: torch.Tensor, h: torch.Tensor, mask: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One GCN layer with self-loops on the real nodes; padding rows come out 0."""
    a_hat = sym_norm(a + torch.diag_embed(mask))
    return (a_hat @ (h @ w) + b) * mask.unsqueeze(-1)


def info_score(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``‖((I − D^-1/2 A D^-1/2) H)_i‖_1`` for every node, ``[..., n]``."""
    return (h - sym_norm(a) @ h).abs().sum(-1)


def _gather_nodes(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx [B, k]`` of ``t [B, n, F]``."""
    return t.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, t.shape[-1]))


def _gather_square(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``a[idx][:, idx]`` per graph: ``[B, k, k]`` from ``[B, n, n]``."""
    rows = _gather_nodes(a, idx)
    return rows.gather(-1, idx.unsqueeze(-2).expand(*idx.shape, idx.shape[-1]))


def reachable(a: torch.Tensor, mask: torch.Tensor, hops: int) -> torch.Tensor:
    """Boolean ``[B, n, n]``: j within ``hops`` hops of i (itself included) among real nodes;
    ``hops = 0`` means every pair of real nodes."""
    both = (mask.unsqueeze(-1) * mask.unsqueeze(-2)) > 0
    if hops == 0:
        return both
    step = ((a > 0).to(a.dtype) + torch.diag_embed(mask)).detach()
    reach = step
    for _ in range(hops - 1):
        reach = ((reach @ step) > 0).to(a.dtype)
    return (reach > 0) & both


def pool(arch: Arch, h: torch.Tensor, a: torch.Tensor, mask: torch.Tensor, att: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One HGP-SL pooling: ``(h' [B, k, h], a' [B, k, k], mask' [B, k], idx [B, k])`` with
    ``k = ⌈r n⌉`` slots, of which the first ``⌈r N_g⌉`` hold graph g's kept nodes."""
    n = h.shape[-2]
    slots = math.ceil(arch.ratio * n - 1e-9)
    keep = torch.ceil(arch.ratio * mask.sum(-1) - 1e-9)
    # Scores rounded before ranking: nodes that tie exactly (one-hot features, symmetric atoms)
    # must not be ranked by rounding noise, which differs between a batched and a single call.
    score = torch.round(info_score(a, h).detach(), decimals=4 if h.dtype == torch.float32 else 10)
    score = torch.where(mask > 0, score, torch.full_like(mask, -math.inf))
    idx = torch.argsort(score, dim=-1, descending=True, stable=True)[..., :slots]
    new_mask = (torch.arange(slots, device=h.device) < keep.unsqueeze(-1)).to(h.dtype)
    h2 = _gather_nodes(h, idx) * new_mask.unsqueeze(-1)
    a2 = _gather_square(a, idx)
    both = new_mask.unsqueeze(-1) * new_mask.unsqueeze(-2)
    if not arch.structure_learning:
        return h2, a2 * both, new_mask, idx
    cand = _gather_square(reachable(a, mask, arch.hops).to(h.dtype), idx) * both > 0
    hid = h.shape[-1]
    e = F.leaky_relu((h2 @ att[:hid]).unsqueeze(-1) + (h2 @ att[hid:]).unsqueeze(-2), 0.2) + arch.lam * a2
    cand = cand | torch.diag_embed(new_mask == 0)  # padding rows: one dummy entry, zeroed below
    attend = sparsemax if arch.attention == "sparsemax" else masked_softmax
    return h2, attend(e, cand) * both, new_mask, idx


def readout(h: torch.Tensor, mask: torch.Tensor, kind: str = "max-mean") -> torch.Tensor:
    """``[max ‖ mean]`` (HGP-SL's readout) or ``[max ‖ sum]`` over each graph's real nodes,
    ``[B, 2h]``. Max and mean do not change when every node is duplicated, so the published
    readout cannot see a graph's size; the sum can."""
    m = mask.unsqueeze(-1)
    top = torch.where(m > 0, h, torch.full_like(h, _FILL)).max(-2).values
    total = (h * m).sum(-2)
    second = total if kind == "max-sum" else total / m.sum(-2).clamp(min=1)
    return torch.cat([top, second], -1)


def forward(arch: Arch, p: dict[str, torch.Tensor], a: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
            drop: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(logits [B, C], pooled)``: ``pooled`` holds each pooling's kept node slots (``idx1``,
    ``idx2`` into the previous level), masks and learned adjacency (``adj1``, ``adj2``).
    ``drop``: the two dropout masks (already scaled by 1/(1−p)), or None in evaluation."""
    h = torch.relu(gcn(a, x, mask, p["conv1.w"], p["conv1.b"]))
    h, a1, m1, i1 = pool(arch, h, a, mask, p["pool1.att"])
    r1 = readout(h, m1, arch.readout)
    h = torch.relu(gcn(a1, h, m1, p["conv2.w"], p["conv2.b"]))
    h, a2, m2, i2 = pool(arch, h, a1, m1, p["pool2.att"])
    r2 = readout(h, m2, arch.readout)
    h = torch.relu(gcn(a2, h, m2, p["conv3.w"], p["conv3.b"]))
    z = torch.relu(r1) + torch.relu(r2) + torch.relu(readout(h, m2, arch.readout))
    z = torch.relu(z @ p["lin1.w"] + p["lin1.b"])
    z = z if drop is None else z * drop[0]
    z = torch.relu(z @ p["lin2.w"] + p["lin2.b"])
    z = z if drop is None else z * drop[1]
    pooled = {"idx1": i1, "mask1": m1, "adj1": a1, "idx2": i2, "mask2": m2, "adj2": a2}
    return z @ p["lin3.w"] + p["lin3.b"], pooled
