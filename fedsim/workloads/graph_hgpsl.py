"""``graph-hgpsl``: federated graph classification with HGP-SL pooling (``graph_model.py``).

The graph set (``graph_data.py``) is cut into ``folds`` stratified folds (seeded); fold ``fold``
is the global test set and the others are split across the UEs by label (``partition.py``,
Dirichlet by default). Sweeping ``workload.fold`` over all folds and ``seed`` over several
values gives the cross-validated accuracy (one MUTAG test graph is worth about 5 points of one
fold's accuracy, so a single split misleads).

Local objective of UE n: mean cross-entropy over its graphs (or a minibatch, ``batch_size``)
plus ``weight_decay/2 ‖w‖²``. Local rule: plain SGD on that gradient by default, so that every
strategy (gradient transmission, overlap) and the batched engine path apply; ``optimizer =
"adam"`` runs the published optimiser instead, with its moments kept on the UE across rounds
(then the batched path and gradient transmission are refused). All parameters, including the
pooling layers' attention vectors, are one flat vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch.func import grad, vmap

from channels.rng import torch_generator
from fedsim.workloads.base import LrFn, Workload, WorkloadConfig
from fedsim.workloads.graph_data import load_graphs, pad_batch, stratified_folds
from fedsim.workloads.graph_model import Arch, forward, init_flat, unflatten
from fedsim.workloads.partition import partition_indices

_VMAP_CHUNK = 32  # UEs per vmap call
_ADAM = (0.9, 0.999, 1e-8)  # beta1, beta2, eps


class GraphHgpslConfig(WorkloadConfig):
    """HGP-SL graph classifier on MUTAG, Cuneiform (grakel 0.1.11 test data) or generated graphs."""

    name: Literal["graph-hgpsl"] = "graph-hgpsl"
    num_ues: int = Field(10, ge=1, description="N, number of UEs")
    dataset: Literal["mutag", "cuneiform", "synthetic"] = Field("mutag", description="graph set")
    num_graphs: int = Field(200, ge=4, description="graphs generated (synthetic only)")
    hidden: int = Field(128, ge=2, description="hidden size h of the GCN layers")
    pooling_ratio: float = Field(0.5, gt=0, le=1, description="r: each pooling keeps ceil(r N_g) nodes")
    structure_learning: bool = Field(True, description="learn the pooled graph's edges (false: top-k pooling)")
    attention: Literal["sparsemax", "softmax"] = Field("sparsemax", description="structure-learning attention")
    lam: float = Field(1.0, ge=0, description="lambda: weight of the original edges in the attention")
    hops: int = Field(3, ge=0, description="structure candidates within this many hops (0: all pairs)")
    readout: Literal["max-mean", "max-sum"] = Field(
        "max-mean", description="graph readout after each level: [max || mean] as published, or [max || sum], "
        "which also sees the graph's size")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout between the MLP layers")
    weight_decay: float = Field(1e-3, ge=0, description="L2 term weight_decay/2 ||w||^2 in the local objective")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="local rule (adam: moments stay on the UE)")
    batch_size: int = Field(0, ge=0, description="graphs per minibatch; 0 = the UE's whole set")
    partition: Literal["iid", "dirichlet", "shards"] = Field("dirichlet", description="split across UEs")
    dirichlet_alpha: float = Field(1.0, gt=0, description="Dir(alpha) label skew (dirichlet)")
    shards_per_ue: int = Field(2, ge=1, description="label-sorted shards per UE (shards)")
    min_partition_size: int = Field(2, ge=1, description="smallest UE partition (dirichlet redraws)")
    folds: int = Field(10, ge=2, description="stratified cross-validation folds")
    fold: int = Field(0, ge=0, description="the fold held out as the global test set")
    precision: Literal["float32", "float64"] = Field("float32", description="parameter dtype")

    @model_validator(mode="after")
    def _fold_exists(self) -> GraphHgpslConfig:
        if self.fold >= self.folds:
            raise ValueError(f"fold = {self.fold} but there are only {self.folds} folds (0..{self.folds - 1})")
        return self

    def build(self, seed: int) -> GraphHgpsl:
        return GraphHgpsl(self, seed)


class GraphHgpsl(Workload):
    """See the module docstring."""

    def __init__(self, cfg: GraphHgpslConfig, seed: int) -> None:
        self.cfg, self.seed, self.name, self.num_ues = cfg, seed, cfg.name, cfg.num_ues
        self.dtype = torch.float64 if cfg.precision == "float64" else torch.float32
        self.custom_local_train = cfg.optimizer == "adam"
        self.data = data = load_graphs(cfg.dataset, seed if cfg.dataset == "synthetic" else 0, cfg.num_graphs)
        self.arch = Arch(data.x[0].shape[1], data.num_classes, cfg.hidden, cfg.pooling_ratio,
                         cfg.structure_learning, cfg.attention, cfg.lam, cfg.hops, cfg.readout)
        self.dim = sum(int(np.prod(s)) for _, s in self.arch.layout())
        self.n_max = max(len(a) for a in data.adj)
        fold = stratified_folds(data.y, cfg.folds, seed)
        #: graph ids of the global test set (fold ``cfg.fold``) and of the training pool
        self.test_ids = np.flatnonzero(fold == cfg.fold)
        pool = np.flatnonzero(fold != cfg.fold)
        parts = partition_indices(data.y[pool], cfg.num_ues, cfg.partition, seed, dirichlet_alpha=cfg.dirichlet_alpha,
                                  shards_per_ue=cfg.shards_per_ue, min_partition_size=cfg.min_partition_size)
        self.train_ids = [pool[p] for p in parts]
        self._ue = [self._tensors(ids) for ids in self.train_ids]
        self._test = self._tensors(self.test_ids)
        self._train_all = self._tensors(np.concatenate(self.train_ids))

    def _tensors(self, ids: np.ndarray) -> tuple[torch.Tensor, ...]:
        """``(adj, x, mask, y)`` of graphs ``ids``, padded to the set's largest graph."""
        a, x, m = pad_batch(self.data, ids, self.n_max, self.dtype)
        return a, x, m, torch.as_tensor(self.data.y[ids])

    # -- data ----------------------------------------------------------------------------
    def num_examples(self, ue: int) -> int:
        return len(self.train_ids[ue])

    def batch(self, ue: int, step: int) -> tuple[torch.Tensor, ...]:
        """UE ``ue``'s minibatch of global ``step``: ``(adj, x, mask, y, drop1, drop2)``. The rows
        (without replacement, when ``batch_size`` is below the UE's count) and then the dropout
        masks come from ``torch_generator(seed, "minibatch", step, ue)``."""
        a, x, m, y = self._ue[ue]
        g = torch_generator(self.seed, "minibatch", step, ue)
        bs = self.cfg.batch_size
        if 0 < bs < len(y):
            rows = torch.randperm(len(y), generator=g)[:bs]
            a, x, m, y = a[rows], x[rows], m[rows], y[rows]
        keep, h = 1.0 - self.cfg.dropout, self.arch.hidden
        d1 = (torch.rand(len(y), h, generator=g, dtype=self.dtype) < keep).to(self.dtype) / keep
        d2 = (torch.rand(len(y), h // 2, generator=g, dtype=self.dtype) < keep).to(self.dtype) / keep
        return a, x, m, y, d1, d2

    # -- model ---------------------------------------------------------------------------
    def init_params(self) -> torch.Tensor:
        return init_flat(self.arch, torch_generator(self.seed, "init"), self.dtype)

    def logits(self, w: torch.Tensor, a: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` logits of model ``w`` (no dropout)."""
        return forward(self.arch, unflatten(self.arch, w), a, x, m)[0]

    def loss(self, w: torch.Tensor, a: torch.Tensor, x: torch.Tensor, m: torch.Tensor, y: torch.Tensor,
             d1: torch.Tensor, d2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Weighted mean cross-entropy (weight 0: a padding graph) plus the L2 term."""
        z = forward(self.arch, unflatten(self.arch, w), a, x, m, (d1, d2))[0]
        ce = F.cross_entropy(z, y, reduction="none")
        return (ce * weight).sum() / weight.sum() + 0.5 * self.cfg.weight_decay * (w * w).sum()

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        b = self.batch(ue, step)
        weight = torch.ones(len(b[3]), dtype=self.dtype)
        return grad(self.loss)(w.detach().to(self.dtype), *b, weight)

    batched_grad = True

    def _padded(self, b: tuple[torch.Tensor, ...], size: int) -> tuple[torch.Tensor, ...]:
        """Minibatch ``b`` plus weight, padded to ``size`` graphs with one-node dummies of weight 0."""
        extra = size - len(b[3])
        weight = torch.cat([torch.ones(len(b[3]), dtype=self.dtype), torch.zeros(extra, dtype=self.dtype)])
        if extra == 0:
            return (*b, weight)
        a, x, m, y, d1, d2 = b
        dummy_m = torch.zeros(extra, m.shape[1], dtype=self.dtype)
        dummy_m[:, 0] = 1.0
        pad = (torch.zeros(extra, *a.shape[1:], dtype=self.dtype), torch.zeros(extra, *x.shape[1:], dtype=self.dtype),
               dummy_m, torch.zeros(extra, dtype=y.dtype), torch.ones(extra, d1.shape[1], dtype=self.dtype),
               torch.ones(extra, d2.shape[1], dtype=self.dtype))
        return (*(torch.cat([t, p]) for t, p in zip(b, pad, strict=True)), weight)

    def stochastic_grad_many(self, ws: torch.Tensor, ues: Sequence[int], step: int) -> torch.Tensor:
        """``stochastic_grad`` for every row of ``ws [M, d]``: one ``vmap(grad)`` over the stacked
        models and the UEs' minibatches, padded to a common size with zero-weight dummy graphs."""
        ues = [int(n) for n in ues]
        if ws.shape[0] != len(ues):
            raise ValueError(f"ws has {ws.shape[0]} rows but {len(ues)} UEs were given")
        batches = [self.batch(n, step) for n in ues]
        size = max(len(b[3]) for b in batches)
        cols = list(zip(*(self._padded(b, size) for b in batches), strict=True))
        per_ue = vmap(grad(self.loss))
        ws = ws.detach().to(self.dtype)
        out = []
        for s in range(0, len(ues), _VMAP_CHUNK):
            out.append(per_ue(ws[s: s + _VMAP_CHUNK], *(torch.stack(c[s: s + _VMAP_CHUNK]) for c in cols)))
        return torch.cat(out)

    def local_train(self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn,
                    state: dict[str, torch.Tensor]) -> torch.Tensor:
        """SGD (``local_sgd``), or Adam whose moments ``state["adam_m"], ["adam_v"]`` and step
        count ``["adam_t"]`` stay on the UE across rounds."""
        if self.cfg.optimizer == "sgd":
            return self.local_sgd(w, ue, first_step, steps, lr)
        return self.local_adam(w.to(self.dtype), ue, first_step, steps, lr, state, _ADAM[:2], _ADAM[2])

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def _ce_acc(self, w: torch.Tensor, data: tuple[torch.Tensor, ...]) -> tuple[float, float]:
        a, x, m, y = data
        z = self.logits(w, a, x, m)
        return float(F.cross_entropy(z, y)), float((z.argmax(1) == y).double().mean())

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """``loss``/``accuracy`` on the held-out fold; ``train_loss`` = f(w) (mean cross-entropy over
        every UE's graphs plus the L2 term); ``edges_per_node``: mean number of edges (self-loops
        included) per kept node in the first pooled graph of the test graphs."""
        w = w.detach().to(self.dtype)
        loss, acc = self._ce_acc(w, self._test)
        train = self._ce_acc(w, self._train_all)[0] + 0.5 * self.cfg.weight_decay * float((w * w).sum())
        with torch.no_grad():
            pooled = forward(self.arch, unflatten(self.arch, w), *self._test[:3])[1]
        edges = float((pooled["adj1"] > 0).sum() / pooled["mask1"].sum())
        return {"loss": loss, "accuracy": acc, "train_loss": train, "edges_per_node": edges}

    @torch.no_grad()
    def pooled_structure(self, w: torch.Tensor) -> list[tuple[set[int], set[tuple[int, int]]]]:
        """For each test graph: the node ids (of the input graph) the first pooling keeps, and the
        edges ``(i, j)`` (input-graph ids, ``i != j``) of the first pooled graph."""
        pooled = forward(self.arch, unflatten(self.arch, w.detach().to(self.dtype)), *self._test[:3])[1]
        out = []
        for idx, mask, adj in zip(pooled["idx1"], pooled["mask1"], pooled["adj1"], strict=True):
            k = int(mask.sum())
            ids = idx[:k].tolist()
            nz = (adj[:k, :k] > 0).nonzero().tolist()
            out.append((set(ids), {(ids[i], ids[j]) for i, j in nz if i != j}))
        return out
