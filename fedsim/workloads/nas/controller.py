"""The TabNAS controller (Yang et al., NeurIPS 2022): a factorised categorical policy over L layer widths,
rejection sampling from π_θ(·|V), the Monte-Carlo estimate P̂(V) of the feasible mass and the
REINFORCE step with the rejection-sampling correction. Pure torch, no workload.

Shapes: θ is ``[L, C]`` (one row of logits per decision, all decisions with C choices); an
architecture is an index tensor ``[..., L]`` (choice index per layer). A feasibility test is a
vectorised callable ``idx [n, L] -> bool [n]`` (T(y) ≤ T0 needs no data).

    π_θ(y) = Π_l softmax(θ_l)[y_l],   P(V) = Σ_{z ∈ V} π_θ(z),   π_θ(y|V) = π_θ(y) / P(V)
    P̂(V) = (1/N) Σ_k [π_θ(z_k) / sg(π_θ(z_k))] 1[z_k ∈ V],   z_k ~ π_θ i.i.d.
    ℒ = −(Q − Q̄) [log π_θ(y) − log P̂(V)]

P̂(V)'s value is the feasible fraction of the z_k and its gradient is (1/N) Σ_k 1[z_k∈V] ∇log π_θ(z_k),
so ∇log P̂(V) = Σ_k 1[z_k∈V] ∇log π_θ(z_k) / Σ_k 1[z_k∈V], TabNAS's estimate of ∇log P(V).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

FeasibleFn = Callable[[torch.Tensor], torch.Tensor]  # idx [n, L] (long) -> bool [n]

MAX_DRAWS = 10_000  # rejection-sampling attempts before V is declared (practically) empty
_BATCH = 64  # draws per vectorised rejection batch


def log_policy(theta: torch.Tensor) -> torch.Tensor:
    """``log softmax(θ_l)`` per layer, ``[L, C]``."""
    return torch.log_softmax(theta, dim=-1)


def log_prob(theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``log π_θ(y)`` for architectures ``idx [..., L]`` -> ``[...]`` (differentiable in θ)."""
    lp = log_policy(theta)
    return lp[torch.arange(lp.shape[0]), idx].sum(-1)


def sample(theta: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` i.i.d. architectures ``y ~ π_θ``, ``[n, L]`` long."""
    if not bool(torch.isfinite(theta).all()):
        raise ValueError("controller logits θ are not finite (the model diverged, e.g. under channel noise)")
    probs = torch.softmax(theta.detach().to(torch.float64), dim=-1)
    return torch.multinomial(probs, n, replacement=True, generator=generator).T.contiguous()


def rejection_sample(theta: torch.Tensor, feasible: FeasibleFn, generator: torch.Generator, *,
                     max_draws: int = MAX_DRAWS) -> tuple[torch.Tensor, int]:
    """One ``y ~ π_θ(·|V)``: the first feasible draw of an i.i.d. stream ``y ~ π_θ`` (drawn in
    vectorised batches, which is the same as repeating one draw until T(y) ≤ T0).

    Returns ``(idx [L], draws)`` where ``draws`` counts the attempts up to the accepted one.
    Raises ``RuntimeError`` after ``max_draws`` infeasible draws (V empty or P(V) ≈ 0)."""
    drawn = 0
    while drawn < max_draws:
        n = min(_BATCH, max_draws - drawn)
        z = sample(theta, n, generator)
        ok = feasible(z).nonzero()
        if len(ok):
            i = int(ok[0, 0])
            return z[i], drawn + i + 1
        drawn += n
    raise RuntimeError(f"rejection sampling found no feasible architecture in {max_draws} draws: the feasible set V "
                       "is empty or has negligible probability under the controller; relax the resource constraint")


def mc_feasible_mass(theta: torch.Tensor, z: torch.Tensor, z_feasible: torch.Tensor) -> torch.Tensor:
    """P̂(V) over the last sample axis: ``z [..., N, L]``, ``z_feasible [..., N]`` -> ``[...]``.

    Importance weights π/sg(π) equal 1 in value, so P̂ is the feasible fraction; its gradient is
    the unbiased (1/N) Σ 1[z∈V] ∇log π(z)."""
    lp = log_prob(theta, z)
    return (torch.exp(lp - lp.detach()) * z_feasible.to(lp.dtype)).mean(-1)


def surrogate_loss(theta: torch.Tensor, y: torch.Tensor, advantage: float, z: torch.Tensor,
                   z_feasible: torch.Tensor) -> torch.Tensor:
    """ℒ = −A [log π_θ(y) − log P̂(V)] with A = Q − Q̄ a constant (sg).

    When none of the N samples is feasible, P̂(V) = 0 and ∇log P̂ is undefined: the correction
    term is dropped for that step (plain REINFORCE on the rejection-sampled y)."""
    term = log_prob(theta, y)
    if bool(z_feasible.any()):
        term = term - torch.log(mc_feasible_mass(theta, z, z_feasible))
    return -float(advantage) * term


def reinforce_step(theta: torch.Tensor, y: torch.Tensor, advantage: float, z: torch.Tensor,
                   z_feasible: torch.Tensor, lr: float) -> torch.Tensor:
    """One plain-SGD step ``θ − lr ∇ℒ``; returns a new detached ``[L, C]`` tensor.

    SGD (not TabNAS's Adam) because the step is then linear in the advantage: averaging
    the θ of UEs that share θ, y and z equals one step with the averaged advantage."""
    th = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(surrogate_loss(th, y, advantage, z, z_feasible), th)
    return (theta.detach() - lr * g).detach()


def ema_update(num: float, den: float, reward: float, momentum: float = 0.9) -> tuple[float, float]:
    """Bias-corrected EMA baseline: ``num ← m·num + (1−m)·Q``, ``den ← m·den + (1−m)``; Q̄ = num/den."""
    return momentum * num + (1.0 - momentum) * reward, momentum * den + (1.0 - momentum)


def enumerate_space(num_layers: int, num_choices: int) -> torch.Tensor:
    """Every architecture, ``[C^L, L]`` long, in lexicographic order."""
    axes = [torch.arange(num_choices)] * num_layers
    return torch.cartesian_prod(*axes).reshape(-1, num_layers)


def feasible_mass(theta: torch.Tensor, all_idx: torch.Tensor, all_feasible: torch.Tensor) -> torch.Tensor:
    """Exact P(V) = Σ_{z∈V} π_θ(z) by enumeration (differentiable in θ)."""
    return torch.exp(log_prob(theta, all_idx[all_feasible])).sum()


def most_probable(theta: torch.Tensor, candidates: torch.Tensor, ok: torch.Tensor) -> torch.Tensor | None:
    """The candidate ``[L]`` with the largest π_θ among those with ``ok`` (None if none is ok)."""
    if not bool(ok.any()):
        return None
    lp = log_prob(theta.detach(), candidates).masked_fill(~ok, -torch.inf)
    return candidates[int(lp.argmax())]


def entropy(theta: torch.Tensor) -> float:
    """Entropy of the factorised policy π_θ (nats; L log C when uniform)."""
    lp = log_policy(theta.detach())
    return float(-(lp.exp() * lp).sum())
