"""Dice scores and the Dice + cross-entropy segmentation loss.

Dice of class c between a prediction P_c and the ground truth G_c: ``2 |P_c ∩ G_c| / (|P_c| + |G_c|)``.
Counts are summed over **every pixel of every slice** of the set (or minibatch) before dividing,
so a class absent from one slice changes nothing by itself: that slice just adds no ground-truth
pixels of the class (and any false positives count against it). A class absent from the whole set
and never predicted has Dice 1 (0/0: nothing to find, nothing found).

The soft Dice of the loss uses the softmax probabilities p in place of the hard prediction:
``D_c = (2 sum p_c g_c + eps) / (sum p_c + sum g_c + eps)``, sums over the minibatch's pixels, with
``eps`` (default 1) keeping an absent class's Dice near 1 and its gradient finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: foreground classes and their metric names
CLASS_NAMES = {1: "dice_lv", 2: "dice_myo", 3: "dice_rv"}


def dice_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, 3]`` float64 counts ``(|P_c ∩ G_c|, |P_c|, |G_c|)`` of hard label maps ``pred``,
    ``target`` (same shape, int64 in 0..C-1), summed over all their pixels."""
    p = F.one_hot(pred.reshape(-1), num_classes).to(torch.float64)
    g = F.one_hot(target.reshape(-1), num_classes).to(torch.float64)
    return torch.stack([(p * g).sum(0), p.sum(0), g.sum(0)], 1)


def dice_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """``[C]`` Dice from ``[C, 3]`` counts; 1 where a class is neither present nor predicted."""
    inter, p, g = counts.unbind(1)
    denom = p + g
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1e-300), torch.ones_like(denom))


def dice_dict(counts: torch.Tensor) -> dict[str, float]:
    """Per-class Dice ``dice_lv``, ``dice_myo``, ``dice_rv`` and their mean ``dice`` (foreground)."""
    d = dice_from_counts(counts)
    out = {name: float(d[c]) for c, name in CLASS_NAMES.items()}
    out["dice"] = sum(out.values()) / len(CLASS_NAMES)
    return out


def soft_dice_sums(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[C, 3]`` soft counts ``(sum p_c g_c, sum p_c, sum g_c)`` over every pixel of ``logits``
    ``[B, C, H, W]`` (p = softmax over C) and ``target`` ``[B, H, W]``; differentiable."""
    p = logits.softmax(1)
    classes = torch.arange(logits.shape[1], device=target.device).view(1, -1, 1, 1)
    g = (target.unsqueeze(1) == classes).to(p.dtype)  # one-hot [B, C, H, W]; vmap-safe
    dims = (0, 2, 3)
    return torch.stack([(p * g).sum(dims), p.sum(dims), g.sum(dims)], 1)


def soft_dice_loss(sums: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - mean_c D_c`` over the foreground classes (1..C-1) from ``[C, 3]`` soft counts."""
    inter, p, g = sums[1:].unbind(1)
    return 1.0 - ((2 * inter + eps) / (p + g + eps)).mean()


def seg_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float, eps: float = 1.0) -> torch.Tensor:
    """Mean pixel cross-entropy plus ``dice_weight`` times the soft Dice loss (minibatch sums)."""
    ce = F.cross_entropy(logits, target)
    if dice_weight == 0:
        return ce
    return ce + dice_weight * soft_dice_loss(soft_dice_sums(logits, target), eps)
