"""Exact algorithm equivalences of model §8 items 6-8 and the run-time checks of item 15,
run end to end through the Flower apps on the inline engine (§ numbers: docs/explanation/model.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim.config import ExperimentConfig, apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.runtime.schedule import make_lr
from fedsim.workloads import build_workload

BASE = [
    "engine.name='inline'",
    "output.plot=false",
    "workload={name='synthetic-logreg', num_ues=4, batch_size=0}",
    "rounds=6",
    "train.lr.eta=0.2",
]
FREE = {
    "server-digital": [],
    "server-ota": ["strategy.name='server-ota'"],
    "relay-accumulate": ["strategy.name='serverfree-relay'"],
    "relay-reset": ["strategy.name='serverfree-relay'", "strategy.mode='reset'"],
    "d2d-accumulate": ["strategy.name='serverfree-d2d'", "channel.power_control='none'"],
    "d2d-reset": ["strategy.name='serverfree-d2d'", "strategy.mode='reset'", "channel.power_control='none'"],
}


def config(overrides: list[str]) -> ExperimentConfig:
    return validate(apply_overrides({}, overrides))


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[list[dict], dict]:
    cfg = config([*BASE, f"output.dir={str(tmp_path / name)!r}", *overrides])
    result: dict = {}
    rows = load_run(run_experiment(cfg, quiet=True, result=result)).metrics
    return rows, result


def final_models(result: dict, n: int) -> torch.Tensor:
    if "final_model" in result:
        return result["final_model"].expand(n, -1)
    return torch.stack([result["final_models"][u] for u in range(n)])


def series(rows: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([r[key] for r in rows if key in r], dtype=torch.float64)


@pytest.mark.parametrize("K", [1, 5])
def test_zero_noise_all_strategies_identical(tmp_path: Path, K: int) -> None:
    outs = {name: run(tmp_path, f"{name}-{K}", f"train.local_steps={K}", *extra) for name, extra in FREE.items()}
    ref_rows, ref_res = outs["server-digital"]
    ref_w = final_models(ref_res, 4)
    for name, (rows, res) in outs.items():
        assert [r["round"] for r in rows] == [r["round"] for r in ref_rows], name
        torch.testing.assert_close(series(rows, "gap"), series(ref_rows, "gap"), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(final_models(res, 4), ref_w, rtol=1e-9, atol=1e-12)
    assert series(outs["relay-accumulate"][0], "consensus").abs().max() < 1e-12


def test_common_interference_serverfree_equals_server_ota(tmp_path: Path) -> None:
    noise = ["channel.interference={name='sas', alpha=1.5}", "channel.scale=0.05",
             "channel.interference_mode='common'", "channel.fading='rayleigh'", "channel.h_th=0.3"]
    ota_rows, ota = run(tmp_path, "ota", "strategy.name='server-ota'", *noise)
    free_rows, free = run(tmp_path, "free", "strategy.name='serverfree-relay'", *noise)
    models = final_models(free, 4)
    assert torch.equal(models, ota["final_model"].expand(4, -1))  # bitwise
    assert all(r["consensus"] < 1e-12 for r in free_rows if "consensus" in r)  # w_bar rounding only
    torch.testing.assert_close(series(free_rows, "gap"), series(ota_rows, "gap"), rtol=1e-12, atol=1e-14)
    assert [r["dropouts"] for r in ota_rows[1:]] == [r["dropouts"] for r in free_rows[1:]]


@pytest.mark.parametrize("strategy", ["server-ota", "serverfree-relay"])
def test_overlap_with_zero_delay_equals_sequential(tmp_path: Path, strategy: str) -> None:
    common = [f"strategy.name='{strategy}'", "train.local_steps=3", "channel.interference='gaussian'",
              "channel.scale=0.01", "timing.latency_ratio=0"]
    seq_rows, seq = run(tmp_path, "seq", *common)
    ovl_rows, ovl = run(tmp_path, "ovl", *common, "strategy.overlap.enabled=true")
    torch.testing.assert_close(final_models(ovl, 4), final_models(seq, 4), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(series(ovl_rows, "gap"), series(seq_rows, "gap"), rtol=1e-7, atol=1e-10)


def test_overlap_k1_matches_dga_update(tmp_path: Path) -> None:
    """K = 1, no noise, D = 2: w_m <- w_m - eta grad_m^s - eta (gbar^{s-D} - grad_m^{s-D})."""
    D, R, N = 2, 7, 4
    rows, res = run(tmp_path, "dga", "strategy.overlap.enabled=true", f"timing.latency_ratio={D}",
                    f"rounds={R}", "train.local_steps=1")
    assert rows[1]["delay_steps"] == D
    cfg = config([*BASE, f"rounds={R}"])
    wl = build_workload(cfg.workload, cfg.seed)
    lr = make_lr(cfg.train.lr, R)
    q = wl.ue_weights()
    w = wl.init_params().expand(N, -1).clone()
    grads: list[torch.Tensor] = []
    for s in range(R):
        g = torch.stack([wl.stochastic_grad(w[m], m, s) for m in range(N)])
        grads.append(g)
        w = w - lr(s) * g
        if s - D >= 0:  # the aggregate of step s-D lands after step s
            old = grads[s - D]
            w = w + lr(s - D) * (old - (q.to(old.dtype) @ old))
    for s in range(R - D, R):  # the last D aggregates drain after the final step
        old = grads[s]
        w = w + lr(s) * (old - (q.to(old.dtype) @ old))
    torch.testing.assert_close(final_models(res, N), w, rtol=1e-9, atol=1e-12)


def test_clock_sequential_vs_overlap(tmp_path: Path) -> None:
    K, R, ratio, tau = 2, 6, 5.0, 1e-3
    t = [f"train.local_steps={K}", f"rounds={R}", f"timing.tau_cp={tau}"]
    zero_seq, _ = run(tmp_path, "zs", *t, "timing.latency_ratio=0")
    zero_ovl, _ = run(tmp_path, "zo", *t, "timing.latency_ratio=0", "strategy.overlap.enabled=true")
    assert zero_seq[-1]["sim_time"] == pytest.approx(zero_ovl[-1]["sim_time"])
    seq, _ = run(tmp_path, "s", *t, f"timing.latency_ratio={ratio}")
    ovl, _ = run(tmp_path, "o", *t, f"timing.latency_ratio={ratio}", "strategy.overlap.enabled=true")
    tau_cm = ratio * tau
    assert seq[-1]["sim_time"] == pytest.approx(R * (K * tau + tau_cm))
    assert ovl[-1]["sim_time"] == pytest.approx(R * K * tau + tau_cm)
    single, _ = run(tmp_path, "1", *t, f"timing.latency_ratio={ratio}", "strategy.overlap.enabled=true",
                    "strategy.overlap.in_flight='single'")
    assert single[-1]["sim_time"] == pytest.approx(R * max(K * tau, tau_cm) + tau_cm)


def test_failing_ue_is_excluded_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config([*BASE, "strategy.name='serverfree-relay'"])
    wl = build_workload(cfg.workload, cfg.seed)
    original = type(wl).stochastic_grad

    def flaky(self, w, ue, step):  # UE 2 crashes in round 3 (step 2)
        if ue == 2 and step == 2:
            raise RuntimeError("simulated UE crash")
        return original(self, w, ue, step)

    monkeypatch.setattr(type(wl), "stochastic_grad", flaky)
    for strategy in ("server-ota", "serverfree-relay"):  # per UE: only there is a UE's own code isolated
        rows, _ = run(tmp_path, strategy, f"strategy.name='{strategy}'", "engine.population=false")
        bad = [r for r in rows if r.get("failures")]
        assert [r["round"] for r in bad] == [3]
        assert bad[0]["failed_ues"] == [2]
        assert "simulated UE crash" in bad[0]["failure_reasons"][0]
        assert bad[0]["participants"] == 3
        assert rows[-1]["round"] == 6


def test_consensus_accumulate_plateaus_reset_decays(tmp_path: Path) -> None:
    common = ["workload={name='quadratic', num_ues=8}", "rounds=300", "strategy.name='serverfree-relay'",
              "channel.interference='gaussian'", "channel.scale=0.05", "channel.interference_mode='per_ue'",
              "train.lr.schedule='inverse'", "train.lr.theta=2.0", "train.lr.gamma=20.0", "channel.rho_growth='lr'",
              "channel.rho='fixed-unbounded'"]  # a growing ρ_t soon needs more energy than the budget allows
    acc, _ = run(tmp_path, "acc", *common)
    rst, _ = run(tmp_path, "rst", *common, "strategy.mode='reset'")
    c_acc, c_rst = series(acc, "consensus"), series(rst, "consensus")
    early, late = slice(20, 60), slice(-40, None)
    assert c_acc[late].median() > 0.8 * c_acc[early].median()  # random walk: no contraction
    assert c_rst[late].median() < 0.3 * c_rst[early].median()  # noise shrinks with eta_t
