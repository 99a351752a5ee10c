"""``mnist-augsearch`` / ``digits-augsearch``: the image CNNs with a federated augmentation-policy
search (AutoAugment-style sub-policies learned by REINFORCE on a validation reward, the augmentation half
of DAAS) and optional MoEx (Li et al., CVPR 2021).

Flat vector ``w = [θ (CNN, as in mnist-cnn / digits-cnn) | β (policy logits, P)]``: both go
through the strategy and channel, so β is averaged like the weights (a global policy). The
REINFORCE baseline b_k, the advantage scale, the augmentation samples and MoEx pairs stay on
the UE (``state`` / stream ``"augment"``). Per local step s on UE k:

    τ_i ~ p_β (stream "augment", key (s, k));  x̃_i = τ_i(x_i);  MoEx with prob p (stream "moex")
    θ' = θ − η_s ∇_θ CE(f(x̃; θ), y)
    R  = L_val(θ) − L_val(θ')      on a validation batch of UE k (stream "validation", key (s, k))
    A  = (R − b) [/ running rms(R − b)];   b ← γ b + (1 − γ) R
    β ← β − η_β ĝ_β,  ĝ_β = −A · (1/B) Σ_i ∇_β log p_β(τ_i)

``augment.policy = "uniform"`` samples from the fixed uniform policy (no β in ``w``; a
RandAugment-like control) and ``"none"`` trains on clean images (the plain FedAvg arm; with the
same ``val_fraction`` the training data are identical across arms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.func import functional_call

from channels.rng import torch_generator
from fedsim.workloads import moex as mx
from fedsim.workloads.augment import OP_NAMES, apply_stages
from fedsim.workloads.base import LrFn, Workload
from fedsim.workloads.images import DigitsCnnConfig, ImageCnn, MnistCnnConfig, _ImageConfig
from fedsim.workloads.policy import PolicySample, PolicySpace, entropy, make_space, reinforce_grad, update_baseline

OpName = Literal[OP_NAMES]  # type: ignore[valid-type]
_MOEX_LAYER = {"stem": 3, "block2": 6}  # index into the nn.Sequential after which moments are exchanged


class AugmentSection(BaseModel):
    """Input-space augmentation policy (AutoAugment-style sub-policies, searched by REINFORCE)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["search", "uniform", "none"] = Field(
        "search", description="search: learn β by REINFORCE; uniform: fixed uniform policy; none: clean images"
    )
    ops: tuple[OpName, ...] = Field(OP_NAMES, min_length=2, description="op set the sub-policies draw from")
    num_subpolicies: int = Field(8, ge=1, description="K: sub-policies (distinct op pairs) in the space")
    magnitude_bins: int = Field(5, ge=1, le=100, description="M: bin m means magnitude (m+1)/M")
    space_seed: int = Field(0, ge=0, description="seed of the fixed draw of the K op pairs")
    policy_lr: float = Field(0.5, ge=0, description="η_β, plain SGD on β")
    baseline_decay: float = Field(0.9, ge=0, lt=1, description="γ of the moving-average baseline")
    normalize_advantage: bool = Field(True, description="divide R − b by its running RMS (scale-free η_β)")
    val_batch_size: int = Field(64, ge=0, description="validation examples per reward; 0 = whole split")


class MoexSection(BaseModel):
    """Moment Exchange (MoEx, Li et al., CVPR 2021); defaults from ``Boyiliee/MoEx`` (PONO at the stem,
    λ 0.9, p 1.0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    prob: float = Field(mx.DEFAULT_PROB, ge=0, le=1, description="p: probability a batch is exchanged")
    lam: float = Field(mx.DEFAULT_LAM, ge=0, le=1, description="λ: weight of the own label")
    layer: Literal["stem", "block2"] = Field("stem", description="stem: after conv1-ReLU-pool; block2: after pool 2")
    eps: float = Field(mx.DEFAULT_EPS, gt=0)


class _AugImageConfig(_ImageConfig):
    val_fraction: float = Field(0.1, ge=0, lt=1, description="per-UE validation share (the reward's data)")
    augment: AugmentSection = AugmentSection()
    moex: MoexSection = MoexSection()

    @model_validator(mode="after")
    def _needs_validation(self) -> _AugImageConfig:
        if self.augment.policy == "search" and self.val_fraction <= 0:
            raise ValueError("augment.policy='search' rewards validation-loss improvement: set val_fraction > 0")
        if self.augment.num_subpolicies > len(self.augment.ops) * (len(self.augment.ops) - 1):
            raise ValueError("augment.num_subpolicies exceeds the number of distinct op pairs")
        return self


class MnistAugsearchConfig(_AugImageConfig):
    """mnist-cnn + augmentation-policy search / MoEx."""

    name: Literal["mnist-augsearch"] = "mnist-augsearch"

    def build(self, seed: int) -> AugSearchCnn:
        return AugSearchCnn(self, seed)


class DigitsAugsearchConfig(_AugImageConfig):
    """digits-cnn + augmentation-policy search / MoEx."""

    name: Literal["digits-augsearch"] = "digits-augsearch"

    def build(self, seed: int) -> AugSearchCnn:
        return AugSearchCnn(self, seed)


_STATE_KEYS = ("aug.baseline", "aug.adv_ms", "aug.count")


def augment_batch(space: PolicySpace, logits: torch.Tensor, x: torch.Tensor, seed: int, step: int,
                  ue: int) -> tuple[torch.Tensor, PolicySample]:
    """``(τ(x), τ)``: one sub-policy sample τ_i ~ p_logits per image, drawn and applied with the
    generator of stream ``"augment"`` keyed by ``(step, ue)``."""
    gen = torch_generator(seed, "augment", step, ue)
    sample = space.sample(logits, len(x), gen)
    return apply_stages(x, space.ops(sample), sample.applied, space.magnitudes(sample), gen), sample


def policy_stats(space: PolicySpace, beta: torch.Tensor) -> dict[str, float]:
    """``policy_entropy`` (nats, log K = uniform), ``policy_top`` (most likely sub-policy id) and
    ``policy_top_prob`` of the policy logits ``beta``."""
    pi = space.subpolicy_probs(beta)
    return {"policy_entropy": entropy(space, beta), "policy_top": float(int(pi.argmax())),
            "policy_top_prob": float(pi.max())}


@dataclass
class ReinforceStats:
    """A UE's local REINFORCE statistics (validation-reward estimator): baseline b, running mean square of the
    advantage and reward count; kept in ``state`` under ``aug.baseline``/``aug.adv_ms``/``aug.count``."""

    baseline: float = 0.0
    adv_ms: float = 0.0
    count: float = 0.0

    @classmethod
    def load(cls, state: dict[str, torch.Tensor]) -> ReinforceStats:
        return cls(*(float(state[k]) if k in state else 0.0 for k in _STATE_KEYS))

    def store(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in zip(_STATE_KEYS, (self.baseline, self.adv_ms, self.count), strict=True):
            state[k] = torch.tensor([v], dtype=torch.float64)

    def step(self, space: PolicySpace, beta: torch.Tensor, sample: PolicySample, reward: float,
             a: AugmentSection) -> None:
        """One REINFORCE step on ``beta`` (in place) for the batch ``sample`` and its ``reward``,
        then the baseline update b ← γ b + (1 − γ) R."""
        if self.count == 0:
            self.baseline = reward  # first reward: start the baseline there (advantage 0)
        adv = reward - self.baseline
        self.adv_ms = update_baseline(self.adv_ms, adv * adv, a.baseline_decay)
        if a.normalize_advantage:
            adv = adv / (self.adv_ms**0.5) if self.adv_ms > 0 else 0.0
        if adv != 0.0:
            beta.sub_(reinforce_grad(space, beta, sample, adv), alpha=a.policy_lr)
        self.baseline, self.count = update_baseline(self.baseline, reward, a.baseline_decay), self.count + 1


class AugSearchCnn(Workload):
    """The CNN of ``ImageCnn`` plus policy logits β in the flat vector; see the module docstring."""

    dtype = torch.float32
    custom_local_train = True

    def __init__(self, cfg: MnistAugsearchConfig | DigitsAugsearchConfig, seed: int) -> None:
        self.cfg, self.seed, self.name = cfg, seed, cfg.name
        base_cls = MnistCnnConfig if cfg.name == "mnist-augsearch" else DigitsCnnConfig
        self.base = ImageCnn(base_cls(**{k: getattr(cfg, k) for k in _ImageConfig.model_fields if k != "name"}), seed)
        self.num_ues = cfg.num_ues
        a = cfg.augment
        self.space = None if a.policy == "none" else make_space(
            tuple(a.ops), a.num_subpolicies, a.magnitude_bins, a.space_seed)
        self.search = a.policy == "search"
        self.cnn_dim = self.base.dim
        self.policy_dim = self.space.num_logits if self.search else 0
        self.dim = self.cnn_dim + self.policy_dim
        k = _MOEX_LAYER[cfg.moex.layer]
        self._head, self._tail = self.base.net[:k], self.base.net[k:]
        self._head_names = [n for n, _ in self._head.named_parameters()]
        self._tail_names = [n for n, _ in self._tail.named_parameters()]

    # -- plumbing -------------------------------------------------------------------------
    def num_examples(self, ue: int) -> int:
        return self.base.num_examples(ue)

    def init_params(self) -> torch.Tensor:
        """``[θ0 | β0]``: the base CNN's init, then all-zero (uniform) policy logits."""
        return torch.cat([self.base.init_params(), torch.zeros(self.policy_dim, dtype=self.dtype)])

    def split(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``(θ [cnn_dim], β [policy_dim])`` of ``w [d]``."""
        return w[: self.cnn_dim], w[self.cnn_dim :]

    def _policy_logits(self, beta: torch.Tensor) -> torch.Tensor:
        return beta if self.search else self.space.init_logits(self.dtype)

    # -- one step's inputs ----------------------------------------------------------------
    def batch(
        self, ue: int, step: int, beta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, PolicySample | None]:
        """``(x̃ [B, 1, H, W], y [B], MoEx partner perm [B] or None, policy sample or None)``."""
        x, y = self.base.train_batch(ue, step)
        sample = None
        if self.space is not None:
            x, sample = augment_batch(self.space, self._policy_logits(beta), x, self.seed, step, ue)
        perm = None
        if self.cfg.moex.enabled:
            perm = mx.draw(len(y), self.cfg.moex.prob, torch_generator(self.seed, "moex", step, ue))
        return x, y, perm, sample

    def validation_batch(self, ue: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """UE ``ue``'s validation batch for ``step`` (whole split if it is no larger than val_batch_size)."""
        x, y = self.base.ue_validation_data(ue)
        bs = self.cfg.augment.val_batch_size
        if bs == 0 or bs >= len(y):
            return x, y
        rows = torch.randperm(len(y), generator=torch_generator(self.seed, "validation", step, ue))[:bs]
        return x[rows], y[rows]

    def train_loss(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor | None
    ) -> torch.Tensor:
        """Plain CE, or the MoEx loss with moments exchanged after the configured layer."""
        if perm is None:
            return self.base.loss(theta, x, y)
        views = self.base.param_views(theta)
        h = functional_call(self._head, {n: views[n] for n in self._head_names}, (x.to(theta.dtype),))
        h = mx.moment_exchange(h, perm, self.cfg.moex.eps)
        logits = functional_call(self._tail, {n: views[n] for n in self._tail_names}, (h,))
        return mx.moex_loss(logits, y, perm, self.cfg.moex.lam)

    def _theta_grad(self, theta: torch.Tensor, ue: int, step: int, beta: torch.Tensor):
        x, y, perm, sample = self.batch(ue, step, beta)
        th = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(self.train_loss(th, x, y, perm), th)
        return g, sample

    # -- Workload API ---------------------------------------------------------------------
    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        """``[∇_θ CE on the augmented batch | 0]``: β has no pathwise gradient (REINFORCE only)."""
        theta, beta = self.split(w.detach().to(self.dtype))
        g, _ = self._theta_grad(theta, ue, step, beta)
        return torch.cat([g, torch.zeros(self.policy_dim, dtype=self.dtype, device=g.device)])

    def local_train(
        self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn, state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """K SGD steps on θ with augmented batches; with ``policy = "search"`` also K REINFORCE
        steps on β. ``state`` keeps the UE's baseline ``aug.baseline``, the mean square of the
        advantage ``aug.adv_ms`` and the reward count ``aug.count`` (``[1]`` float64 each)."""
        w = w.detach().to(self.dtype).clone()
        theta, beta = self.split(w)
        a = self.cfg.augment
        stats = ReinforceStats.load(state)
        fixed_val = a.val_batch_size == 0 or a.val_batch_size >= len(self.base.ue_validation_indices(ue))
        val_before: float | None = None  # L_val(θ) carried over from the last step when the batch is fixed
        for s in range(first_step, first_step + steps):
            g, sample = self._theta_grad(theta, ue, s, beta)
            new = torch.sub(theta, g, alpha=lr(s))  # same rounding as Workload.local_sgd
            if self.search:
                xv, yv = self.validation_batch(ue, s)
                with torch.no_grad():
                    before = float(self.base.loss(theta, xv, yv)) if val_before is None else val_before
                    after = float(self.base.loss(new, xv, yv))
                val_before = after if fixed_val else None
                stats.step(self.space, beta, sample, before - after, a)
            theta.copy_(new)
        if self.search:
            stats.store(state)
        return w

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """The base CNN's ``loss``/``accuracy``/``train_loss`` on θ; with a searched policy also
        ``policy_entropy`` (nats, log K = uniform), ``policy_top`` (most likely sub-policy id)
        and ``policy_top_prob``."""
        theta, beta = self.split(w.detach().to(self.dtype))
        out = self.base.evaluate(theta)
        if self.search:
            out.update(policy_stats(self.space, beta))
        return out

    def describe_policy(self, w: torch.Tensor, top: int = 3) -> list[str]:
        """The ``top`` most likely sub-policies of ``w``'s β, as text (empty unless searching)."""
        return self.space.describe(self.split(w)[1], top) if self.search else []

