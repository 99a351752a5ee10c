"""A categorical augmentation policy and its REINFORCE estimator (AutoAugment-style
sub-policies; score-function gradient of a per-batch validation reward, as in DAAS's policy search).

The search space holds K sub-policies, each a fixed pair of ops ``(o1, o2)``; the policy
β (one flat logit vector, ``[P]`` with P = K + 2K + 2KM) parameterises

    s ~ Cat(softmax(β_cat)),   a_j ~ Bernoulli(σ(β_p[s, j])),   m_j ~ Cat(softmax(β_m[s, j]))

with M magnitude bins (bin m means magnitude (m + 1) / M). All choices are discrete, so β
gets only score-function gradients:

    ĝ_β = −(1/B) Σ_i A_i ∇_β log p_β(τ_i),   A_i = R_i − b,   b ← γ b + (1 − γ) R

(ĝ is the gradient of the *loss*: descend it). With a per-sample reward this is an unbiased
estimate of −∇_β E[R] for any baseline b that does not depend on the samples; with one reward
per batch (the workload's case) it estimates −∇_β E[R] / B (the 1/B folds into the step size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.workloads.augment import OP_NAMES

STAGES = 2  # ops per sub-policy


@dataclass(frozen=True)
class PolicySample:
    """Sampled policy choices for a batch of B images.

    ``sub [B]`` sub-policy ids, ``applied [B, 2]`` bool, ``bins [B, 2]`` magnitude bins.
    """

    sub: torch.Tensor
    applied: torch.Tensor
    bins: torch.Tensor


@dataclass(frozen=True)
class PolicySpace:
    """K sub-policies (pairs of op indices into ``OP_NAMES``) with M magnitude bins each."""

    pairs: tuple[tuple[int, int], ...]
    num_bins: int

    @property
    def num_subpolicies(self) -> int:
        return len(self.pairs)

    @property
    def num_logits(self) -> int:
        """P = K (sub-policy) + 2K (apply prob) + 2KM (magnitude)."""
        k = self.num_subpolicies
        return k + STAGES * k + STAGES * k * self.num_bins

    def split(self, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views ``(β_cat [K], β_p [K, 2], β_m [K, 2, M])`` of ``beta [P]``."""
        k, m = self.num_subpolicies, self.num_bins
        cat, p, mag = beta.split([k, STAGES * k, STAGES * k * m])
        return cat, p.view(k, STAGES), mag.view(k, STAGES, m)

    def init_logits(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """All-zero logits: uniform over sub-policies and bins, each op applied with prob 1/2."""
        return torch.zeros(self.num_logits, dtype=dtype)

    def sample(self, beta: torch.Tensor, batch: int, gen: torch.Generator) -> PolicySample:
        """Draw τ_i ~ p_β for i < ``batch`` (no gradient)."""
        with torch.no_grad():  # on CPU, where the generator lives: the logits are tiny
            cat, p, mag = self.split(beta.detach().to("cpu", torch.float64))
            sub = torch.multinomial(torch.softmax(cat, 0), batch, replacement=True, generator=gen)
            u = torch.rand(batch, STAGES, generator=gen, dtype=torch.float64)
            applied = u < torch.sigmoid(p[sub])
            probs = torch.softmax(mag[sub], -1).reshape(batch * STAGES, self.num_bins)
            bins = torch.multinomial(probs, 1, generator=gen).view(batch, STAGES)
        return PolicySample(sub, applied, bins)

    def log_prob(self, beta: torch.Tensor, s: PolicySample) -> torch.Tensor:
        """log p_β(τ_i), ``[B]``, differentiable in ``beta``."""
        cat, p, mag = self.split(beta)
        lp = F.log_softmax(cat, 0)[s.sub]
        pl = p[s.sub]  # [B, 2]
        lp = lp + torch.where(s.applied, F.logsigmoid(pl), F.logsigmoid(-pl)).sum(1)
        lm = F.log_softmax(mag[s.sub], -1).gather(-1, s.bins.unsqueeze(-1)).squeeze(-1)  # [B, 2]
        return lp + lm.sum(1)

    def ops(self, s: PolicySample) -> torch.Tensor:
        """Op index of each stage, ``[B, 2]`` long."""
        return torch.tensor(self.pairs, dtype=torch.long)[s.sub]

    def magnitudes(self, s: PolicySample) -> torch.Tensor:
        """Magnitude in (0, 1] of each stage, ``[B, 2]`` float32: bin m -> (m + 1) / M."""
        return (s.bins.to(torch.float32) + 1) / self.num_bins

    def subpolicy_probs(self, beta: torch.Tensor) -> torch.Tensor:
        """softmax(β_cat), ``[K]``."""
        return torch.softmax(self.split(beta.detach().to("cpu", torch.float64))[0], 0)

    def describe(self, beta: torch.Tensor, top: int = 3) -> list[str]:
        """The ``top`` most likely sub-policies as text, e.g. ``"0.31: (rotate, p=0.62, m=0.8) -> ..."``."""
        cat, p, mag = self.split(beta.detach().to("cpu", torch.float64))
        pi = torch.softmax(cat, 0)
        out = []
        for k in torch.argsort(pi, descending=True)[:top].tolist():
            stages = []
            for j in range(STAGES):
                m = (int(mag[k, j].argmax()) + 1) / self.num_bins
                stages.append(f"({OP_NAMES[self.pairs[k][j]]}, p={float(torch.sigmoid(p[k, j])):.2f}, m={m:.2f})")
            out.append(f"{float(pi[k]):.2f}: " + " -> ".join(stages))
        return out


def make_space(ops: tuple[str, ...], num_subpolicies: int, num_bins: int, space_seed: int = 0) -> PolicySpace:
    """K distinct ordered op pairs ``(o1, o2)``, o1 ≠ o2, drawn from ``ops`` by a seeded shuffle.

    The space is a fixed function of (ops, K, M, space_seed), independent of the experiment
    seed, so every run and every UE search the same sub-policies.
    """
    bad = [o for o in ops if o not in OP_NAMES]
    if bad:
        raise ValueError(f"unknown augmentation ops {bad}; choose from {', '.join(OP_NAMES)}")
    idx = [OP_NAMES.index(o) for o in ops]
    pairs = [(a, b) for a in idx for b in idx if a != b]
    if not 1 <= num_subpolicies <= len(pairs):
        raise ValueError(f"num_subpolicies must be in 1..{len(pairs)} for {len(ops)} ops")
    order = np.random.default_rng(space_seed).permutation(len(pairs))
    return PolicySpace(tuple(pairs[i] for i in order[:num_subpolicies]), num_bins)


def reinforce_grad(
    space: PolicySpace, beta: torch.Tensor, sample: PolicySample, advantage: torch.Tensor | float
) -> torch.Tensor:
    """ĝ_β = −(1/B) Σ_i A_i ∇_β log p_β(τ_i), ``[P]``; ``advantage`` is a scalar or ``[B]``."""
    b = beta.detach().to("cpu", torch.float64).requires_grad_(True)  # the sample lives on CPU
    lp = space.log_prob(b, sample)
    adv = torch.as_tensor(advantage, dtype=torch.float64).cpu()
    (g,) = torch.autograd.grad(-(adv * lp).mean(), b)
    return g.to(beta.device, beta.dtype)


def update_baseline(baseline: float, reward: float, decay: float) -> float:
    """Moving-average baseline b ← γ b + (1 − γ) R."""
    return decay * baseline + (1.0 - decay) * reward


def entropy(space: PolicySpace, beta: torch.Tensor) -> float:
    """Entropy (nats) of the sub-policy distribution softmax(β_cat); log K when uniform."""
    pi = space.subpolicy_probs(beta)
    return float(-(pi * torch.log(pi.clamp_min(1e-300))).sum())
