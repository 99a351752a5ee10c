"""DAAS in ``nas-gdas``: joint architecture + augmentation-policy search (DAAS: Wang et al.,
arXiv 2109.15273, made federated), switched on by ``workload.augment.policy = "search"``.

Flat vector ``w = [θ | α | β]``: supernet weights, architecture logits (GDAS, :mod:`.gdas`) and the
augmentation-policy logits (:mod:`fedsim.workloads.policy`); all three are averaged by the
strategy and channel. Local to the UE: the Gumbel noise and policy samples (recomputed from their
streams), α's Adam moments and the REINFORCE baseline / advantage scale (``state``), the train /
validation split. Per local step s on UE k (generators ``"gumbel"`` and ``"augment"``, key (s, k)):

    τ_i ~ p_β;  x̃ = τ(x_tr)
    hard  = GumbelST(α, T);   θ' = θ − η_s ∇_θ CE(f(x̃; θ, hard), y_tr)          # augmented batch
    hard' = GumbelST(α, T);   α ← Adam(∇_α CE(f(x_va; θ', hard'), y_va) + λ α)   # clean validation batch
    R = CE(f(x_va; θ, hard'), y_va) − CE(f(x_va; θ', hard'), y_va)              # improvement of the weight step
    β ← β − η_β ĝ_β  (REINFORCE with baseline, :class:`~fedsim.workloads.augsearch.ReinforceStats`)

The loop is ``GdasWorkload.local_train``. The reward is measured on the α step's validation
batch along its path hard' (one extra forward pass, no gradient); β gets no pathwise gradient.
Before ``arch_warmup`` (or with the ``random`` strategy) α stays put; θ and β still learn.

The search's result is the found PAIR: ``{"genotype": …, "policy": {"top": […], "logits": […]}}``;
``retrain_config`` turns it into the genotype's child trained from scratch on images augmented by
the frozen policy (``augment.policy = "fixed"``, ``augment.logits`` = the learned β).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from fedsim.workloads.augsearch import AugmentSection
from fedsim.workloads.policy import PolicySpace, make_space

TOP_SUBPOLICIES = 5  # sub-policies listed in the search result (DAAS reports the top k by p_β)


class DaasAugmentSection(AugmentSection):
    """``nas-gdas``'s augmentation policy: off by default; ``search`` makes the run a DAAS search."""

    policy: Literal["none", "search", "fixed", "uniform"] = Field(
        "none", description="none: clean images; search: learn β jointly with α (DAAS); fixed: the frozen "
                            "policy `logits`; uniform: the fixed uniform policy")
    logits: tuple[float, ...] | None = Field(
        None, description="policy='fixed': the frozen β (length = the space's K + 2K + 2KM), e.g. a search's result")
    top_k: int | None = Field(
        None, ge=1, description="policy='fixed': sample only the top_k most likely sub-policies (renormalised); "
                                "None = all K. A search passes it on to its retraining")
    val_batch_size: None = Field(  # type: ignore[assignment]
        None, description="unused: nas-gdas measures the reward on the α step's batch (workload.val_batch_size)")

    @model_validator(mode="after")
    def _check_policy(self) -> DaasAugmentSection:
        space = self.space()  # validates ops / num_subpolicies
        if self.policy == "fixed":
            if self.logits is None or len(self.logits) != space.num_logits:
                got = "none" if self.logits is None else f"{len(self.logits)}"
                raise ValueError(f"augment.policy='fixed' needs augment.logits of length {space.num_logits} "
                                 f"(K + 2K + 2KM for K={self.num_subpolicies}, M={self.magnitude_bins}), got {got}")
            if not all(math.isfinite(v) for v in self.logits):
                raise ValueError("augment.logits must be finite numbers")
        elif self.logits is not None:
            raise ValueError(f"augment.logits is only used with augment.policy='fixed' (policy is {self.policy!r})")
        if self.top_k is not None and self.top_k > self.num_subpolicies:
            raise ValueError(f"augment.top_k={self.top_k} exceeds augment.num_subpolicies={self.num_subpolicies}")
        return self

    def space(self) -> PolicySpace:
        return make_space(tuple(self.ops), self.num_subpolicies, self.magnitude_bins, self.space_seed)


def frozen_logits(section: DaasAugmentSection, space: PolicySpace) -> torch.Tensor:
    """The fixed policy's logits ``[P]`` (float32): ``logits`` (``uniform``: zeros) with every
    sub-policy outside the ``top_k`` most likely ones masked out (−inf)."""
    beta = space.init_logits() if section.logits is None else torch.tensor(section.logits, dtype=torch.float32)
    if section.top_k is None or section.top_k >= space.num_subpolicies:
        return beta
    cat = beta[: space.num_subpolicies]  # β_cat is the first K entries (PolicySpace.split)
    drop = torch.argsort(cat, descending=True, stable=True)[section.top_k :]
    cat[drop] = -math.inf
    return beta


def policy_report(space: PolicySpace, beta: torch.Tensor) -> dict[str, Any]:
    """The found policy, JSON-able: its top sub-policies as text and the logits β (6 decimals)."""
    return {"top": space.describe(beta, TOP_SUBPOLICIES),
            "logits": [round(float(v), 6) for v in beta.detach().tolist()]}


def split_pair(found: dict[str, Any]) -> tuple[Any, list[float] | None]:
    """``(genotype, policy logits or None)`` of a search result's ``architecture`` (the pair of a
    joint search, or a plain genotype)."""
    if isinstance(found, dict) and set(found) == {"genotype", "policy"}:
        policy = found["policy"]
        if not isinstance(policy, dict) or not isinstance(policy.get("logits"), list):
            raise ValueError("architecture['policy'] must be a table with a 'logits' list (a DAAS search result)")
        return found["genotype"], policy["logits"]
    return found, None
