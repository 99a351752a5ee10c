"""The three parts of a NAS method, kept apart so that each can be swapped alone (the standard
taxonomy of Elsken, Metzen & Hutter, "Neural Architecture Search: A Survey", JMLR 2019):

- **search space** (:class:`SearchSpace`): which architectures exist, as categorical decisions;
  how to build a discrete child, what it costs (params, FLOPs, latency), whether it meets the
  resource constraint, and how the architecture logits α (one flat vector, ``len(choices)``
  entries per decision) turn into a discrete architecture;
- **search strategy** (:class:`SearchStrategy`): how a step picks the path through the supernet
  from α (single-path Gumbel, soft Gumbel mixture, uniform random, an RL controller, …) and
  whether α learns by gradient;
- **performance estimation** (:class:`Estimator`): which data score a candidate during the search
  (one-shot weight sharing on the UE's validation split, or the training loss for single-level
  search); the found architecture is then retrained from scratch (``retrain_rounds``).

A new strategy (say a SpiderNet-style evolutionary step) is a new ``SearchStrategy`` subclass
registered in :data:`STRATEGIES`; spaces and estimators are untouched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from fedsim.workloads.nas.gumbel import gumbel_softmax, linear_temperature
from fedsim.workloads.nas.resources import Resources, measure

Architecture = dict[str, Any]  # decision name -> chosen label (JSON-able)


@dataclass(frozen=True)
class Decision:
    """One categorical choice of the space, e.g. ``Decision("cell0.edge1", ("conv3x3", ...))``."""

    name: str
    choices: tuple[Any, ...]


class SearchSpace(ABC):
    """Which architectures exist; see the module docstring."""

    decisions: tuple[Decision, ...]

    @property
    def num_logits(self) -> int:
        return sum(len(d.choices) for d in self.decisions)

    def split(self, alpha: torch.Tensor) -> list[torch.Tensor]:
        """Per-decision views ``[len(choices)]`` of the flat logits ``alpha [num_logits]``."""
        return list(alpha.split([len(d.choices) for d in self.decisions]))

    def indices(self, arch: Architecture) -> list[int]:
        """The choice index of every decision in ``arch``."""
        return [d.choices.index(arch[d.name]) for d in self.decisions]

    def architecture(self, indices: list[int] | torch.Tensor) -> Architecture:
        return {d.name: d.choices[int(i)] for d, i in zip(self.decisions, indices, strict=True)}

    def derive(self, alpha: torch.Tensor) -> Architecture:
        """The discrete architecture of ``alpha``: argmax per decision (spaces may override)."""
        return self.architecture([int(a.argmax()) for a in self.split(alpha)])

    def random_architecture(self, generator: torch.Generator) -> Architecture:
        """A uniformly drawn architecture (not checked for feasibility)."""
        return self.architecture([int(torch.randint(len(d.choices), (1,), generator=generator))
                                  for d in self.decisions])

    def feasible(self, arch: Architecture) -> bool:
        """Whether ``arch`` meets the space's resource constraint (none by default)."""
        return True

    @abstractmethod
    def child(self, arch: Architecture) -> nn.Module:
        """The discrete network of ``arch`` with real tensors (from an explicit generator: the
        values only matter for latency, and torch's global RNG is never used)."""

    @abstractmethod
    def example_input(self) -> torch.Tensor:
        """A batch of one input, for FLOP counting and latency."""

    def resources(self, arch: Architecture, *, latency: bool = True) -> Resources:
        return measure(self.child(arch), self.example_input(), latency=latency)


class SearchStrategy(ABC):
    """How a step picks its path through the supernet from the logits."""

    name: str
    learns_alpha: bool  # α gets a pathwise gradient (False: α is frozen or learns otherwise)

    @abstractmethod
    def select(self, parts: list[torch.Tensor], generator: torch.Generator, progress: float) -> list[torch.Tensor]:
        """Weights over the choices of every decision (``[len(choices)]`` each) for one forward
        pass; ``progress`` in [0, 1] is the fraction of the search done (temperature schedules)."""


class GdasStrategy(SearchStrategy):
    """Single path: straight-through hard Gumbel-softmax, τ annealed ``tau_max`` → ``tau_min`` (GDAS)."""

    name = "gdas"
    learns_alpha = True

    def __init__(self, tau_max: float = 10.0, tau_min: float = 0.1) -> None:
        self.tau_max, self.tau_min = tau_max, tau_min

    def select(self, parts, generator, progress):
        tau = linear_temperature(progress, self.tau_max, self.tau_min)
        return [gumbel_softmax(p, tau, generator, hard=True)[0] for p in parts]


class MixtureStrategy(SearchStrategy):
    """Soft Gumbel-softmax mixture over all choices at temperature ``tau`` (DASH: τ = 1)."""

    name = "mixture"
    learns_alpha = True

    def __init__(self, tau: float = 1.0) -> None:
        self.tau = tau

    def select(self, parts, generator, progress):
        return [gumbel_softmax(p, self.tau, generator, hard=False)[0] for p in parts]


class RandomStrategy(SearchStrategy):
    """Random search with weight sharing: a uniform one-hot path per step, α never learns
    (the baseline the learned strategies must beat; derive() then returns α's argmax at init)."""

    name = "random"
    learns_alpha = False

    def select(self, parts, generator, progress):
        out = []
        for p in parts:
            i = int(torch.randint(p.numel(), (1,), generator=generator))
            one_hot = torch.zeros_like(p)
            one_hot[i] = 1.0
            out.append(one_hot)
        return out


STRATEGIES: dict[str, type[SearchStrategy]] = {
    GdasStrategy.name: GdasStrategy,
    MixtureStrategy.name: MixtureStrategy,
    RandomStrategy.name: RandomStrategy,
}


@dataclass(frozen=True)
class Estimator:
    """Which UE data score a candidate during the search: ``"validation"`` (one-shot weight
    sharing, bi-level: weights on the training split, α or rewards on the validation split) or
    ``"train"`` (single-level: α and weights on the same training batch, as DASH)."""

    split: Literal["validation", "train"] = "validation"

    def batch(self, workload: Any, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` the candidate is scored on at ``step``: ``workload.validation_batch`` or
        ``workload.train_batch``."""
        if self.split == "validation":
            return workload.validation_batch(ue, step)
        return workload.train_batch(ue, step)
