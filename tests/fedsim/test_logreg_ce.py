"""``synthetic_ce.ce_many``, the kernel behind every synthetic-logreg metric, against plain torch:
``F.cross_entropy`` and ``argmax`` per model, over chunk and block boundaries, ties and
non-finite models."""

import pytest
import torch
import torch.nn.functional as F

from fedsim.workloads.synthetic_ce import BLOCK_LOGITS, MODELS_PER_GEMM, NO_SHIFT, NUM_CLASSES, NUM_FEATURES, ce_many

D64 = torch.float64


def _data(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, NUM_FEATURES + 1, generator=g, dtype=D64)
    x[:, -1] = 1.0
    return x, torch.randint(0, NUM_CLASSES, (rows,), generator=g)


def _reference(ws: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per model, independently: mean CE by ``F.cross_entropy`` and top-1 by ``argmax``."""
    logits = [x @ w.view(NUM_FEATURES + 1, NUM_CLASSES) for w in ws]
    return ([float(F.cross_entropy(z, y)) for z in logits],
            [float((z.argmax(1) == y).double().mean()) for z in logits])


def test_many_models_across_chunks_and_blocks():
    models = 2 * MODELS_PER_GEMM + 5
    rows = 2 * (BLOCK_LOGITS // (MODELS_PER_GEMM * NUM_CLASSES)) + 7  # three row blocks
    x, y = _data(rows)
    g = torch.Generator().manual_seed(1)
    ws = torch.randn(models, NUM_CLASSES * (NUM_FEATURES + 1), generator=g, dtype=D64)
    ws[3] *= 100.0  # logits in the thousands: the shift must keep exp finite
    aimed = ws[MODELS_PER_GEMM + 4].view(NUM_FEATURES + 1, NUM_CLASSES)
    aimed[:, 2] = 800.0 * x[0] / x[0].dot(x[0])  # one class's logit on row 0 is 800, the others small
    bound = x.norm(dim=1).max() * ws.view(models, NUM_FEATURES + 1, NUM_CLASSES).norm(dim=1).amax(1)
    assert bound[3] > NO_SHIFT and bound[MODELS_PER_GEMM + 4] > NO_SHIFT  # chunks 0 and 1 shift
    assert bool((bound[2 * MODELS_PER_GEMM :] < NO_SHIFT).all())  # chunk 2 does not: both paths run
    ce, acc = ce_many(ws, x, y)
    ref_ce, ref_acc = _reference(ws, x, y)
    assert ce.tolist() == pytest.approx(ref_ce, rel=1e-12)
    assert acc.tolist() == ref_acc  # exact counts
    assert ce_many(ws, x, y, with_accuracy=False)[1] is None


def test_ties_follow_argmax_first_index():
    """Tied logits (a zero model, a model with repeated class columns, integer logits) are
    counted as ``argmax`` counts them: the first largest class wins."""
    x, y = _data(500, seed=2)
    x = x.round()  # integer features, integer weights: exact ties within a row
    cols = torch.randint(-2, 3, (NUM_FEATURES + 1, NUM_CLASSES), generator=torch.Generator().manual_seed(3))
    repeated = cols.clone().to(D64)
    repeated[:, 5:] = repeated[:, :5]  # classes c and c + 5 always tie
    ws = torch.stack([torch.zeros(NUM_CLASSES * (NUM_FEATURES + 1), dtype=D64), repeated.reshape(-1),
                      cols.to(D64).reshape(-1)])
    ce, acc = ce_many(ws, x, y)
    ref_ce, ref_acc = _reference(ws, x, y)
    assert acc.tolist() == ref_acc
    assert acc[0] == pytest.approx(float((y == 0).double().mean()))  # all tied: class 0 wins
    assert ce.tolist() == pytest.approx(ref_ce, rel=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_models_keep_argmax_rules(bad):
    x, y = _data(300, seed=4)
    g = torch.Generator().manual_seed(5)
    ws = torch.randn(3, NUM_CLASSES * (NUM_FEATURES + 1), generator=g, dtype=D64)
    ws[1, 7] = bad  # one class weight: that class's logits are non-finite
    ce, acc = ce_many(ws, x, y)
    ref_ce, ref_acc = _reference(ws, x, y)
    assert acc.tolist() == ref_acc
    assert not torch.isfinite(ce[1])
    assert [ce[0].item(), ce[2].item()] == pytest.approx([ref_ce[0], ref_ce[2]], rel=1e-12)
