"""The metrics kernel of synthetic-logreg: mean cross-entropy and top-1 accuracy of many models on
one data split, ``ce_many``. Every metric of the workload goes through it, and a server-free run
scores every UE-held model each round, so at 20 UEs it is about half of a run's CPU time.

Model: ``w`` is ``W~ [61, 10]`` row-major (60 features and a bias row), as in ``synthetic.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_FEATURES = 60
NUM_CLASSES = 10
_DT = torch.float64
# Elements (float64) per block of logits off CPU, ~32 MB; also per temporary of the gathered minibatch
# features in synthetic.SyntheticLogreg.stochastic_grad_many.
CHUNK_LOGITS = 1 << 22
# On CPU: blocks of logits of ~2 MB (cache-sized), and models per GEMM.
BLOCK_LOGITS = 1 << 18
MODELS_PER_GEMM = 16
# Below this bound on |logit| the log-sum-exp needs no shift: exp(600) ~ 4e260 and exp(-600) ~
# 3e-261 are normal float64 numbers, and ten of the first still sum below the float64 maximum.
NO_SHIFT = 600.0


def x_t_onehot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``X^T onehot(Y)`` ``[61, 10]``: a constant of the data set, and at 10,000 UEs costlier than
    one model's logits (the one-hot is ``[R, 10]`` float64), hence cached by the workload."""
    return x.T @ F.one_hot(y, NUM_CLASSES).to(_DT)


def ce_many(
    ws: torch.Tensor, x: torch.Tensor, y: torch.Tensor, with_accuracy: bool = True,
    xty: torch.Tensor | None = None, x_norm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean CE ``[M]`` and accuracy ``[M]`` (or None) of models ``ws [M, 610]`` on
    ``(x [R, 61], y [R])``; ``xty`` (``x_t_onehot(x, y)``) and ``x_norm`` (``max_r ||x_r||``) are
    constants of the data that the caller may have cached.

    Cost O(M R C); the GEMM and the R*M*C exponentials dominate. The picked logits
    sum_r x_r^T W[:, y_r] are summed in closed form as <W, X^T onehot(Y)>. The logits are made
    ``MODELS_PER_GEMM`` models at a time as ``[models, classes, rows]``, in blocks of rows of at
    most ``BLOCK_LOGITS`` elements on CPU (``CHUNK_LOGITS`` elsewhere), so that a block stays in
    cache; the log-sum-exp and the accuracy work in place on contiguous rows. Where Cauchy-Schwarz
    bounds every logit of a chunk of models below ``NO_SHIFT`` (|x_r . w_c| <= ||x_r|| ||w_c||),
    the log-sum-exp takes no max shift (two passes over the logits instead of four). Block sums and
    the shift make the mean CE differ from one full-height ``logsumexp`` in the last bits (~1e-16
    relative); the accuracy is an exact count with ``argmax``'s tie rule."""
    m_all, r = ws.shape[0], x.shape[0]
    wm = ws.reshape(m_all, NUM_FEATURES + 1, NUM_CLASSES)
    xty = x_t_onehot(x, y) if xty is None else xty
    x_norm = torch.linalg.vector_norm(x, dim=1).max() if x_norm is None else x_norm
    picked = (wm * xty).sum((1, 2)) / r
    bounded = (x_norm * torch.linalg.vector_norm(wm, dim=1).amax(1) < NO_SHIFT).tolist()  # NaN: False
    lse = torch.zeros(m_all, dtype=_DT, device=ws.device)
    hits = torch.zeros(m_all, dtype=torch.long, device=ws.device)
    block = BLOCK_LOGITS if x.device.type == "cpu" else CHUNK_LOGITS
    for s in range(0, m_all, MODELS_PER_GEMM):
        chunk = wm[s : s + MODELS_PER_GEMM]
        rows_t = chunk.transpose(1, 2).reshape(len(chunk) * NUM_CLASSES, -1)  # [m*10, 61]: one GEMM
        unshifted = all(bounded[s : s + len(chunk)])
        rows = max(1, block // rows_t.shape[0])
        for a in range(0, r, rows):
            logits = (rows_t @ x[a : a + rows].T).view(len(chunk), NUM_CLASSES, -1)
            part, hit = _lse_and_hits(logits, y[a : a + rows], with_accuracy, unshifted)
            lse[s : s + len(chunk)] += part
            hits[s : s + len(chunk)] += hit
    return lse / r - picked, (hits.to(_DT) / r if with_accuracy else None)


def _lse_and_hits(logits: torch.Tensor, y: torch.Tensor, with_accuracy: bool,
                  unshifted: bool) -> tuple[torch.Tensor, torch.Tensor | int]:
    """Per model, the summed log-sum-exp over classes of ``logits [m, C, R]`` (overwritten) and the
    rows whose ``argmax`` over classes is ``y`` (0 without ``with_accuracy``); ``unshifted``: every
    |logit| is known to be below ``NO_SHIFT``.

    Hits are counted by comparisons: the true class's logit is at least every other and above those
    of smaller classes (argmax's first-index tie rule). A block with a non-finite row maximum takes
    ``torch.logsumexp`` and ``argmax``, whose rules for inf and NaN the comparisons do not share."""
    top = None if unshifted else logits.amax(1, keepdim=True)
    if top is not None and not bool(torch.isfinite(top).all()):
        hit = (logits.transpose(1, 2).argmax(-1) == y).sum(1) if with_accuracy else 0
        return torch.logsumexp(logits, 1).sum(1), hit
    hit = 0
    if with_accuracy:
        true = logits.gather(1, y.view(1, 1, -1).expand(len(logits), 1, -1))
        before = torch.arange(NUM_CLASSES, device=y.device).view(1, -1, 1) < y.view(1, 1, -1)
        hit = ((logits < true) | ((logits == true) & ~before)).all(1).sum(1)
    if top is None:
        return logits.exp_().sum(1).log_().sum(1), hit
    return logits.sub_(top).exp_().sum(1).log_().add_(top.squeeze(1)).sum(1), hit
