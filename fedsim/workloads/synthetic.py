"""FedProx Synthetic(alpha, beta) with L2-regularised multinomial logistic regression.

Generator (Li et al., MLSys 2020, ``litian96/FedProx`` ``generate_synthetic.py``), per UE k:
``n_k = min(int(LogNormal(4, 2)) + 50, max_samples_per_ue)``; ``u_k ~ N(0, alpha)``,
``B_k ~ N(0, beta)`` (standard deviations); ``W_k[i, j] ~ N(u_k, 1)``, ``b_k[j] ~ N(u_k, 1)``;
``v_k[j] ~ N(B_k, 1)``; ``x ~ N(v_k, diag(j^-1.2))``; ``y = argmax(x W_k + b_k)``. With
``iid=True`` (Synthetic-IID) one ``W, b ~ N(0, 1)`` is shared and ``v_k = 0``. As in the
FedProx code, each UE keeps its first 90% of examples for training and the last 10% (at least
one) for the pooled test set.

Model: logits = x W + b, W ``[60, 10]``, b ``[10]``; flat parameters ``w = [W.flatten(), b]``
(d = 610), i.e. the rows of the augmented matrix ``W~ = [W; b]`` ``[61, 10]`` against features
``x~ = [x, 1]``. Local objective ``f_n(w) = mean CE over UE n's training data + (l2/2)||w||^2``;
global ``f = sum_n q_n f_n`` with ``q_n ∝ |D_n|``. Everything is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from channels.rng import numpy_generator, torch_generator
from fedsim.workloads.base import TheoryConstants, Workload, WorkloadConfig
from fedsim.workloads.keep import keep_recent, recall
from fedsim.workloads.synthetic_ce import CHUNK_LOGITS, NUM_CLASSES, NUM_FEATURES, ce_many, x_t_onehot
from fedsim.workloads.synthetic_optima import local_optima, minimise

TRAIN_FRACTION = 0.9
_DT = torch.float64
_STD_X = np.arange(1, NUM_FEATURES + 1, dtype=np.float64) ** -0.6  # sqrt of j^-1.2
# Padded full batches kept per workload by stochastic_grad_many (a 20-UE grid variant needs ~3 MB;
# outside registry.SHARED_BYTES, which counts a workload when it is first kept).
_PADDED_CACHE_BYTES = 64 << 20


class SyntheticLogregConfig(WorkloadConfig):
    """FedProx Synthetic(alpha, beta) + L2 multinomial logistic regression (d = 610)."""

    name: Literal["synthetic-logreg"] = "synthetic-logreg"

    def build(self, seed: int) -> SyntheticLogreg:
        return SyntheticLogreg(self, seed)
    num_ues: int = Field(20, ge=1, description="N, number of UEs")
    batch_size: int = Field(0, ge=0, description="minibatch size; 0 = full local batch")
    alpha: float = Field(0.5, ge=0, description="model heterogeneity (std of u_k)")
    beta: float = Field(0.5, ge=0, description="data heterogeneity (std of B_k)")
    iid: bool = Field(False, description="Synthetic-IID: shared W, b and v_k = 0")
    l2: float = Field(1e-2, gt=0, description="L2 coefficient; equals mu exactly")
    max_samples_per_ue: int = Field(600, ge=10, description="cap on n_k (train + test) to keep CPU runs small")


def generate_synthetic(
    num_ues: int, alpha: float, beta: float, iid: bool, max_samples: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-UE ``(x [n_k, 60] float64, y [n_k] int64)`` of Synthetic(alpha, beta).

    UE k draws from ``numpy_generator(seed, "data", 0, k)``, so its data does not depend on N;
    the shared IID model comes from ``numpy_generator(seed, "data", 0)``.
    """
    shared = _shared_model(seed, iid)
    return [_ue_examples(*ue, shared) for ue in _ue_streams(num_ues, alpha, beta, max_samples, seed)]


def _ue_streams(num_ues: int, alpha: float, beta: float, max_samples: int,
                seed: int) -> list[tuple[np.random.Generator, int, float, float]]:
    """Every UE's generator after its first draws, with them: ``(g, n_k, u_k, B_k)``. The sizes
    come first so that the pooled arrays can be allocated before any example is drawn."""
    out = []
    for k in range(num_ues):
        g = numpy_generator(seed, "data", 0, k)
        n_k = min(int(g.lognormal(4.0, 2.0)) + 50, max_samples)
        u_k = g.normal(0.0, alpha) if alpha > 0 else 0.0
        b_k = g.normal(0.0, beta) if beta > 0 else 0.0
        out.append((g, n_k, u_k, b_k))
    return out


def _shared_model(seed: int, iid: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Synthetic-IID's shared ``(W, b)``; None for Synthetic(alpha, beta)."""
    shared = numpy_generator(seed, "data", 0)
    w_iid = shared.normal(0.0, 1.0, (NUM_FEATURES, NUM_CLASSES))
    b_iid = shared.normal(0.0, 1.0, NUM_CLASSES)
    return (w_iid, b_iid) if iid else None


def _ue_examples(g: np.random.Generator, n_k: int, u_k: float, b_k: float,
                 shared: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """One UE's ``(x [n_k, 60], y [n_k])`` from its generator after :func:`_ue_streams`."""
    if shared is not None:
        (w, b), v = shared, np.zeros(NUM_FEATURES)
    else:
        w = g.normal(u_k, 1.0, (NUM_FEATURES, NUM_CLASSES))
        b = g.normal(u_k, 1.0, NUM_CLASSES)
        v = g.normal(b_k, 1.0, NUM_FEATURES)
    x = v + _STD_X * g.standard_normal((n_k, NUM_FEATURES))
    y = np.argmax(x @ w + b, axis=1).astype(np.int64)  # argmax softmax = argmax logits
    return x, y


def _pooled(cfg: SyntheticLogregConfig, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """``[x_train, y_train, x_test, y_test]`` (``x`` augmented ``[R, 61]``, UEs in order) and the
    training counts. Each UE's examples are written straight into the pooled arrays: stacking
    per-UE arrays and then appending the ones column made two more copies of ~1 GB at 10,000 UEs,
    which cost more than drawing the data (fresh memory is slow to touch on our VMs)."""
    streams = _ue_streams(cfg.num_ues, cfg.alpha, cfg.beta, cfg.max_samples_per_ue, seed)
    counts = [min(int(TRAIN_FRACTION * n), n - 1) for _, n, _, _ in streams]
    sizes = (sum(counts), sum(n for _, n, _, _ in streams) - sum(counts))
    # torch allocates large blocks on huge pages: touching 1 GB of numpy.empty took 10 s here, 0.7 s
    pooled = [(torch.empty(r, NUM_FEATURES + 1, dtype=_DT), torch.empty(r, dtype=torch.long)) for r in sizes]
    xs, ys = [x.numpy() for x, _ in pooled], [y.numpy() for _, y in pooled]
    for x in xs:
        x[:, NUM_FEATURES] = 1.0
    shared, at = _shared_model(seed, cfg.iid), [0, 0]
    for ue, n_tr in zip(streams, counts, strict=True):
        x, y = _ue_examples(*ue, shared)
        for split, (lo, hi) in enumerate(((0, n_tr), (n_tr, len(y)))):
            a, b = at[split], at[split] + hi - lo
            xs[split][a:b, :NUM_FEATURES] = x[lo:hi]
            ys[split][a:b] = y[lo:hi]
            at[split] = b
    return [*pooled[0], *pooled[1]], counts


class SyntheticLogreg(Workload):
    """Synthetic(alpha, beta) logistic regression; see the module docstring."""

    name = "synthetic-logreg"
    dtype = _DT
    shareable = True  # after building, only the caches of xty and theory_constants change

    def __init__(self, cfg: SyntheticLogregConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.num_ues = cfg.num_ues
        self.dim = (NUM_FEATURES + 1) * NUM_CLASSES
        self.l2 = cfg.l2
        (self.x_train, self.y_train, self.x_test, self.y_test), counts = _pooled(cfg, seed)
        #: ``x_train [R, 61]``: the augmented training features of all UEs, concatenated in UE order.
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self.w_star, self.f_star = _minimise(self.x_train, self.y_train, self.l2)
        self._theory: TheoryConstants | None = None
        self._ce: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._padded: dict[tuple, list[tuple[torch.Tensor, ...]]] = {}

    # -- data access ----------------------------------------------------------------------
    def num_examples(self, ue: int) -> int:
        return self.counts[ue]

    def ue_data(self, ue: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s training data: ``x~ [n, 61]`` (last column 1) and ``y [n]``."""
        a, b = self.offsets[ue], self.offsets[ue + 1]
        return self.x_train[a:b], self.y_train[a:b]

    def batch_rows(self, ue: int, step: int) -> torch.Tensor | None:
        """Rows (into ``ue_data(ue)``) of the minibatch for ``step``; None = full batch.

        Drawn without replacement from ``torch_generator(seed, "minibatch", step, ue)``.
        """
        n, bs = self.counts[ue], self.cfg.batch_size
        if bs == 0 or bs >= n:
            return None
        g = torch_generator(self.seed, "minibatch", step, ue)
        return torch.randperm(n, generator=g)[:bs]

    # -- model ----------------------------------------------------------------------------
    def init_params(self) -> torch.Tensor:
        """``w0 ~ N(0, 0.01^2 I)`` from stream ``"init"``, ``[610]`` float64."""
        g = torch_generator(self.seed, "init")
        return (0.01 * torch.randn(self.dim, generator=g, dtype=_DT)).to(self.device)

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        x, y = self.ue_data(ue)
        rows = self.batch_rows(ue, step)
        if rows is not None:
            x, y = x[rows], y[rows]
        return _grad(w.to(_DT), x, y, self.l2)

    def local_grad(self, w: torch.Tensor, ue: int) -> torch.Tensor:
        """Full-batch gradient of f_n at ``w``, ``[610]``."""
        return _grad(w.to(_DT), *self.ue_data(ue), self.l2)

    def global_grad(self, w: torch.Tensor) -> torch.Tensor:
        """grad f(w) = sum_n q_n grad f_n(w), ``[610]``: one pass over the pooled training set."""
        return _grad(w.to(_DT), self.x_train, self.y_train, self.l2)

    batched_grad = True

    def stochastic_grad_many(self, ws: torch.Tensor, ues: Sequence[int], step: int) -> torch.Tensor:
        """Vectorised ``stochastic_grad`` over rows of ``ws [M, 610]``: padded bmms over buckets of
        UEs of similar minibatch size (UE sizes are power-law, so one width padded to the largest
        UE would multiply the work)."""
        ues = [int(n) for n in ues]
        if ws.shape[0] != len(ues):
            raise ValueError(f"ws has {ws.shape[0]} rows but {len(ues)} UEs were given")
        out = torch.empty(len(ues), self.dim, dtype=_DT, device=self.device)
        for bucket, x, y, weights in self._padded_batches(ues, step):
            out[bucket] = self._grad_bucket(ws[bucket].to(_DT), x, y, weights)
        return out

    def _padded_batches(self, ues: list[int], step: int) -> list[tuple[torch.Tensor, ...]]:
        """Per bucket of ``ues`` of similar minibatch size: the bucket's positions in ``ues``, its
        zero-padded minibatches ``x [m, B, 61]``, ``y [m, B]`` and row weights ``[m, B, 1]`` (1/size,
        0 on padding). Full batches are the same every round: they are kept for the same UEs
        (least recently used dropped beyond ``_PADDED_CACHE_BYTES``; the gather was a third of the
        gradient's time at 20 UEs)."""
        picks = [self.batch_rows(n, step) for n in ues]  # None: all of the UE's rows
        full = all(p is None for p in picks)
        key = (tuple(ues), str(self.device))
        if full and (kept := recall(self._padded, key)) is not None:
            return kept
        starts = [self.offsets[n] for n in ues]
        sizes = [self.counts[n] if p is None else len(p) for n, p in zip(ues, picks, strict=True)]
        batches = []
        for bucket in _size_buckets(sizes):
            b = bucket.tolist()
            idx, mask = _padded_rows([starts[m] for m in b], [sizes[m] for m in b], [picks[m] for m in b])
            idx, mask = idx.to(self.device), mask.to(self.device)
            weights = (mask / mask.sum(1, keepdim=True)).unsqueeze(-1)
            batches.append((bucket, self.x_train[idx], self.y_train[idx], weights))
        if full:
            keep_recent(self._padded, key, batches, _PADDED_CACHE_BYTES)
        return batches

    def _grad_bucket(self, ws: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Gradients of the rows of ``ws [m, 610]`` on the padded minibatches ``x [m, B, 61]``,
        ``y [m, B]`` with row weights ``[m, B, 1]``: one padded bmm."""
        resid = torch.softmax(torch.bmm(x, ws.view(-1, NUM_FEATURES + 1, NUM_CLASSES)), dim=-1)
        resid.scatter_add_(-1, y.unsqueeze(-1), -torch.ones_like(resid[..., :1]))
        resid = resid * weights
        return torch.bmm(x.transpose(1, 2), resid).reshape(len(x), -1) + self.l2 * ws

    # -- evaluation -----------------------------------------------------------------------
    def objective(self, w: torch.Tensor) -> float:
        """f(w) = mean training CE over all UEs + (l2/2)||w||^2."""
        return float(
            ce_many(w.to(_DT).unsqueeze(0), self.x_train, self.y_train, False, *self.ce_constants("train"))[0][0]
            + 0.5 * self.l2 * w.to(_DT).dot(w.to(_DT))
        )

    def local_objective(self, w: torch.Tensor, ue: int) -> float:
        """f_n(w) for UE ``ue``."""
        x, y = self.ue_data(ue)
        w = w.to(_DT)
        return float(ce_many(w.unsqueeze(0), x, y)[0][0] + 0.5 * self.l2 * w.dot(w))

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        return self.evaluate_many(w.unsqueeze(0))[0]

    def evaluate_many(self, ws: torch.Tensor) -> list[dict[str, float]]:
        """Metrics for each row of ``ws [M, 610]``: chunked batched matmuls, no per-row loop.

        ``loss``/``accuracy``: plain CE / top-1 on the pooled test split (no L2 term);
        ``train_loss`` = f(w); ``gap`` = f(w) - f*; ``dist`` = ||w - w*||.
        """
        ws = ws.to(_DT)
        test_ce, test_acc = ce_many(ws, self.x_test, self.y_test, True, *self.ce_constants("test"))
        train_ce, _ = ce_many(ws, self.x_train, self.y_train, False, *self.ce_constants("train"))
        f = train_ce + 0.5 * self.l2 * (ws * ws).sum(1)
        dist = (ws - self.w_star).norm(dim=1)
        return [
            {
                "loss": float(test_ce[m]),
                "accuracy": float(test_acc[m]),
                "train_loss": float(f[m]),
                "gap": float(f[m] - self.f_star),
                "dist": float(dist[m]),
            }
            for m in range(ws.shape[0])
        ]

    def xty(self, split: str) -> torch.Tensor:
        """``x_t_onehot`` of the pooled ``"train"`` or ``"test"`` split (cached: ``ce_constants``)."""
        return self.ce_constants(split)[0]

    def ce_constants(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The data constants of ``ce_many`` for the pooled ``"train"`` or ``"test"`` split:
        X^T onehot(Y) and the largest feature-row norm, cached (computed afresh should the data be on
        another device than the cached values)."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        cached = self._ce.get(split)
        if cached is None or cached[0].device != x.device:
            cached = self._ce[split] = (x_t_onehot(x, y), torch.linalg.vector_norm(x, dim=1).max())
        return cached

    def theory_constants(self) -> TheoryConstants:
        """mu = l2 (exact); L = max_n 0.5 lambda_max(X~_n^T X~_n / n) + l2 (bound); w*, f*
        (Newton-CG, float64); Gamma = f* - sum_n q_n f_n* (per-UE Newton-CG, batched over
        buckets of UEs of similar size; computed on the first call and cached)."""
        if self._theory is None:
            buckets = _size_buckets(self.counts)
            _, fn_star, lmax = local_optima(self.x_train, self.y_train, self.offsets, buckets, self.l2, NUM_CLASSES)
            gamma = self.f_star - float((self.ue_weights() * fn_star.cpu()).sum())
            L = 0.5 * float(lmax.max()) + self.l2
            self._theory = TheoryConstants(
                L=L,
                mu=self.l2,
                f_star=self.f_star,
                w_star=self.w_star.clone(),
                heterogeneity=gamma,
                sources={
                    "L": "bound: max_n 0.5*lambda_max(X~_n^T X~_n/n_n) + l2 "
                    "(softmax-CE Hessian <= 0.5 I per example; X~ = [X, 1])",
                    "mu": "exact: l2 (CE is convex, L2 on all of w incl. bias)",
                    "f_star": "numeric: Newton-CG in float64, ||grad f|| <= 1e-10",
                    "w_star": "numeric: Newton-CG in float64, ||grad f|| <= 1e-10",
                    "heterogeneity": "numeric: f* - sum_n q_n min f_n (per-UE Newton-CG)",
                },
            )
        return self._theory


def _size_buckets(sizes: list[int], slack: float = 1.25) -> list[torch.Tensor]:
    """Indices of ``sizes`` grouped so that, within a group, the largest size is at most ``slack``
    times the smallest (padding wastes at most 25 %) and the padded features stay within
    ``CHUNK_LOGITS`` elements."""
    order = sorted(range(len(sizes)), key=sizes.__getitem__)
    buckets, first = [], 0
    for i in range(1, len(order) + 1):
        if i < len(order):
            small, big = sizes[order[first]], sizes[order[i]]
            fits = (i + 1 - first) * big * (NUM_FEATURES + 1) <= CHUNK_LOGITS
            if big <= slack * small and fits:
                continue
        buckets.append(torch.tensor(order[first:i], dtype=torch.long))
        first = i
    return buckets


def _padded_rows(starts: list[int], sizes: list[int],
                 picks: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded training-row indices ``[m, B]`` of m UEs' minibatches (``picks``: rows into a
    UE's data, None for all ``sizes[i]`` from ``starts[i]``) and their 0/1 mask, built without a
    Python loop over the UEs' rows (at 10,000 UEs that loop cost 0.2 s a round)."""
    col = torch.arange(max(sizes))
    real = col < torch.tensor(sizes).unsqueeze(1)
    idx = torch.where(real, torch.tensor(starts).unsqueeze(1) + col, 0)
    if any(p is not None for p in picks):
        idx[real] = torch.cat([idx[i, :n] if p is None else p + a
                               for i, (a, n, p) in enumerate(zip(starts, sizes, picks, strict=True))])
    return idx, real.to(_DT)


def _grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """Gradient ``[610]`` of mean CE on ``(x [B, 61], y [B])`` + (l2/2)||w||^2."""
    wm = w.view(NUM_FEATURES + 1, NUM_CLASSES)
    resid = torch.softmax(x @ wm, dim=1)
    resid[torch.arange(len(y), device=y.device), y] -= 1.0
    return (x.T @ resid).reshape(-1) / len(y) + l2 * w


def _minimise(
    x: torch.Tensor, y: torch.Tensor, l2: float, tol: float = 1e-10, max_newton: int = 100
) -> tuple[torch.Tensor, float]:
    """argmin and min of mean CE(x, y) + (l2/2)||w||^2, ||grad|| <= ``tol``: Newton-CG with
    Armijo backtracking, CG preconditioned by (X~^T X~ / R) kron (class curvature) + l2 I
    (``synthetic_optima.minimise``)."""
    return minimise(x, y, l2, NUM_CLASSES, tol, max_newton)
