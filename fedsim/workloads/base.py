"""The workload interface: a federated task on flat parameter vectors.

Strategies and channels only ever see a model as one flat tensor ``w`` of shape ``[d]`` (and
many models as ``[N, d]``), so every workload exposes its parameters that way. Randomness comes
from ``channels.rng`` keyed by the experiment seed: stream ``"data"`` for generation and
partitioning, ``"init"`` for the initial model, ``"minibatch"`` keyed by (global step, UE) for
batches. The same seed therefore gives the same data, init and batches on any engine.
"""

from __future__ import annotations

import dataclasses
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict


@dataclass
class TheoryConstants:
    """Constants of the global objective f(w) = sum_n q_n f_n(w), each with where it came from.

    ``None`` means unknown. ``sources`` maps a field name to a short provenance string, for
    example ``"exact: eigenvalues of A_n"`` or ``"bound: 0.5 * lambda_max(X^T X / n) + l2"``.
    """

    L: float | None = None  # smoothness of every f_n (A1)
    mu: float | None = None  # strong convexity of f (A2)
    f_star: float | None = None  # min f
    w_star: torch.Tensor | None = None  # argmin f, [d]
    sigma2: float | None = None  # bound on E||g_n - grad f_n||^2 (A3)
    G2: float | None = None  # bound on E||g_n||^2 (A4)
    heterogeneity: float | None = None  # Gamma = f* - sum_n q_n f_n*
    sources: dict[str, str] = field(default_factory=dict)


LrFn = Callable[[int], float]  # global step s -> step size eta_s


class WorkloadConfig(BaseModel):
    """A workload's parameters: its registry ``name``, ``num_ues`` and whatever it declares.

    Subclasses implement :meth:`build`. Unknown keys and NaN/inf are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    num_ues: int

    def build(self, seed: int) -> Workload:
        """The workload for experiment ``seed``, on CPU."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to build its workload")


class Workload(ABC):
    """A federated learning task.

    Attributes set by every implementation:
        name: registry name, e.g. ``"synthetic-logreg"``.
        num_ues: N, the number of UEs (partitions), ids 0..N-1.
        dim: d, the length of the flat parameter vector.
        dtype: the dtype of parameter vectors (float64 for convex tasks, float32 for CNNs).
    """

    name: str
    num_ues: int
    dim: int
    dtype: torch.dtype
    #: where the workload's data and models live (``to_device``); inputs may come from any device.
    device: torch.device = torch.device("cpu")
    #: True when nothing about the workload changes after it is built, beyond caches of its own
    #: deterministic functions: ``build_workload`` may then hand the same object to every run with
    #: the same inputs in this process (a sweep's variants that differ only in strategy or channel).
    shareable: bool = False

    def to_device(self, device: torch.device) -> Workload:
        """Move every tensor and module the workload holds (also inside lists, tuples, dicts,
        dataclasses and wrapped workloads) to ``device``, in place. Workloads build on CPU
        (numpy, generators) and then move."""
        device = torch.device(device)
        if device == self.device:
            return self

        def move(obj):
            if isinstance(obj, torch.Tensor):
                return obj if obj.is_meta else obj.to(device)  # meta: shapes only, no data to move
            if isinstance(obj, torch.nn.Module):
                if any(t.is_meta for t in itertools.chain(obj.parameters(), obj.buffers())):
                    return obj  # a shape-only module, called through functional_call
                return obj.to(device)
            if isinstance(obj, Workload):  # a wrapped workload (augmentation search, retraining)
                return obj.to_device(device)
            if isinstance(obj, list | tuple):
                return type(obj)(move(x) for x in obj)
            if isinstance(obj, dict):
                return {k: move(v) for k, v in obj.items()}
            if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # e.g. split datasets
                return dataclasses.replace(obj, **{f.name: move(getattr(obj, f.name))
                                                   for f in dataclasses.fields(obj) if f.init})
            return obj

        for key, value in list(vars(self).items()):
            vars(self)[key] = move(value)
        self.device = device
        return self

    @abstractmethod
    def init_params(self) -> torch.Tensor:
        """The common initial model ``w0``, shape ``[d]``, from stream ``"init"``. It may be on
        CPU (where the generator draws) rather than on ``self.device``: callers move it."""

    @abstractmethod
    def num_examples(self, ue: int) -> int:
        """|D_n|: training examples held by UE ``ue``."""

    def ue_weights(self) -> torch.Tensor:
        """q_n = |D_n| / sum_m |D_m|, shape ``[N]``, float64, sums to 1."""
        counts = torch.tensor(
            [self.num_examples(n) for n in range(self.num_ues)], dtype=torch.float64
        )
        return counts / counts.sum()

    @abstractmethod
    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        """g_n(w): gradient of UE ``ue``'s local objective at ``w`` on the minibatch for global
        step ``step`` (full batch when the workload's batch size is 0). Shape ``[d]``."""

    def stochastic_grad_many(
        self, ws: torch.Tensor, ues: Sequence[int], step: int
    ) -> torch.Tensor:
        """``stochastic_grad(ws[m], ues[m], step)`` for every row m, stacked to ``[M, d]``.

        Optional fast path: workloads may vectorise it; the result must equal the stacked
        per-UE gradients to floating-point tolerance (same minibatches, same noise).
        """
        if ws.shape[0] != len(ues):
            raise ValueError(f"ws has {ws.shape[0]} rows but {len(ues)} UEs were given")
        rows = [self.stochastic_grad(w, int(n), step) for w, n in zip(ws, ues, strict=True)]
        return torch.stack(rows)

    def local_sgd(
        self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn
    ) -> torch.Tensor:
        """K = ``steps`` plain SGD steps from ``w``: w <- w - eta_s g_n(w) for s = first_step, ...

        Returns the new ``[d]`` vector; ``w`` is not modified.
        """
        w = w.clone()
        for s in range(first_step, first_step + steps):
            w.sub_(self.stochastic_grad(w, ue, s), alpha=lr(s))
        return w

    #: True when ``stochastic_grad_many`` is genuinely vectorised over UEs (one batched kernel,
    #: not the default loop): the inline engine's batched path (``engine.batched``) needs it.
    batched_grad: bool = False

    def local_adam(self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn,
                   state: dict[str, torch.Tensor], betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8, frozen: Callable[[int], torch.Tensor] | None = None) -> torch.Tensor:
        """K = ``steps`` Adam steps from ``w`` whose moments ``state["adam_m"], ["adam_v"] [d]`` and
        step count ``["adam_t"]`` stay on the UE across rounds (for ``local_train``); ``frozen(s)``,
        if given, masks the coordinates that must not move at step s."""
        b1, b2 = betas
        w = w.detach().clone()
        m = state.get("adam_m", torch.zeros_like(w))
        v = state.get("adam_v", torch.zeros_like(w))
        t = int(state["adam_t"]) if "adam_t" in state else 0
        for s in range(first_step, first_step + steps):
            g = self.stochastic_grad(w, ue, s)
            t += 1
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            upd = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
            if frozen is not None:
                upd[frozen(s)] = 0.0
            w.sub_(upd, alpha=lr(s))
        state.update(adam_m=m, adam_v=v, adam_t=torch.tensor(t))
        return w

    def local_sgd_many(
        self, ws: torch.Tensor, ues: Sequence[int], first_step: int, steps: int, lr: LrFn
    ) -> torch.Tensor:
        """``local_sgd(ws[m], ues[m], ...)`` for every row m at once, ``[M, d]``: each step is one
        ``stochastic_grad_many`` call. Equal to the per-UE loop to floating-point tolerance."""
        ws = ws.clone()
        for s in range(first_step, first_step + steps):
            ws.sub_(self.stochastic_grad_many(ws, ues, s), alpha=lr(s))
        return ws

    #: True when ``local_train`` is more than plain SGD on ``stochastic_grad`` (then the UE's
    #: per-step gradient is not the whole story: gradient transmission and overlap are refused).
    custom_local_train: bool = False

    def local_train(
        self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn, state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """A UE's K local steps from the received model ``w``; returns the new ``[d]`` model.

        ``state`` holds UE-local tensors that never leave the UE (optimiser moments, a
        REINFORCE baseline, ...). The engine keeps it in the UE's Flower ``Context.state``
        between rounds; update it in place. Default: plain SGD (``local_sgd``).
        """
        return self.local_sgd(w, ue, first_step, steps, lr)

    @abstractmethod
    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """Metrics of model ``w`` on the global test set and objective.

        Always ``"loss"`` (test loss); ``"accuracy"`` for classifiers; ``"train_loss"`` (f(w),
        the global training objective); ``"gap"`` (f(w) - f*) and ``"dist"`` (||w - w*||) where
        the optimum is known.
        """

    def evaluate_many(self, ws: torch.Tensor) -> list[dict[str, float]]:
        """``evaluate`` for each row of ``ws`` ``[M, d]``. Workloads may vectorise this."""
        return [self.evaluate(w) for w in ws]

    def theory_constants(self) -> TheoryConstants:
        """Known constants of the objective; unknown ones stay ``None``."""
        return TheoryConstants()
