"""Dice of the seg-unet workload against hand counts, and the soft Dice loss's gradient against
finite differences (torch.autograd.gradcheck, float64)."""

from __future__ import annotations

import math

import pytest
import torch

from fedsim.workloads.seg import dice

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hard_dice_matches_a_hand_count() -> None:
    # two 2x3 slices. Slice 0 has no RV (class 3) in the truth; slice 1 has no LV.
    target = torch.tensor([[[0, 1, 1], [2, 2, 0]],
                           [[3, 3, 0], [2, 0, 0]]])
    pred = torch.tensor([[[0, 1, 2], [2, 2, 3]],
                         [[3, 0, 0], [2, 2, 1]]])
    # by hand over all 12 pixels:
    # LV (1): truth at (0,0,1),(0,0,2); predicted (0,0,1),(1,1,2): |P∩G| = 1, |P| = 2, |G| = 2 -> 2/4
    # myo (2): truth (0,1,0),(0,1,1),(1,1,0); predicted (0,0,2),(0,1,0),(0,1,1),(1,1,0),(1,1,1): 3, 5, 3 -> 6/8
    # RV (3): truth (1,0,0),(1,0,1); predicted (0,1,2),(1,0,0): 1, 2, 2 -> 2/4
    counts = dice.dice_counts(pred, target, 4)
    assert counts[1:].tolist() == [[1, 2, 2], [3, 5, 3], [1, 2, 2]]
    d = dice.dice_dict(counts)
    assert d["dice_lv"] == pytest.approx(0.5)
    assert d["dice_myo"] == pytest.approx(0.75)
    assert d["dice_rv"] == pytest.approx(0.5)
    assert d["dice"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    # background (0): truth (0,0,0),(0,1,2),(1,0,2),(1,1,1),(1,1,2); predicted (0,0,0),(1,0,1),(1,0,2): 2, 3, 5
    assert float(dice.dice_from_counts(counts)[0]) == pytest.approx(4 / 8)


def test_absent_and_unpredicted_class_has_dice_one_and_false_positives_give_zero() -> None:
    target = torch.zeros(1, 2, 2, dtype=torch.int64)
    pred = torch.tensor([[[0, 0], [0, 1]]])
    d = dice.dice_dict(dice.dice_counts(pred, target, 4))
    assert d["dice_lv"] == 0.0  # predicted, absent: 0 / (1 + 0)
    assert d["dice_myo"] == 1.0 and d["dice_rv"] == 1.0  # absent, not predicted: 0/0 := 1


def test_soft_dice_loss_by_hand() -> None:
    # one slice of three pixels, classes {0, 1}: logits give p_1 = 0.75, 0.25, 0.25; truth 1, 0, 0
    z = math.log(3.0)
    logits = torch.tensor([[[[0.0, 0.0, 0.0]], [[z, -z, -z]]]], dtype=torch.float64)
    target = torch.tensor([[[1, 0, 0]]])
    eps = 1.0
    # class 1 only (background is not in the loss): sum p g = 0.75, sum p = 1.25, sum g = 1
    expected = 1 - (2 * 0.75 + eps) / (1.25 + 1 + eps)
    got = dice.soft_dice_loss(dice.soft_dice_sums(logits, target), eps)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    ce = -math.log(0.75)  # every pixel puts 0.75 on its true class
    assert float(dice.seg_loss(logits, target, 0.5, eps)) == pytest.approx(ce + 0.5 * expected, rel=1e-12)


def test_soft_dice_gradient_passes_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (2, 3, 5), generator=g)
    target[0] = torch.where(target[0] == 3, 0, target[0])  # a class absent from one slice
    assert torch.autograd.gradcheck(lambda z: dice.soft_dice_loss(dice.soft_dice_sums(z, target)), (logits,))
    assert torch.autograd.gradcheck(lambda z: dice.seg_loss(z, target, 1.0), (logits,))
