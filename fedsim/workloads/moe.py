"""Federated mixture-of-experts language model: Switch routing vs StableMoE
(Switch Transformer: Fedus et al.; StableMoE: Dai et al., ACL 2022).

Model: a pre-LN causal Transformer on flat parameter views (token + position embeddings,
``num_layers`` blocks of multi-head attention and a feed-forward sublayer, tied output head).
The FFN of every layer in ``moe_layers`` is a mixture of ``num_experts`` experts with top-1
routing, written as in the StableMoE code: h' = h + g_t · keep_t · FFN_{a_t}(LN(h_t)), where
``keep`` drops tokens over an expert's capacity ``ceil(cf · n / N)`` (training only).

Routers (routing features = h_t, the input of the MoE sublayer):

- ``switch``: p_t = softmax(W_r h_t), a_t = argmax p_t, g_t = p_{t,a_t}; loss
  L_task + α_sw · N Σ_i f_i P_i (f_i = fraction of tokens routed to i, P_i = mean p_{t,i}).
- ``stablemoe`` stage 1 (global step < ``stage2_step``): s_t = E h_t, a_t = argmax s_t,
  g_t = σ(s_{t,a_t}); loss L_task + α_bal L_bal + α_dis L_dis with
  L_bal = (1/n) Σ_i ((|A_i| - n̄)/n̄) Σ_{t∈A_i} σ(s_{t,i}) and
  L_dis = (1/n) Σ_t -log softmax(Ê R[x_t])[a_t] (target under no_grad). The StableMoE code sums
  over tokens; both are divided by n here, like the per-token mean task loss, so α keeps its
  meaning. Stage 2: a_t = argmax Ê R[x_t] (a function of the token id only), g_t = σ(s_{t,a_t}),
  loss L_task; R and Ê get exactly zero gradient. Evaluation always routes StableMoE with the
  distilled router (as the StableMoE code does in stage 1 as well).

Everything (backbone, experts, W_r or E, R, Ê) lives in the flat vector ``w`` and is averaged
by the strategy. Adam moments (``optimizer = "adam"``) stay on the UE. Routing decisions stay
local; the server computes routing analytics on its own probe set (the global test set).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from channels.rng import torch_generator
from fedsim.errors import ConfigError
from fedsim.workloads.base import LrFn, Workload, WorkloadConfig
from fedsim.workloads.moe_parts import (
    capacity_keep,
    distill_loss,
    expert_ffn,
    param_spec,
    routing_metrics,
    sigmoid_gate,
    stablemoe_balance_loss,
    switch_balance_loss,
)
from fedsim.workloads.tokens import (
    load_char_corpus,
    make_source,
    shannon_entropy,
    split_corpus,
    topic_mixture,
    ue_sequences,
)

_DT = torch.float32


class MoeLmConfig(WorkloadConfig):
    """Federated MoE language model on topic-Markov tokens (or a character-level text file)."""

    name: Literal["moe-lm"] = "moe-lm"

    def build(self, seed: int) -> MoeLm:
        return MoeLm(self, seed)
    num_ues: int = Field(8, ge=1, le=10_000, description="N, number of UEs")
    router: Literal["switch", "stablemoe"] = Field("stablemoe", description="routing method")
    # data
    text_path: str | None = Field(None, description="UTF-8 text file tokenised by characters; None = topic-Markov")
    vocab_size: int = Field(64, ge=2, le=4096, description="V (topic-Markov)")
    num_topics: int = Field(4, ge=1, description="M topics (topic-Markov)")
    dirichlet_alpha: float = Field(0.3, gt=0, description="UE topic mixtures ~ Dir(alpha)")
    branching: int = Field(3, ge=1, description="bigram successors per token within the topic slice")
    zipf_exponent: float = Field(1.1, ge=0, description="Zipf exponent of each topic's unigram")
    unigram_mix: float = Field(0.2, ge=0, le=1, description="weight of the unigram in each transition row")
    leak: float = Field(0.02, gt=0, lt=1, description="mass spread uniformly over all V tokens")
    seq_len: int = Field(32, ge=2, le=1024, description="L, tokens per sequence")
    train_seqs_per_ue: int = Field(256, ge=1, description="training sequences per UE (topic-Markov)")
    test_seqs_per_ue: int = Field(16, ge=1, description="test sequences per UE (topic-Markov)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="per-UE test share (text file)")
    batch_size: int = Field(16, ge=0, description="sequences per minibatch; 0 = full local batch")
    # model
    d_model: int = Field(32, ge=4, le=1024)
    num_heads: int = Field(2, ge=1)
    num_layers: int = Field(2, ge=1, le=24)
    d_ff: int = Field(64, ge=1, description="hidden width of every FFN and expert")
    moe_layers: tuple[int, ...] = Field((1,), min_length=1, description="0-based layers whose FFN is an MoE")
    num_experts: int = Field(4, ge=2, le=256)
    router_dim: int = Field(16, ge=1, description="width of StableMoE's distilled word-embedding router")
    capacity_factor: float = Field(2.0, ge=0, description="expert capacity cf * n / N in training; 0 = none")
    # losses and stages (StableMoE README defaults; Switch Transformer's 0.01)
    balance_weight: float = Field(0.3, ge=0, description="alpha_bal (StableMoE)")
    distill_weight: float = Field(0.3, ge=0, description="alpha_dis (StableMoE)")
    switch_balance_weight: float = Field(0.01, ge=0, description="alpha of Switch's balance loss")
    stage_fraction: float = Field(0.1, gt=0, lt=1, description="stage 2 starts at this fraction of total_steps")
    total_steps: int | None = Field(None, gt=0, description="rounds * train.local_steps of the run")
    stage2_step: int | None = Field(None, ge=0, description="first global step of stage 2 (overrides the fraction)")
    # local optimiser
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam: local Adam, moments kept on the UE")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.98, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)

    @model_validator(mode="after")
    def _check(self) -> MoeLmConfig:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model = {self.d_model} must be divisible by num_heads = {self.num_heads}")
        bad = [i for i in self.moe_layers if not 0 <= i < self.num_layers]
        if bad or len(set(self.moe_layers)) != len(self.moe_layers):
            raise ValueError(f"moe_layers must be distinct indices in [0, {self.num_layers}), got {self.moe_layers}")
        if self.text_path is None and self.vocab_size // self.num_topics < self.branching:
            raise ValueError("vocab_size // num_topics must be at least branching")
        if self.router == "stablemoe" and self.total_steps is None and self.stage2_step is None:
            raise ValueError("router 'stablemoe' needs total_steps (= rounds * train.local_steps) or stage2_step")
        return self

    def resolved_stage2_step(self) -> int | None:
        """First global step of StableMoE's stage 2 (None for Switch)."""
        if self.router != "stablemoe":
            return None
        if self.stage2_step is not None:
            return self.stage2_step
        return max(1, round(self.stage_fraction * self.total_steps))


# ------------------------------------------------------------------------------ pure pieces


class MoeLm(Workload):
    """See the module docstring. Analytics state (the probe routing of the last ``evaluate``)
    lives on this object, which persists in the server process between rounds."""

    dtype = _DT

    def __init__(self, cfg: MoeLmConfig, seed: int) -> None:
        self.cfg, self.seed = cfg, seed
        self.name = cfg.name
        self.num_ues = cfg.num_ues
        self.custom_local_train = cfg.optimizer == "adam"
        self.stage2 = cfg.resolved_stage2_step()
        self._load_data()
        self._build_layout()
        self._prev_routes: torch.Tensor | None = None
        self._w0: torch.Tensor | None = None

    # -- data -----------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        self.source = None
        self.floor: float | None = None
        if cfg.text_path is not None:
            try:
                ids, self.vocab = load_char_corpus(cfg.text_path)
                parts = split_corpus(ids, cfg.num_ues, cfg.seq_len, cfg.test_fraction)
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ConfigError(f"workload.text_path: {exc}") from None
            self.V = len(self.vocab)
            self._train = [p[0] for p in parts]
            tests = [p[1] for p in parts]
        else:
            self.V = cfg.vocab_size
            self.source = make_source(self.seed, cfg.vocab_size, cfg.num_topics, cfg.branching,
                                      cfg.zipf_exponent, cfg.unigram_mix, cfg.leak)
            self.topic_mixtures = np.stack([topic_mixture(self.seed, k, cfg.num_topics, cfg.dirichlet_alpha)
                                            for k in range(cfg.num_ues)])
            self._train, tests, test_topics = [], [], []
            n_tr, n_te = cfg.train_seqs_per_ue, cfg.test_seqs_per_ue
            for k in range(cfg.num_ues):
                x, t = ue_sequences(self.source, self.seed, k, self.topic_mixtures[k], n_tr + n_te, cfg.seq_len)
                self._train.append(x[:n_tr])
                tests.append(x[n_tr:])
                test_topics.append(t[n_tr:])
            rates = torch.from_numpy(self.source.entropy_rate)
            #: entropy-rate floor of the test set given its topics (lower bound on next-token CE)
            self.floor = float(rates[torch.cat(test_topics)].mean())
            pi_bar = self.topic_mixtures.mean(0)
            #: upper end: + H(mean topic mixture) / (L - 1) for not knowing the topic
            self.floor_upper = self.floor + shannon_entropy(pi_bar) / (cfg.seq_len - 1)
        self.x_test = torch.cat(tests)
        self.test_owner = torch.cat([torch.full((len(t),), k) for k, t in enumerate(tests)])

    def ue_floor(self, ue: int) -> tuple[float, float]:
        """(lower, upper) per-token CE floor of UE ``ue``'s source: Σ_m π_km H_m (+ H(π_k)/(L-1))."""
        if self.source is None:
            raise ValueError("no known floor for a text corpus")
        pi = self.topic_mixtures[ue]
        lo = float(pi @ self.source.entropy_rate)
        return lo, lo + shannon_entropy(pi) / (self.cfg.seq_len - 1)

    def num_examples(self, ue: int) -> int:
        return len(self._train[ue])

    def ue_data(self, ue: int) -> torch.Tensor:
        """UE ``ue``'s training sequences ``[n_k, L]`` int64."""
        return self._train[ue]

    def batch(self, ue: int, step: int) -> torch.Tensor:
        """Minibatch ``[B, L]`` for global ``step``, without replacement from
        ``torch_generator(seed, "minibatch", step, ue)`` (all sequences when batch_size is 0)."""
        x, bs = self._train[ue], self.cfg.batch_size
        if bs == 0 or bs >= len(x):
            return x
        return x[torch.randperm(len(x), generator=torch_generator(self.seed, "minibatch", step, ue))[:bs]]

    # -- parameters -----------------------------------------------------------------------
    def _build_layout(self) -> None:
        spec = param_spec(self.cfg, self.V)
        self._spec = spec
        self._sizes = [math.prod(s) for _, s, _ in spec]
        self.dim = sum(self._sizes)
        mask = torch.zeros(self.dim, dtype=torch.bool)
        offset = 0
        for (name, _, _), size in zip(spec, self._sizes, strict=True):
            if ".dr." in name:
                mask[offset : offset + size] = True
            offset += size
        self._router_mask = mask

    def param_views(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> view of ``w [d]`` shaped like that parameter (no copy)."""
        return {name: c.view(shape) for (name, shape, _), c in zip(self._spec, w.split(self._sizes), strict=True)}

    def frozen_mask(self, step: int) -> torch.Tensor:
        """``[d]`` bool: coordinates frozen at global ``step`` (StableMoE's distilled router in stage 2).

        Their gradient and local update are exactly zero; a strategy may also keep channel noise off them.
        """
        if self.stage2 is None or step < self.stage2:
            return torch.zeros(self.dim, dtype=torch.bool)
        return self._router_mask.clone()

    def init_params(self) -> torch.Tensor:
        """GPT-style init from stream ``"init"``: N(0, 0.02²) weights, zero biases, unit LN gains, zero
        second expert layer, orthogonal centroids (gain 0.1), router embedding N(0, 1/router_dim). ``[d]``."""
        g = torch_generator(self.seed, "init")
        out = []
        for _, shape, kind in self._spec:
            n = math.prod(shape)
            if kind == "normal":
                out.append(0.02 * torch.randn(n, generator=g, dtype=_DT))
            elif kind == "ones":
                out.append(torch.ones(n, dtype=_DT))
            elif kind == "zeros":
                out.append(torch.zeros(n, dtype=_DT))
            elif kind == "embedding":
                out.append(torch.randn(n, generator=g, dtype=_DT) / math.sqrt(shape[-1]))
            else:  # orthogonal rows (or columns), gain 0.1
                q, r = torch.linalg.qr(torch.randn(max(shape), min(shape), generator=g, dtype=torch.float64))
                q = q * torch.sign(torch.diagonal(r))
                out.append((0.1 * (q if shape[0] >= shape[1] else q.T)).to(_DT).reshape(-1))
        return torch.cat(out)

    # -- model ----------------------------------------------------------------------------
    def forward(self, w: torch.Tensor, x: torch.Tensor, *, mode: str) -> tuple[torch.Tensor, torch.Tensor,
                                                                               list[torch.Tensor]]:
        """Next-token logits and routing for inputs ``x [B, T]`` (T ≤ L).

        ``mode``: "switch", "stage1", "stage2" (training) or "eval". Returns ``(logits [B, T, V],
        aux_loss scalar, routes)`` with ``routes`` one ``[B*T]`` expert-index tensor per MoE layer.
        """
        c, p = self.cfg, self.param_views(w)
        B, T = x.shape
        d, H = c.d_model, c.num_heads
        h = p["tok_emb"][x] + p["pos_emb"][:T]
        aux = torch.zeros((), dtype=w.dtype)
        routes: list[torch.Tensor] = []
        for i in range(c.num_layers):
            q = f"l{i}."
            z = F.layer_norm(h, (d,), p[q + "ln1.w"], p[q + "ln1.b"])
            qkv = (z @ p[q + "qkv"] + p[q + "qkv_b"]).view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
            h = h + att.transpose(1, 2).reshape(B, T, d) @ p[q + "proj"] + p[q + "proj_b"]
            z = F.layer_norm(h, (d,), p[q + "ln2.w"], p[q + "ln2.b"])
            if i not in c.moe_layers:
                h = h + F.gelu(z @ p[q + "ff1"] + p[q + "ff1_b"]) @ p[q + "ff2"] + p[q + "ff2_b"]
                continue
            hf, zf = h.reshape(B * T, d), z.reshape(B * T, d)
            a, gate, layer_aux = self._route(p, q, hf, x.reshape(-1), mode)
            aux = aux + layer_aux
            y = gate * expert_ffn(zf, a, p[q + "w1"], p[q + "b1"], p[q + "w2"], p[q + "b2"])
            if mode != "eval":
                y = y * capacity_keep(a, c.num_experts, c.capacity_factor)[:, None].to(y.dtype)
            h = h + y.view(B, T, d)
            routes.append(a)
        h = F.layer_norm(h, (d,), p["lnf.w"], p["lnf.b"])
        return h @ p["tok_emb"].T + p["head_b"], aux, routes

    def _route(self, p: dict[str, torch.Tensor], q: str, h: torch.Tensor, ids: torch.Tensor,
               mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(a [n], gate [n, 1], weighted aux loss)`` for routing features ``h [n, d]``, token ``ids [n]``."""
        c = self.cfg
        if c.router == "switch":
            probs = torch.softmax(h @ p[q + "router"].T, dim=-1)
            a = probs.argmax(-1)
            gate = probs.gather(1, a[:, None])
            aux = c.switch_balance_weight * switch_balance_loss(probs, a) if mode != "eval" else probs.new_zeros(())
            return a, gate, aux
        s = h @ p[q + "centroids"].T
        s_hat = p[q + "dr.emb"][ids] @ p[q + "dr.centroids"].T
        if mode == "stage1":
            a = s.detach().argmax(-1)
            aux = c.balance_weight * stablemoe_balance_loss(s, a) + c.distill_weight * distill_loss(s_hat, a)
        else:  # stage 2 and evaluation: the distilled router decides, and is not trained
            a = s_hat.detach().argmax(-1)
            aux = s.new_zeros(())
        return a, sigmoid_gate(s, a)[:, None], aux

    def train_mode(self, step: int) -> str:
        """Forward mode for global ``step``: "switch", "stage1" or "stage2"."""
        if self.cfg.router == "switch":
            return "switch"
        return "stage1" if step < self.stage2 else "stage2"

    def loss(self, w: torch.Tensor, x: torch.Tensor, mode: str) -> torch.Tensor:
        """Training objective on sequences ``x [B, L]``: mean next-token CE + weighted aux losses."""
        logits, aux, _ = self.forward(w, x[:, :-1], mode=mode)
        return F.cross_entropy(logits.reshape(-1, self.V), x[:, 1:].reshape(-1)) + aux

    def stochastic_grad(self, w: torch.Tensor, ue: int, step: int) -> torch.Tensor:
        x = self.batch(ue, step)
        w = w.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(self.loss(w, x, self.train_mode(step)), w)
        return g

    def local_train(self, w: torch.Tensor, ue: int, first_step: int, steps: int, lr: LrFn,
                    state: dict[str, torch.Tensor]) -> torch.Tensor:
        """K local steps: SGD, or Adam whose moments ``state["adam_m"], ["adam_v"] [d]`` and step
        count ``["adam_t"]`` stay on the UE across rounds. Frozen coordinates never move."""
        if self.cfg.optimizer == "sgd":
            return self.local_sgd(w, ue, first_step, steps, lr)
        c = self.cfg  # frozen: stage-1 momentum must not keep moving the frozen router
        return self.local_adam(w, ue, first_step, steps, lr, state, (c.adam_beta1, c.adam_beta2),
                               c.adam_eps, frozen=self.frozen_mask)

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def _eval_one(self, w: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(test CE, probe routes ``[n_probe, n_moe]``) of model ``w``; probe = all test input tokens."""
        x = self.x_test
        logits, _, routes = self.forward(w.detach().to(_DT), x[:, :-1], mode="eval")
        ce = float(F.cross_entropy(logits.reshape(-1, self.V), x[:, 1:].reshape(-1)))
        return ce, torch.stack(routes, 1)

    def _metrics(self, ce: float, routes: torch.Tensor) -> dict[str, float | list]:
        row = routing_metrics(ce, routes, self.test_owner, self.num_ues, self.cfg.num_experts, self.cfg.seq_len - 1)
        if self.floor is not None:
            row.update(loss_floor=self.floor, ppl_floor=math.exp(self.floor), loss_floor_upper=self.floor_upper)
        return row

    def evaluate(self, w: torch.Tensor) -> dict[str, float]:
        """Test ``loss`` (next-token CE), ``perplexity``, the floor (``loss_floor``, ``ppl_floor``,
        ``loss_floor_upper``; topic-Markov only), ``expert_load_cv`` (probe loads, mean over MoE
        layers), ``ue_expert_load`` (``[N_ue][E]`` probe-token counts by owning UE, summed over MoE
        layers), ``ue_load_cv_mean``, and ``routing_fluctuation``: the fraction of probe
        (token, MoE layer) pairs whose expert changed since the previous ``evaluate`` call. The
        reference resets whenever ``w`` equals the initial model (every run's round 0), so runs
        that share this cached object do not leak into each other."""
        if self._w0 is None:
            self._w0 = self.init_params().to(self.device)
        ce, routes = self._eval_one(w)
        row = self._metrics(ce, routes)
        if torch.allclose(w.detach().to(_DT), self._w0, rtol=1e-6, atol=1e-8):
            self._prev_routes = None
        if self._prev_routes is not None:
            row["routing_fluctuation"] = float((routes != self._prev_routes).to(torch.float64).mean())
        self._prev_routes = routes
        return row  # type: ignore[return-value]

    def evaluate_many(self, ws: torch.Tensor) -> list[dict[str, float]]:
        """Per-model metrics for ``ws [M, d]`` (fluctuation state untouched), each with
        ``routing_disagreement``: the fraction of probe (token, layer) pairs that this model routes
        differently from the majority vote of all M models (ties go to the lower expert id)."""
        evals = [self._eval_one(w) for w in ws]
        R = torch.stack([r for _, r in evals])  # [M, n_probe, n_moe]
        votes = F.one_hot(R, self.cfg.num_experts).sum(0)
        majority = votes.argmax(-1)
        rows = []
        for (ce, routes), r in zip(evals, R, strict=True):
            row = self._metrics(ce, routes)
            row["routing_disagreement"] = float((r != majority).to(torch.float64).mean())
            rows.append(row)
        return rows  # type: ignore[return-value]
