"""Every shipped experiment file runs at a tiny size, and its rows agree with references computed
independently of the run: the workload's own evaluation of the initial model, the simulated clock
from the latency formulas of model.md §5 by hand, participation from the config, parameter counts
of the found architectures by hand, closed-form gradient descent on the quadratic and on the
pooled logistic objective, and the bounds the docs state (entropies ≤ log of the
number of choices, cross-entropy ≥ the source's entropy rate, transmit energy within the budget)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from fedsim.config import EXPERIMENTS_DIR, read_toml
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.sweep import expand_sweep
from fedsim.workloads import build_workload, parse_workload_config

EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml"))

#: experiment -> overrides for a tiny run: one variant (an arm of the file's own sweep where named), few
#: rounds, few UEs and steps. Every file must be listed (test_every_shipped_file_is_covered).
TINY: dict[str, list[str]] = {
    "quickstart": ["rounds=3", "sweep={}"],
    "grid_240": ["rounds=4", "sweep={}", "strategy.name='server-digital'"],  # the noise-free arm
    "heavy_tail": ["rounds=3", "sweep={}", "workload.num_ues=6"],
    "server_vs_serverfree": ["rounds=5", "sweep={}", "strategy.name='server-digital'", "workload.num_ues=6",
                             "channel.rho='fixed-unbounded'"],  # theory.md: then every theory condition holds
    "overlap_latency": ["rounds=3", "sweep={}", "strategy.overlap.enabled=true", "timing.latency_ratio=5.0",
                        "workload.num_ues=6"],
    "moe_switch_vs_stable": ["rounds=2", "sweep={}", "workload.num_ues=3", "workload.total_steps=4",
                             "train.local_steps=2"],
    "augment_mnist": ["rounds=1", "sweep={}", "eval_every=1", "train.local_steps=2", "workload.num_ues=3"],
    "daas_mnist": ["rounds=1", "sweep={}", "eval_every=1", "train.local_steps=1", "workload.num_ues=2",
                   "workload.channels=4", "workload.retrain_rounds=1"],
    "nas_dash": ["rounds=1", "sweep={}", "train.local_steps=2", "workload.num_ues=3", "workload.retrain_rounds=1"],
    "nas_dash_large": ["rounds=1", "sweep={}", "train.local_steps=1", "workload.num_ues=2",
                       "workload.retrain_rounds=1"],
    "nas_gdas": ["rounds=1", "sweep={}", "eval_every=1", "train.local_steps=2", "workload.num_ues=3",
                 "workload.retrain_rounds=1"],
    "nas_spider": ["rounds=2", "sweep={}", "eval_every=1", "train.local_steps=2", "workload.num_ues=3",
                   "workload.retrain_rounds=1"],
    "nas_tabnas": ["rounds=2", "sweep={}", "train.local_steps=2", "workload.num_ues=3", "workload.retrain_rounds=1"],
    "nas_tabnas_large": ["rounds=2", "sweep={}", "train.local_steps=2", "workload.num_ues=3",
                         "workload.retrain_rounds=1"],
    "latency_predictor": ["rounds=2", "sweep={}", "eval_every=1", "train.local_steps=2", "workload.num_ues=3",
                          "workload.adapt_steps=20"],
    "graph_hgpsl": ["rounds=1", "sweep={}", "eval_every=1", "train.local_steps=1", "workload.num_ues=3",
                    "workload.hidden=8"],
    "seg_unet": ["rounds=1", "sweep={}", "eval_every=1", "train.local_steps=1", "workload.num_ues=3",
                 "workload.slices_per_ue=4", "workload.test_per_site=2", "workload.filters=[4, 8]"],
}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_shipped_file_is_covered() -> None:
    assert set(TINY) == set(EXPERIMENTS)
    for stem in EXPERIMENTS:  # every file validates, sweep variants included
        assert expand_sweep(read_toml(EXPERIMENTS_DIR / f"{stem}.toml"), [], source=stem)


def _run(stem: str, tmp_path: Path) -> tuple[Any, list[dict], dict, Path]:
    overrides = [*TINY[stem], "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}",
                 "checkpoint.every=0"]
    variants = expand_sweep(read_toml(EXPERIMENTS_DIR / f"{stem}.toml"), overrides, source=stem)
    assert len(variants) == 1
    cfg = variants[0].config
    run = load_run(run_experiment(cfg, quiet=True, plot=False))
    assert run.summary["status"] == "completed"
    return cfg, run.metrics, run.summary, run.path


def _tau_cm(cfg, receiver: str, d: int, n: int) -> float:
    """model.md §5 by hand: timing.latency_ratio·τ_cp where set, else (defaults: W = 1000 resources,
    T_sym = 1 µs, 32 bits at 1 Mbit/s, no propagation) analog server or relay 2⌈d/W⌉T_sym, digital
    TDMA (N + 1)·d·b/rate."""
    if cfg.timing.latency_ratio is not None:
        return cfg.timing.latency_ratio * cfg.timing.tau_cp
    ch = cfg.channel
    assert ch.propagation == 0.0 and ch.relay_processing == 0.0
    if receiver == "digital":
        return (n + 1) * d * ch.bits / ch.rate
    return 2 * math.ceil(d / ch.resources) * ch.symbol_time


RECEIVER = {"server-ota": "server", "serverfree-relay": "relay", "server-digital": "digital"}


def _check_common(cfg, rows: list[dict], wl) -> None:
    n, k, tau_cp = cfg.workload.num_ues, cfg.train.local_steps, cfg.timing.tau_cp
    assert [r["round"] for r in rows] == list(range(cfg.rounds + 1))
    assert all(r["nonfinite"] == 0 for r in rows)
    # round 0 is the initial model, evaluated by the workload itself
    ev = wl.evaluate(wl.init_params())
    shared = [key for key in ev if key in rows[0] and isinstance(ev[key], float)]
    assert "loss" in shared
    for key in shared:
        assert rows[0][key] == pytest.approx(ev[key], rel=1e-5, abs=1e-7), key
    # full participation, no faults: every UE in every round
    for r in rows[1:]:
        assert r["participants"] == r["n_active"] == n and r["dropouts"] == 0 and r["failures"] == 0
    # the simulated clock: K·τ_cp + τ_cm per round (the overlapped schedule hides τ_cm but the last
    # exchange lands τ_cm after the last step)
    tau_cm = _tau_cm(cfg, RECEIVER[cfg.strategy.name], wl.dim, n)
    times = [r["sim_time"] for r in rows]
    assert times[0] == 0.0
    if cfg.strategy.overlap.enabled:
        want = [r * k * tau_cp for r in range(cfg.rounds + 1)]
        want[-1] += tau_cm
    else:
        want = [r * (k * tau_cp + tau_cm) for r in range(cfg.rounds + 1)]
    assert times == pytest.approx(want, rel=1e-9, abs=1e-15)
    for r in rows[1:]:  # every budgeted power rule keeps each UE within P
        if r.get("tx_energy_max") is not None:
            assert r["tx_energy_max"] <= 1.0 + 1e-9


def _check_search(cfg, rows: list[dict], summary: dict, run_dir: Path, params_by_hand) -> dict:
    found = summary["search"]
    arch = found["architecture"]
    assert found["resources"]["params"] == params_by_hand(arch)
    re = found["retrain"]
    assert re["status"] == "completed" and re["rounds"] == cfg.workload.retrain_rounds
    retrain = load_run(run_dir / re["run_dir"])
    assert retrain.config["workload"]["arch"] == arch.get("genotype", arch)  # DAAS: the genotype, policy frozen
    child = build_workload(parse_workload_config(retrain.config["workload"]), cfg.seed)
    assert child.dim == params_by_hand(arch)  # the retrained network has exactly the found weights
    assert retrain.metrics[0]["loss"] == pytest.approx(child.evaluate(child.init_params())["loss"], rel=1e-5)
    assert 0.0 <= re["final"]["accuracy"] <= 1.0
    return arch


def _wl(cfg):
    return build_workload(cfg.workload, cfg.seed)


# ----------------------------------------------------------------------------- convex workloads


def test_quickstart(tmp_path) -> None:
    cfg, rows, _, _ = _run("quickstart", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    for r in rows[1:]:
        assert r["gap"] >= 0.0 and r["noise_scale"] > 0.0
        assert r["tx_energy_max"] == pytest.approx(1.0)  # rho = "full": the neediest UE at exactly P
        assert r["tx_energy"] <= cfg.workload.num_ues * cfg.channel.power * (1 + 1e-9)
    assert rows[-1]["gap"] < rows[0]["gap"]


def test_grid_240_digital_arm_is_gradient_descent_on_the_pooled_objective(tmp_path) -> None:
    """Noise-free FedSGD (K = 1, full batches, weights q_n ∝ n_n) is plain GD on the pooled objective:
    w_{t+1} = w_t − η ∇f(w_t), ∇f from one pass over all UEs' rows together (no per-UE aggregation);
    the logged gap is f(w_t) − f* along that trajectory, and f* is the optimum (gap ≥ 0)."""
    cfg, rows, _, _ = _run("grid_240", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    w = wl.init_params()
    for r in rows:
        assert r["gap"] == pytest.approx(wl.objective(w) - wl.f_star, rel=1e-8)
        assert r["gap"] >= 0.0
        w = w - cfg.train.lr.eta * wl.global_grad(w)
    assert rows[-1]["gap"] < rows[0]["gap"]
    assert all(r["noise_scale"] == 0.0 for r in rows[1:])


def test_server_vs_serverfree_digital_arm_is_closed_form_gradient_descent(tmp_path) -> None:
    """Noise-free FedSGD (K = 1, full gradients) on Σ q_n f_n is GD on a quadratic with Hessian
    Ā = diag(Σ q_n a_n): e_{t+1} = (1 − η_t Ā) e_t, η_t = θ/(t + γ), gap = ½ eᵀĀe, dist = ‖e‖."""
    cfg, rows, _, _ = _run("server_vs_serverfree", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    a_bar = wl.q @ wl.a
    e = wl.init_params() - wl.w_star
    lr = cfg.train.lr
    for t, r in enumerate(rows):
        assert r["dist"] == pytest.approx(float(e.norm()), rel=1e-9)
        assert r["gap"] == pytest.approx(float(0.5 * (a_bar * e * e).sum()), rel=1e-9)
        e = (1 - lr.theta / (t + lr.gamma) * a_bar) * e
    assert rows[0]["dist"] == pytest.approx(cfg.workload.init_dist)
    # theory.md: with rho = "fixed-unbounded" the digital arm satisfies every condition of the §4.4 law,
    # which without noise is its deterministic part alone: the distance itself
    assert "applies" in rows[0]["theory_notes"]["quadratic_reference"]
    for r in rows:
        assert r["theory_dist"] == pytest.approx(r["dist"], rel=1e-9)


def test_heavy_tail_relay_rows_are_consistent(tmp_path) -> None:
    cfg, rows, _, _ = _run("heavy_tail", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    assert rows[0]["dist"] == pytest.approx(cfg.workload.init_dist)  # init at ‖w0 − w*‖ = init_dist
    for r in rows[1:]:
        assert r["ue_dist_min"] <= r["dist"] <= r["ue_dist_max"]  # the headline is the median UE
        assert r["ue_gap_min"] >= 0.0 and r["avg_gap"] >= 0.0 and r["consensus"] > 0.0
        assert r["noise_scale"] > 0.0
    # docs (theory.md, condition 6): per-UE noise on a relay leaves no closed form
    assert "per-UE noise" in rows[0]["theory_notes"]["quadratic_reference"]


def test_overlap_latency_pipelines_the_exchange(tmp_path) -> None:
    cfg, rows, _, _ = _run("overlap_latency", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)  # sim_time: τ_cp per round, τ_cm once at the end
    consts = rows[0]["constants"]
    assert consts["tau_cm"]["value"] == pytest.approx(5e-3) and consts["delay_steps"]["value"] == 5  # ⌈5τ/τ⌉
    assert "overlapped" in rows[0]["theory_notes"]["theorem_a"]
    assert all(r["gap"] >= 0.0 for r in rows)


# ----------------------------------------------------------------------------- MoE language model


def test_moe_switch_vs_stable(tmp_path) -> None:
    cfg, rows, _, _ = _run("moe_switch_vs_stable", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    for r in rows:
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]), rel=1e-5)
    for r in rows[1:]:
        # cross-entropy of any model is at least the entropy rate of the token source
        assert r["loss"] >= r["loss_floor"] and 0.0 <= r["routing_fluctuation"] <= 1.0
    assert rows[0]["loss"] == pytest.approx(math.log(64), abs=0.15)  # near-uniform init over V = 64 tokens


# ----------------------------------------------------------------------------- image workloads and searches


def test_augment_mnist(tmp_path) -> None:
    cfg, rows, _, _ = _run("augment_mnist", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    assert rows[0]["accuracy"] == pytest.approx(wl.evaluate(wl.init_params())["accuracy"])


def _gdas_params(channels: int, cells: int):
    """cells.py by hand: stem 1→C 3x3 (9C), per cell one C→C 3x3 kernel (9C²) per kept conv edge,
    head on the 2x2-pooled C channels (4C·10 + 10)."""
    def count(arch: dict) -> int:
        genotype = arch.get("genotype", arch)
        convs = sum(op in ("conv3x3", "dil_conv3x3") for pairs in genotype.values() for op, _ in pairs)
        return 9 * channels + cells * convs * 9 * channels**2 + 40 * channels + 10
    return count


def test_nas_gdas(tmp_path) -> None:
    cfg, rows, summary, run_dir = _run("nas_gdas", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    w = cfg.workload
    arch = _check_search(cfg, rows, summary, run_dir, _gdas_params(w.channels, w.cells))
    assert set(arch) == {f"node{j}" for j in range(w.nodes)}
    for j, pairs in enumerate(arch.values()):
        assert len(pairs) == 2 and all(op != "none" and 0 <= i < 2 + j for op, i in pairs)
    for r in rows[1:]:
        assert 0.0 < r["alpha_entropy"] <= math.log(len(w.ops)) + 1e-9
    for probs in summary["search"]["op_probs"].values():
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_daas_mnist(tmp_path) -> None:
    cfg, rows, summary, run_dir = _run("daas_mnist", tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    w = cfg.workload
    pair = _check_search(cfg, rows, summary, run_dir, _gdas_params(w.channels, w.cells))
    assert set(pair) == {"genotype", "policy"}
    assert len(pair["policy"]["logits"]) == wl.policy_dim
    for r in rows[1:]:
        assert 0.0 < r["policy_entropy"] <= math.log(w.augment.num_subpolicies) + 1e-6


def _dash_params(channels: list[int], side: int = 784):
    """dash.py by hand (1-D): conv l has c_l·c_{l−1}·k_l weights + c_l biases, each followed by a
    ×4 max-pool; the head maps the flattened c_L·(784 // 4^L) features to 10 classes."""
    def count(arch: dict) -> int:
        total, c_in, length = 0, 1, side
        for layer, c in enumerate(channels):
            total += c * c_in * arch[f"conv{layer}"]["kernel"] + c
            c_in, length = c, length // 4
        return total + c_in * length * 10 + 10
    return count


@pytest.mark.parametrize("stem", ["nas_dash", "nas_dash_large"])
def test_nas_dash(tmp_path, stem: str) -> None:
    cfg, rows, summary, run_dir = _run(stem, tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    w = cfg.workload
    arch = _check_search(cfg, rows, summary, run_dir, _dash_params(list(w.channels)))
    assert set(arch) == {f"conv{i}" for i in range(len(w.channels))}
    for choice in arch.values():
        assert choice["kernel"] in w.kernels and choice["dilation"] in w.dilations
    for r in rows[1:]:
        assert 0.0 < r["alpha_entropy"] <= math.log(len(w.kernels) * len(w.dilations)) + 1e-6


def _tabnas_params(arch: dict) -> int:
    """MLP on FedProx Synthetic(1, 1), 60 features → widths → 10 classes, weights and biases."""
    widths = [60, *(arch[f"layer{i}"] for i in range(len(arch))), 10]
    return sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))


@pytest.mark.parametrize("stem", ["nas_tabnas", "nas_tabnas_large"])
def test_nas_tabnas(tmp_path, stem: str) -> None:
    cfg, rows, summary, run_dir = _run(stem, tmp_path)
    wl = _wl(cfg)
    _check_common(cfg, rows, wl)
    w = cfg.workload
    arch = _check_search(cfg, rows, summary, run_dir, _tabnas_params)
    assert all(arch[f"layer{i}"] in w.widths for i in range(w.hidden_layers))
    assert _tabnas_params(arch) <= w.max_params  # the found child meets the budget T0
    for r in rows[1:]:
        assert r["arch_params"] == _tabnas_params({f"layer{i}": int(r[f"arch_layer{i}"])
                                                   for i in range(w.hidden_layers)})
        assert 0.0 < r["feasible_mass"] <= 1.0
        assert 0.0 < r["controller_entropy"] <= w.hidden_layers * math.log(len(w.widths)) + 1e-6
