"""``nas-tabnas``: federated TabNAS (Yang et al., NeurIPS 2022; one child per round, as if sampled by the
server), a resource-constrained RL controller that picks the hidden widths of an MLP on tabular data.

Search space: L hidden layers, width y_l ∈ ``widths`` per layer (decisions ``layer0``, ``layer1``, …
labelled by the width). Weight-sharing supernet = the MLP with max(widths) units per layer; child y
uses the first y_l units of layer l (slices of the supernet's matrices, so the weights outside the
child get an exactly zero gradient and stay bit-for-bit unchanged). Resource T(y) = parameters of
the child MLP (weights and biases of all layers, input and output included), optionally also its
FLOPs; feasible set V = {y : params ≤ ``max_params`` [and FLOPs ≤ ``max_flops``] [and latency ≤
``max_latency_ms`` on every UE's device profile, per-op cost model of :mod:`fedsim.workloads.latency`]}.

Flat vector ``w = [supernet weights | θ (L × C controller logits)]`` (θ only with
``search_strategy = "reinforce"``). Both go through the strategy and channel: the controller is
averaged like any parameter, so the workload runs unchanged under every strategy, server-free too.
Round r on UE k (all UEs received the same w and share ``first_step`` s_r):

1. y_r ~ π_θ(·|V) by rejection sampling from ``torch_generator(seed, "controller", s_r)`` (not per
   UE: with a common θ every UE trains the same feasible child, i.e. "the server samples y_r and
   broadcasts it"; T(y) needs no data). Infeasible children are never trained nor rewarded.
2. K local SGD steps (lr(s), minibatches of the UE's training split) on child y_r's sub-network.
3. Q_k = reward of y_r (``neg_loss`` or ``accuracy``) on the UE's validation split; the UE's
   bias-corrected EMA baseline (num/den in ``state``) is updated with Q_k, Q̄_k = num/den.
4. After the warm-up (``warmup_fraction`` of ``total_steps``, rewards of a barely trained supernet
   are noise) one plain-SGD step on θ: ℒ = −(Q_k − Q̄_k)[log π_θ(y_r) − log P̂(V)], P̂(V) from N =
   ``mc_samples`` draws z ~ π_θ of ``torch_generator(seed, "controller-mc", s_r)`` (TabNAS's Monte-Carlo estimate).

Why this is a server-side controller (one child per round, one step on the averaged reward): the
gradient G = ∇[log π_θ(y_r) − log P̂(V)] is the same on every UE (same θ, y_r, z), so
θ_k = θ − η(Q_k − Q̄_k)G and Σ_k q_k θ_k = θ − η(Q − Q̄)G with Q = Σ q_k Q_k and Q̄ = Σ q_k Q̄_k: one
controller step with the averaged reward. Q̄ is then the EMA of the averaged rewards, because the
bias-corrected EMA is linear in the rewards and all UEs share den.
Conditions: exact average (digital channel), full participation every round, and SGD on θ: the
Adam of TabNAS is not linear in the advantage, hence SGD with ``controller_lr``. The weights are q_k
∝ training examples (FedAvg's) rather than validation-split sizes. Under analog channels θ
gets channel noise like every parameter; server-free, each UE's θ drifts apart and UEs may draw
different children (the supernet is then averaged plainly, not masked: weights outside a UE's child
enter the average unchanged).

``search_strategy = "random"``: random search with weight sharing under the same budget. Children
are uniform over V (rejection from the uniform policy), there is no θ, and the found architecture is
the best of ``random_candidates`` uniform feasible architectures (stream ``"controller-derive"``) by
the reward on all UEs' validation splits with the trained supernet weights.

Derive (reinforce): argmax θ_l per layer if feasible, else the most probable feasible architecture
(exact enumeration when the space has at most 65,536 architectures, else the most probable feasible
of 4,096 samples from ``"controller-derive"``). ``arch`` set: w = the child MLP alone, plain SGD
(retraining from scratch; infeasible hand-picked architectures are allowed here).

Data (float32, features standardised with mean/std of the training pool, i.e. all UEs' training and
validation rows): ``synthetic`` = FedProx Synthetic(α, β) (Li et al., MLSys 2020; their ``generate_synthetic``), each UE
keeps its first 1 − ``test_fraction`` rows and gives the rest to the global test set; ``breast_cancer``
/ ``wine`` (scikit-learn) = a seeded global test set, the rest partitioned across UEs. Every UE holds
out a seeded ``val_fraction`` validation split (a UE with none scores on its training split).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from channels.rng import torch_generator
from fedsim.workloads.base import LrFn, Workload, WorkloadConfig
from fedsim.workloads.nas import controller as ctl
from fedsim.workloads.nas.budget import LatencyFields, limit_mlp_latency
from fedsim.workloads.nas.tabular import TabularSpace, arch_widths, load_tabular
from fedsim.workloads.nas.taxonomy import Architecture

_DT = torch.float32
_ENUM_LIMIT = 1 << 16  # spaces up to this size are enumerated exactly (P(V), derive)
_DERIVE_SAMPLES = 4096
_STATE_KEYS = ("tabnas.num", "tabnas.den")


class TabNasConfig(WorkloadConfig, LatencyFields):
    """Federated TabNAS: RL controller with rejection sampling over MLP widths (Yang et al., NeurIPS 2022)."""

    name: Literal["nas-tabnas"] = "nas-tabnas"

    def build(self, seed: int) -> TabNasWorkload:
        return TabNasWorkload(self, seed)
    num_ues: int = Field(10, ge=1, description="N, number of UEs")
    dataset: Literal["synthetic", "breast_cancer", "wine"] = Field(
        "synthetic", description="FedProx Synthetic(alpha, beta) or a scikit-learn table")
    alpha: float = Field(1.0, ge=0, description="synthetic: model heterogeneity (std of u_k)")
    beta: float = Field(1.0, ge=0, description="synthetic: data heterogeneity (std of B_k)")
    max_samples_per_ue: int = Field(600, ge=10, description="synthetic: cap on n_k (train + val + test)")
    partition: Literal["iid", "dirichlet"] = Field("iid", description="breast_cancer/wine: split across UEs")
    dirichlet_alpha: float = Field(0.5, gt=0, description="Dir(alpha) label skew (dirichlet)")
    min_partition_size: int = Field(4, ge=1, description="smallest UE partition (dirichlet redraws)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="global test share (synthetic: of every UE)")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="per-UE validation share (the reward's data)")
    batch_size: int = Field(32, ge=0, description="minibatch size; 0 = full local batch")
    hidden_layers: int = Field(3, ge=1, le=8, description="L, hidden layers of the MLP")
    widths: tuple[int, ...] = Field((4, 8, 16, 32, 64), min_length=2, description="width choices per layer")
    max_params: int = Field(3000, ge=1, description="T0: most parameters (weights + biases) of a feasible child")
    max_flops: int | None = Field(None, ge=1, description="optional cap on a child's FLOPs per example")
    search_strategy: Literal["reinforce", "random"] = Field(
        "reinforce", description="reinforce: TabNAS controller; random: uniform feasible children, no θ")
    reward: Literal["neg_loss", "accuracy"] = Field("neg_loss", description="Q(y) on the validation split")
    controller_lr: float = Field(10.0, gt=0, description="plain-SGD step size on θ")
    mc_samples: int = Field(32, ge=1, description="N, Monte-Carlo samples of P̂(V) per step")
    baseline_momentum: float = Field(0.9, ge=0, lt=1, description="momentum of the bias-corrected EMA baseline")
    warmup_fraction: float = Field(0.25, ge=0, le=1, description="share of total_steps with θ frozen")
    random_candidates: int = Field(32, ge=1, description="random: architectures scored to pick the result")
    arch: dict[str, Any] | None = Field(None, description="fixed architecture {layer0: width, ...}: no search")
    retrain_rounds: int | None = Field(None, ge=0, description="rounds retraining the found arch (None = rounds)")
    total_steps: int = Field(1, ge=1, description="rounds x local_steps (auto-filled; warm-up schedule)")

    @model_validator(mode="after")
    def _check(self) -> TabNasConfig:
        if len(set(self.widths)) != len(self.widths) or min(self.widths) < 1:
            raise ValueError(f"widths must be distinct positive integers, got {list(self.widths)}")
        if self.arch is not None:
            arch_widths(self.arch, self.hidden_layers, self.widths)
        elif self.search_strategy == "reinforce" and self.val_fraction <= 0:
            raise ValueError("search_strategy='reinforce' rewards on the validation split: set val_fraction > 0")
        return self


class TabNasWorkload(Workload):
    """Federated TabNAS on an MLP supernet; see the module docstring."""

    dtype = _DT

    def __init__(self, cfg: TabNasConfig, seed: int) -> None:
        self.cfg, self.seed, self.name, self.num_ues = cfg, seed, cfg.name, cfg.num_ues
        self.data = load_tabular(cfg, seed)
        self.space = limit_mlp_latency(TabularSpace(self.data.x_test.shape[1], self.data.num_classes, cfg),
                                       cfg.latency_budget)
        L, C = cfg.hidden_layers, len(cfg.widths)
        self.fixed = None if cfg.arch is None else arch_widths(cfg.arch, L, cfg.widths)
        self.search = self.fixed is None
        self.learns = self.search and cfg.search_strategy == "reinforce"
        self.custom_local_train = self.search  # the search is more than SGD; fixed mode is plain SGD
        if self.search and not bool(self.space.feasible_idx(torch.zeros(1, L, dtype=torch.long))[0]):
            smallest = int(self.space.params_idx(torch.zeros(1, L, dtype=torch.long))[0])
            raise ValueError(f"no architecture meets the resource constraint: the smallest child has {smallest} "
                             f"parameters > max_params = {cfg.max_params} (or exceeds max_flops / max_latency_ms)")
        hidden = self.fixed or (max(cfg.widths),) * L
        dims = [self.space.d_in, *hidden, self.data.num_classes]
        self._shapes = [s for a, b in zip(dims[:-1], dims[1:], strict=True) for s in ((b, a), (b,))]
        self._sizes = [math.prod(s) for s in self._shapes]
        self.net_dim = sum(self._sizes)
        self.theta_shape = (L, C)
        self.dim = self.net_dim + (L * C if self.learns else 0)
        self._all = self._all_ok = None
        if C**L <= _ENUM_LIMIT:
            self._all = ctl.enumerate_space(L, C)
            self._all_ok = self.space.feasible_idx(self._all)
        self._warmup_steps = int(cfg.warmup_fraction * cfg.total_steps)

    # -- plumbing -------------------------------------------------------------------------
    def num_examples(self, ue: int) -> int:
        return len(self.data.train[ue][1])

    def split(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``(supernet/child weights [net_dim], θ [L, C])`` of ``w``; θ is uniform (zeros,
        a fresh tensor) when the workload has none."""
        theta = w[self.net_dim:].view(self.theta_shape) if self.learns else torch.zeros(self.theta_shape, dtype=_DT)
        return w[: self.net_dim], theta

    def init_params(self) -> torch.Tensor:
        """PyTorch's default Linear init from stream ``"init"``: U(±1/sqrt(fan_in)) for weights and
        biases (fan_in of the supernet layer); θ = 0 (uniform controller)."""
        g = torch_generator(self.seed, "init")
        fans = [s[1] for s in self._shapes[::2] for _ in "wb"]  # a bias takes its weight's fan_in
        parts = [(2 * torch.rand(n, generator=g, dtype=_DT) - 1) / math.sqrt(fan)
                 for n, fan in zip(self._sizes, fans, strict=True)]
        return torch.cat([*parts, torch.zeros(self.dim - self.net_dim, dtype=_DT)])

    def hidden_of(self, idx: torch.Tensor) -> tuple[int, ...]:
        return tuple(self.cfg.widths[int(i)] for i in idx)

    def architecture(self, hidden: tuple[int, ...]) -> Architecture:
        return {f"layer{i}": int(h) for i, h in enumerate(hidden)}

    # -- model ----------------------------------------------------------------------------
    def logits(self, net: torch.Tensor, x: torch.Tensor, hidden: tuple[int, ...]) -> torch.Tensor:
        """``[B, classes]`` logits of the sub-network with ``hidden`` widths (first units of each layer)."""
        views = [c.view(s) for c, s in zip(net.split(self._sizes), self._shapes, strict=True)]
        h, prev = x, x.shape[1]
        for i, width in enumerate(hidden):
            h = torch.relu(F.linear(h, views[2 * i][:width, :prev], views[2 * i + 1][:width]))
            prev = width
        return F.linear(h, views[-2][:, :prev], views[-1])

    def _batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.train[ue]
        bs = self.cfg.batch_size
        if bs == 0 or bs >= len(y):
            return x, y
        rows = torch.randperm(len(y), generator=torch_generator(self.seed, "minibatch", step, ue))[:bs]
        return x[rows], y[rows]

    def _net_grad(self, net: torch.Tensor, ue: int, step: int, hidden: tuple[int, ...]) -> torch.Tensor:
        x, y = self._batch(ue, step)
        leaf = net.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(self.logits(leaf, x, hidden), y), leaf)
        return g

    @torch.no_grad()
    def score(self, net: torch.Tensor, hidden: tuple[int, ...], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        z = self.logits(net, x, hidden)
        return {"loss": float(F.cross_entropy(z, y)), "accuracy": float((z.argmax(1) == y).float().mean())}

    def reward(self, net: torch.Tensor, ue: int, hidden: tuple[int, ...]) -> float:
        """Q_k(y): ``-loss`` or ``accuracy`` of child ``hidden`` on UE ``ue``'s validation split."""
        x, y = self.data.val[ue] if len(self.data.val[ue][1]) else self.data.train[ue]
        s = self.score(net, hidden, x, y)
        return -s["loss"] if self.cfg.reward == "neg_loss" else s["accuracy"]

    # -- controller -----------------------------------------------------------------------
    def round_child(self, theta: torch.Tensor, first_step: int) -> torch.Tensor:
        """Round child y ~ π_θ(·|V) (uniform policy for random search), ``[L]`` choice indices, from
        stream ``"controller"`` keyed by the round's first step only (the same on every UE)."""
        g = torch_generator(self.seed, "controller", first_step)
        return ctl.rejection_sample(theta.detach().cpu(), self.space.feasible_idx, g)[0]

    def controller_step(self, theta: torch.Tensor, y: torch.Tensor, advantage: float, first_step: int) -> torch.Tensor:
        """θ after one TabNAS REINFORCE step (plain SGD) with advantage Q − Q̄ (MC draws from
        ``"controller-mc"``, key s_r). The controller is tiny and its tables live on CPU: so does this step."""
        theta = theta.cpu()
        z = ctl.sample(theta, self.cfg.mc_samples, torch_generator(self.seed, "controller-mc", first_step))
        return ctl.reinforce_step(theta, y, advantage, z, self.space.feasible_idx(z), self.cfg.controller_lr)

    def feasible_mass(self, theta: torch.Tensor) -> float:
        """P(V) under π_θ: exact by enumeration, else a fixed-seed MC estimate."""
        theta = theta.cpu()
        if self._all is not None:
            return float(ctl.feasible_mass(theta.detach(), self._all, self._all_ok))
        z = ctl.sample(theta, _DERIVE_SAMPLES, torch_generator(self.seed, "controller-derive"))
        return float(self.space.feasible_idx(z).float().mean())

    # -- Workload API ---------------------------------------------------------------------
    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        """Gradient of the minibatch CE through the child (search: the child a round starting at
        ``step`` would draw); zero for θ, which learns by REINFORCE only."""
        net, theta = self.split(w.detach().to(_DT))
        hidden = self.fixed or self.hidden_of(self.round_child(theta, step))
        g = self._net_grad(net, ue, step, hidden)
        return torch.cat([g, torch.zeros(self.dim - self.net_dim, dtype=_DT, device=g.device)])

    def local_train(self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn,
                    state: dict[str, torch.Tensor]) -> torch.Tensor:
        """One round on UE ``ue`` (module docstring, steps 1-4). ``state`` keeps the baseline's
        ``tabnas.num`` / ``tabnas.den`` (``[1]`` float64 each)."""
        if not self.search:
            return self.local_sgd(w.detach().to(_DT), ue, first_step, steps, lr)
        w = w.detach().to(_DT).clone()
        net, theta = self.split(w)
        y = self.round_child(theta, first_step)
        hidden = self.hidden_of(y)
        for s in range(first_step, first_step + steps):
            net.sub_(self._net_grad(net, ue, s, hidden), alpha=lr(s))  # zero outside the child: unchanged
        if self.learns:
            q = self.reward(net, ue, hidden)
            num, den = (float(state[k]) if k in state else 0.0 for k in _STATE_KEYS)
            num, den = ctl.ema_update(num, den, q, self.cfg.baseline_momentum)
            for k, v in zip(_STATE_KEYS, (num, den), strict=True):
                state[k] = torch.tensor([v], dtype=torch.float64)
            if first_step >= self._warmup_steps:
                theta.copy_(self.controller_step(theta, y, q - num / den, first_step))
        return w

    def derive(self, w: torch.Tensor) -> tuple[int, ...]:
        """Hidden widths of the found architecture (module docstring, "Derive")."""
        if not self.search:
            return self.fixed
        net, theta = self.split(w.detach().to(_DT))
        theta = theta.cpu()
        if not self.learns:
            return self._best_random(net)
        best = theta.argmax(-1)
        if bool(self.space.feasible_idx(best[None])[0]):
            return self.hidden_of(best)
        if self._all is not None:
            cand = self._all
        else:
            cand = ctl.sample(theta, _DERIVE_SAMPLES, torch_generator(self.seed, "controller-derive"))
        pick = ctl.most_probable(theta, cand, self.space.feasible_idx(cand))
        if pick is None:
            raise RuntimeError("no feasible architecture among the controller's samples; relax the constraint")
        return self.hidden_of(pick)

    @functools.cached_property
    def _candidates(self) -> list[tuple[int, ...]]:
        g = torch_generator(self.seed, "controller-derive")
        uniform = torch.zeros(self.theta_shape)
        draws = [self.hidden_of(ctl.rejection_sample(uniform, self.space.feasible_idx, g)[0])
                 for _ in range(self.cfg.random_candidates)]
        return list(dict.fromkeys(draws))  # distinct, in draw order

    @functools.cached_property
    def _pooled_val(self) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [v if len(v[1]) else t for v, t in zip(self.data.val, self.data.train, strict=True)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def validation_reward(self, net: torch.Tensor, hidden: tuple[int, ...]) -> float:
        """Q(y) on all UEs' validation splits pooled (the example-weighted federated reward)."""
        s = self.score(net, hidden, *self._pooled_val)
        return -s["loss"] if self.cfg.reward == "neg_loss" else s["accuracy"]

    def _best_random(self, net: torch.Tensor) -> tuple[int, ...]:
        rewards = [self.validation_reward(net, h) for h in self._candidates]
        return self._candidates[int(np.argmax(rewards))]

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """Test ``loss``/``accuracy`` of the derived architecture (its sub-network of the supernet
        while searching), its ``arch_params`` and widths ``arch_layer{l}``; while searching also
        ``feasible_mass`` P(V) and ``controller_entropy`` (nats) of π_θ."""
        w = w.detach().to(_DT)
        net, theta = self.split(w)
        hidden = self.derive(w)
        out = self.score(net, hidden, self.data.x_test, self.data.y_test)
        idx = torch.tensor([[self.cfg.widths.index(h) for h in hidden]])
        out["arch_params"] = float(self.space.params_idx(idx)[0])
        out.update({f"arch_layer{i}": float(h) for i, h in enumerate(hidden)})
        if self.search:
            out.update(feasible_mass=self.feasible_mass(theta), controller_entropy=ctl.entropy(theta.cpu()))
        return out

    def search_result(self, w: torch.Tensor) -> dict[str, Any]:
        """The found architecture, its resources and the controller's state (JSON-able)."""
        w = w.detach().to(_DT)
        net, theta = self.split(w)
        hidden = self.derive(w)
        arch = self.architecture(hidden)
        probs = torch.softmax(theta.to(torch.float64), dim=-1)
        return {
            "architecture": arch,
            "resources": self.space.resources(arch).to_dict(),
            "feasible": self.space.feasible(arch),
            "max_params": self.cfg.max_params,
            "max_flops": self.cfg.max_flops,
            **self.space.latency_report(arch),
            "search_strategy": self.cfg.search_strategy,
            "validation_reward": self.validation_reward(net, hidden),
            "feasible_mass": self.feasible_mass(theta),
            "controller_entropy": ctl.entropy(theta),
            "controller_probs": {d.name: [round(float(p), 6) for p in row]
                                 for d, row in zip(self.space.decisions, probs, strict=True)},
            "widths": list(self.cfg.widths),
        }

    def retrain_config(self, arch: dict[str, Any]) -> dict[str, Any]:
        """This workload's config with ``arch`` fixed and no retraining of its own (no total_steps)."""
        arch = self.architecture(arch_widths(arch, self.cfg.hidden_layers, self.cfg.widths))
        data = self.cfg.model_dump(mode="json")
        data.update(arch=arch, retrain_rounds=0)
        data.pop("total_steps", None)
        return data
