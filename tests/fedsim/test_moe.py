"""Federated MoE language model (StableMoE: Dai et al., ACL 2022; topic-Markov tokens): losses against
direct computations, the topic-Markov floor, gradients, StableMoE's frozen stage 2, and Switch vs
StableMoE end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedsim.config import apply_overrides, validate
from fedsim.errors import ConfigError
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads.moe import (
    MoeLm,
    MoeLmConfig,
    capacity_keep,
    distill_loss,
    expert_ffn,
    sigmoid_gate,
    stablemoe_balance_loss,
    switch_balance_loss,
)
from fedsim.workloads.tokens import entropy_rate, make_source, sample_sequences, split_corpus

SMALL = dict(num_ues=3, train_seqs_per_ue=8, test_seqs_per_ue=4, seq_len=12, d_model=16, d_ff=16, batch_size=4)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ losses vs direct computation


def test_stablemoe_balance_loss_matches_direct() -> None:
    s = torch.randn(7, 3, generator=_gen(1), dtype=torch.float64)
    a = torch.tensor([0, 0, 0, 1, 2, 2, 0])
    n, N = 7, 3
    nbar = n / N
    direct = 0.0
    for i in range(N):
        members = [t for t in range(n) if a[t] == i]
        ratio = (len(members) - nbar) / nbar
        direct += ratio * sum(1 / (1 + math.exp(-float(s[t, i]))) for t in members)
    assert float(stablemoe_balance_loss(s, a)) == pytest.approx(direct / n, rel=1e-12)
    # the load ratio is a constant: the gradient reaches only (t, a_t), as ratio * sigma'(s)
    s.requires_grad_(True)
    (g,) = torch.autograd.grad(stablemoe_balance_loss(s, a), s)
    sig = torch.sigmoid(s.detach())
    expect = torch.zeros_like(g)
    counts = torch.bincount(a, minlength=N).double()
    for t in range(n):
        expect[t, a[t]] = (counts[a[t]] - nbar) / nbar * sig[t, a[t]] * (1 - sig[t, a[t]]) / n
    torch.testing.assert_close(g, expect)


def test_switch_balance_loss_matches_direct() -> None:
    probs = torch.softmax(torch.randn(6, 4, generator=_gen(2), dtype=torch.float64), -1)
    a = probs.argmax(-1)
    direct = 4 * sum((a == i).double().mean() * probs[:, i].mean() for i in range(4))
    assert float(switch_balance_loss(probs, a)) == pytest.approx(float(direct), rel=1e-12)


def test_gate_and_distillation_match_direct() -> None:
    s = torch.randn(5, 4, generator=_gen(3), dtype=torch.float64)
    s_hat = torch.randn(5, 4, generator=_gen(4), dtype=torch.float64)
    a = s.argmax(-1)
    gate = [1 / (1 + math.exp(-float(s[t, a[t]]))) for t in range(5)]
    torch.testing.assert_close(sigmoid_gate(s, a), torch.tensor(gate, dtype=torch.float64))
    direct = -sum(float(s_hat[t, a[t]]) - math.log(sum(math.exp(float(v)) for v in s_hat[t])) for t in range(5)) / 5
    assert float(distill_loss(s_hat, a)) == pytest.approx(direct, rel=1e-12)


def test_expert_ffn_and_capacity_match_direct() -> None:
    g = _gen(5)
    n, d, f, N = 6, 3, 4, 2
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    w1, b1 = torch.randn(N, d, f, generator=g, dtype=torch.float64), torch.randn(N, f, generator=g, dtype=torch.float64)
    w2, b2 = torch.randn(N, f, d, generator=g, dtype=torch.float64), torch.randn(N, d, generator=g, dtype=torch.float64)
    a = torch.tensor([1, 0, 1, 1, 1, 0])
    out = expert_ffn(z, a, w1, b1, w2, b2)
    for t in range(n):
        e = int(a[t])
        torch.testing.assert_close(out[t], F.gelu(z[t] @ w1[e] + b1[e]) @ w2[e] + b2[e])
    # capacity ceil(1.0 * 6 / 2) = 3: the 4th token routed to expert 1 (index 4) is dropped
    assert capacity_keep(a, N, 1.0).tolist() == [True, True, True, True, False, True]
    assert capacity_keep(a, N, 0.0).all()


# ------------------------------------------------------------------ data and floor


def test_generator_empirical_entropy_approaches_entropy_rate() -> None:
    src = make_source(0, vocab_size=32, num_topics=2, branching=3, zipf_exponent=1.1, unigram_mix=0.2, leak=0.02)
    for m in range(2):
        assert src.entropy_rate[m] == pytest.approx(entropy_rate(src.P[m], src.mu[m]))
        np.testing.assert_allclose(src.mu[m] @ src.P[m], src.mu[m], atol=1e-12)
        pi = np.eye(2)[m]
        x, topics = sample_sequences(src, pi, 2000, 64, _gen(10 + m))
        assert (topics == m).all()
        pairs = torch.stack([x[:, :-1].reshape(-1), x[:, 1:].reshape(-1)], 1)
        # oracle cross-entropy along the sample (ergodic average of -log P(x_t, x_t+1))
        oracle = -np.log(src.P[m][pairs[:, 0], pairs[:, 1]]).mean()
        # plug-in conditional entropy from bigram counts (does not use P)
        counts = np.zeros((32, 32))
        np.add.at(counts, (pairs[:, 0].numpy(), pairs[:, 1].numpy()), 1)
        rows = counts.sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            plug_in = -np.nansum(counts / rows.sum() * np.log(counts / rows))
        assert oracle == pytest.approx(src.entropy_rate[m], abs=0.01)
        assert plug_in == pytest.approx(src.entropy_rate[m], abs=0.02)


def test_floor_bounds_and_text_split(tmp_path: Path) -> None:
    wl = MoeLm(MoeLmConfig(router="switch", **SMALL), seed=0)
    assert 0 < wl.floor < wl.floor_upper < math.log(wl.V)
    lo, hi = wl.ue_floor(0)
    assert lo <= hi
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    wt = MoeLm(MoeLmConfig(router="switch", text_path=str(path), **SMALL), seed=0)
    assert wt.V == len(set(path.read_text()))
    assert "ppl_floor" not in wt.evaluate(wt.init_params())  # no known floor, and never NaN
    parts = split_corpus(torch.arange(100), 2, 10, 0.2)
    assert [(len(a), len(b)) for a, b in parts] == [(4, 1), (4, 1)]


# ------------------------------------------------------------------ gradients, stage 2, config


@pytest.mark.parametrize("router,stage2", [("switch", None), ("stablemoe", 10**6), ("stablemoe", 0)])
def test_stochastic_grad_matches_finite_differences(router: str, stage2: int | None) -> None:
    wl = MoeLm(MoeLmConfig(router=router, stage2_step=stage2, **SMALL), seed=1)
    w = wl.init_params().double() + 0.05 * torch.randn(wl.dim, generator=_gen(6), dtype=torch.float64)
    g = wl.stochastic_grad(w, ue=1, step=3)
    assert g.dtype == torch.float64 and g.shape == (wl.dim,)
    x = wl.batch(1, 3)
    mode = wl.train_mode(3)
    w_ad = w.clone().requires_grad_(True)
    (g_ad,) = torch.autograd.grad(wl.loss(w_ad, x, mode), w_ad)
    torch.testing.assert_close(g, g_ad, rtol=0, atol=0)
    for k in range(3):
        v = torch.randn(wl.dim, generator=_gen(20 + k), dtype=torch.float64)
        eps = 1e-6
        fd = (wl.loss(w + eps * v, x, mode) - wl.loss(w - eps * v, x, mode)) / (2 * eps)
        assert float(g @ v) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)
    if router == "stablemoe":
        router_g = g[wl.frozen_mask(10**7) if stage2 == 0 else wl._router_mask]
        assert (router_g == 0).all() == (stage2 == 0)


def test_stage2_local_adam_keeps_router_fixed() -> None:
    wl = MoeLm(MoeLmConfig(router="stablemoe", stage2_step=4, **SMALL), seed=0)
    w0, state = wl.init_params(), {}
    w1 = wl.local_train(w0, 0, 0, 4, lambda s: 0.01, state)  # stage 1: router trains
    assert not torch.equal(w1[wl._router_mask], w0[wl._router_mask])
    w2 = wl.local_train(w1, 0, 4, 4, lambda s: 0.01, state)  # stage 2: momentum must not leak
    assert torch.equal(w2[wl._router_mask], w1[wl._router_mask])
    assert not torch.equal(w2[~wl._router_mask], w1[~wl._router_mask])
    assert wl.frozen_mask(3).sum() == 0 and torch.equal(wl.frozen_mask(4), wl._router_mask)


def test_determinism_and_analytics_state() -> None:
    cfg = MoeLmConfig(router="stablemoe", total_steps=10, **SMALL)
    a, b = MoeLm(cfg, seed=3), MoeLm(cfg, seed=3)
    torch.testing.assert_close(a.init_params(), b.init_params(), rtol=0, atol=0)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.ue_data(2), b.ue_data(2))
    torch.testing.assert_close(a.stochastic_grad(a.init_params(), 2, 5), b.stochastic_grad(b.init_params(), 2, 5),
                               rtol=0, atol=0)
    assert not torch.equal(MoeLm(cfg, seed=4).x_test, a.x_test)
    w0 = a.init_params()
    first = a.evaluate(w0)
    assert "routing_fluctuation" not in first and first["ppl_floor"] == pytest.approx(math.exp(first["loss_floor"]))
    assert sum(map(sum, first["ue_expert_load"])) == a.x_test[:, :-1].numel()
    w1 = w0 + 0.5 * torch.randn(a.dim, generator=_gen(7))
    assert 0 <= a.evaluate(w1)["routing_fluctuation"] <= 1
    assert a.evaluate(w1)["routing_fluctuation"] == 0.0
    assert "routing_fluctuation" not in a.evaluate(w0)  # round 0 of a new run resets the reference
    rows = a.evaluate_many(torch.stack([w1, w1, w1]))
    assert [r["routing_disagreement"] for r in rows] == [0.0, 0.0, 0.0]
    rows = a.evaluate_many(torch.stack([w1, w1, w0]))
    assert rows[0]["routing_disagreement"] == 0.0 and rows[2]["routing_disagreement"] > 0


@pytest.mark.parametrize("bad", [
    {"router": "stablemoe"},  # needs total_steps or stage2_step
    {"router": "switch", "d_model": 30, "num_heads": 4},
    {"router": "switch", "moe_layers": [2]},
    {"router": "switch", "moe_layers": [1, 1]},
    {"router": "switch", "stage_fraction": 1.0},
    {"router": "switch", "dirichlet_alpha": 0},
    {"router": "switch", "vocab_size": 8, "num_topics": 4, "branching": 3},
    {"router": "switch", "num_experts": 1},
    {"router": "hash"},
    {"router": "switch", "unknown": 1},
])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        parse_workload_config({"name": "moe-lm", **bad})


def test_missing_text_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = MoeLmConfig(router="switch", text_path=str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match="text_path"):
        build_workload(cfg, seed=0)


# ------------------------------------------------------------------ end to end (inline engine)

R, K = 20, 5
E2E = [
    "engine.name='inline'", "output.plot=false", f"rounds={R}", f"train.local_steps={K}", "train.lr.eta=0.01",
    "strategy.transmit='update'",
    f"workload={{name='moe-lm', num_ues=4, train_seqs_per_ue=512, total_steps={R * K}, stage_fraction=0.1}}",
]
PPL_MARGIN = 1.25  # final perplexity <= 1.25 x exp(entropy-rate floor) after 100 local steps (measured 1.10-1.18)


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[list[dict], dict]:
    cfg = validate(apply_overrides({}, [*E2E, f"output.dir={str(tmp_path / name)!r}", *extra]))
    result: dict = {}
    return load_run(run_experiment(cfg, quiet=True, result=result)).metrics, result


def test_end_to_end_stablemoe_vs_switch(tmp_path: Path) -> None:
    stable, res = _run(tmp_path, "stable", "workload.router='stablemoe'")
    switch, _ = _run(tmp_path, "switch", "workload.router='switch'")
    first_stage2_round = math.ceil(round(0.1 * R * K) / K) + 1  # the first round with only stage-2 steps
    fr_stable = [r["routing_fluctuation"] for r in stable if r["round"] >= first_stage2_round]
    fr_switch = [r["routing_fluctuation"] for r in switch if r["round"] >= first_stage2_round]
    assert fr_stable and all(v == 0.0 for v in fr_stable)  # exactly 0 under digital aggregation
    assert np.mean(fr_switch) > 0.01 > np.mean(fr_stable)
    for rows in (stable, switch):
        last = rows[-1]
        assert last["ppl_floor"] == rows[0]["ppl_floor"]  # a constant line
        assert last["perplexity"] <= PPL_MARGIN * last["ppl_floor"], (last["perplexity"], last["ppl_floor"])
    # the frozen router of the full run equals that of a run stopped before the switch
    wl = build_workload(validate(apply_overrides({}, [*E2E, "workload.router='stablemoe'"])).workload, 0)
    _, short = _run(tmp_path, "short", "workload.router='stablemoe'", f"rounds={first_stage2_round - 1}")
    mask = wl._router_mask
    assert torch.equal(res["final_model"][mask], short["final_model"][mask])
    assert not torch.equal(res["final_model"][mask], wl.init_params()[mask])
