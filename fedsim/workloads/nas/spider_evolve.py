"""Evolution of ``nas-spider``'s architecture: the control entries of the flat vector, pruning with
hysteresis and budgeted growth. Pure functions of the received vector, the round and the seed, so
every UE that receives the same vector takes the same decisions.

Control entries (after the supernet weights θ), per op k of :class:`~.spider_net.SpiderSpace`:

- ``gate`` γ_k, trained like a weight, clamped to ±``gate_clamp``;
- ``state`` s_k ∈ {0 dormant (not yet grown), 1 alive, 2 pruned (for good)};
- ``history`` the last P observations 1[γ_k > 0] of the op's gate (bits, oldest first);
- ``score`` the growth statistic the UEs measured in the last round (averaged by the strategy).

State and history bits are re-quantised on receipt (``round``/``> 0.5``), so channel noise on them
does not accumulate and flips one only when it exceeds 0.5; the gates (|γ| ≤ 0.05) are the
noise-sensitive part, and the window makes a prune need most of P observations off.

At the start of round r, on the received vector: observe (shift every alive op's window, append
whether it runs: 1[γ_k > 0], or the node's best op when all of a node's ops are off); prune (alive
ops on in fewer than ``prune_on_fraction``·P of the window); on growth
rounds grow: dormant ops in decreasing score (ties in the order of a permutation from
``torch_generator(seed, "spider-grow", r)``), each accepted only if its score is positive and the
network with it still fits every UE's budget, up to ``grow_count`` ops; a grown op gets γ =
``gate_init``, a full window of ones (a grace period of P rounds) and fresh weights from
``torch_generator(seed, "spider-init", r)``. Ops that are not alive get θ = 0 and γ = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from channels.rng import torch_generator
from fedsim.workloads.nas.spider_net import SpiderSpace

DORMANT, ALIVE, PRUNED = 0, 1, 2


@dataclass
class Control:
    """Decoded control entries: ``gates [n]`` float, ``state [n]`` int64, ``history [n, P]`` bool,
    ``scores [n]`` float."""

    gates: torch.Tensor
    state: torch.Tensor
    history: torch.Tensor
    scores: torch.Tensor

    @property
    def alive(self) -> torch.Tensor:
        return self.state == ALIVE


def control_dim(num_ops: int, window: int) -> int:
    return num_ops * (3 + window)


def decode(raw: torch.Tensor, num_ops: int, window: int, clamp: float) -> Control:
    """Control entries ``raw [n·(3 + P)]`` (as received, possibly noisy) re-quantised."""
    n = num_ops
    gates, state, hist, scores = raw.detach().split([n, n, n * window, n])
    state = state.round().clamp(DORMANT, PRUNED).to(torch.int64)
    return Control(gates.clamp(-clamp, clamp).clone(), state, hist.view(n, window) > 0.5, scores.clone())


def encode(ctrl: Control) -> torch.Tensor:
    """The control entries as written into the vector (exact 0/1/2 and bits)."""
    dt = ctrl.gates.dtype
    return torch.cat([ctrl.gates, ctrl.state.to(dt), ctrl.history.to(dt).flatten(), ctrl.scores])


def initial_control(alive: torch.Tensor, window: int, gate_init: float) -> Control:
    """Control entries of the initial architecture ``alive [n]``: its ops alive with γ = gate_init
    and a full window, every other op dormant."""
    n = alive.numel()
    return Control(torch.where(alive, gate_init, 0.0).float(), alive.long() * ALIVE,
                   alive[:, None].expand(n, window).clone(), torch.zeros(n))


def observe(ctrl: Control, on: torch.Tensor) -> None:
    """Shift every alive op's window by one and append ``on`` (in place; others keep theirs)."""
    shifted = torch.cat([ctrl.history[:, 1:], on[:, None]], dim=1)
    ctrl.history = torch.where(ctrl.alive[:, None], shifted, ctrl.history)


def prune_mask(history: torch.Tensor, alive: torch.Tensor, on_fraction: float) -> torch.Tensor:
    """Alive ops whose gate was on in fewer than ``on_fraction``·P of the last P observations."""
    return alive & (history.sum(1) < on_fraction * history.shape[1])


def grow_order(scores: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator) -> list[int]:
    """Candidate ops with a positive score, best first; equal scores in a seeded random order."""
    perm = torch.randperm(scores.numel(), generator=generator)
    keyed = sorted(((-float(scores[k]), i, k) for i, k in enumerate(perm.tolist())
                    if bool(candidates[k]) and float(scores[k]) > 0))
    return [k for _, _, k in keyed]


def grow(ctrl: Control, fits: Callable[[torch.Tensor], bool], count: int,
         generator: torch.Generator) -> list[int]:
    """Make up to ``count`` dormant ops alive, best score first, each only if the network still
    ``fits`` with it; returns the grown ops (their gates and windows reset by :func:`evolve`)."""
    grown: list[int] = []
    for k in grow_order(ctrl.scores, ctrl.state == DORMANT, generator):
        if len(grown) == count:
            break
        trial = ctrl.alive.clone()
        trial[k] = True
        if fits(trial):
            ctrl.state[k] = ALIVE
            grown.append(k)
    return grown


@dataclass(frozen=True)
class EvolveRule:
    """What :func:`evolve` needs from the config."""

    window: int
    on_fraction: float
    grow_every: int
    grow_count: int
    grow_until: int  # last round that may grow
    gate_init: float
    gate_clamp: float


def evolve(space: SpiderSpace, theta: torch.Tensor, raw: torch.Tensor, rule: EvolveRule, seed: int, rnd: int,
           fits: Callable[[torch.Tensor], bool]) -> tuple[torch.Tensor, Control, dict[str, list[int]]]:
    """One round's evolution on the received weights ``theta`` and control entries ``raw``:
    returns the new θ, the new control and ``{"pruned": [...], "grown": [...]}`` (op ids)."""
    ctrl = decode(raw, space.num_ops, rule.window, rule.gate_clamp)
    if rnd > 0:
        observe(ctrl, space.effective_on(ctrl.gates, ctrl.alive))
    pruned = prune_mask(ctrl.history, ctrl.alive, rule.on_fraction)
    ctrl.state[pruned] = PRUNED
    grown: list[int] = []
    if rnd > 0 and rnd % rule.grow_every == 0 and rnd <= rule.grow_until:
        grown = grow(ctrl, fits, rule.grow_count, torch_generator(seed, "spider-grow", rnd))
    theta = theta.detach().clone()
    if grown:
        new = torch.tensor(grown)
        ctrl.gates[new] = rule.gate_init
        ctrl.history[new] = True
        fresh = space.layout.init(torch_generator(seed, "spider-init", rnd)).to(theta)
        for k in grown:
            name = space.weight_name(k)
            if name is not None:
                a, b = space.slices[name]
                theta[a:b] = fresh[a:b]
    alive = ctrl.alive
    theta[~space.weight_mask(alive).to(theta.device)] = 0.0
    ctrl.gates = torch.where(alive, ctrl.gates, torch.zeros_like(ctrl.gates))
    ctrl.history &= alive[:, None]
    ctrl.scores = torch.zeros_like(ctrl.scores)
    return theta, ctrl, {"pruned": torch.nonzero(pruned).flatten().tolist(), "grown": grown}


def gate_flips(history: torch.Tensor, alive: torch.Tensor) -> float:
    """Mean number of on/off changes within the window per alive op (0 when none is alive)."""
    if not bool(alive.any()):
        return 0.0
    h = history[alive].to(torch.int8)
    return float((h[:, 1:] != h[:, :-1]).sum(1).float().mean())
