"""Whole runs keep the power budget and the interference laws they are configured with.

The receivers are checked draw by draw in ``tests/channels``; here the same properties are checked
on the rows a run writes, against independent references: the budget P from the config, the law
SαS(2, c) = N(0, 2c²) (a two-sample KS test over disjoint seed sets), the gap at round 0 (a UE that
never hears the relay keeps w0), and ConfigError (CLI exit 2, nothing written) for settings that
cannot mean what they say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.config import QUICKSTART, ConfigError, apply_overrides, validate
from fedsim.results.rundir import read_metrics
from fedsim.runner import run_experiment


def run(tmp: Path, *overrides: str, rounds: int = 8, seed: int = 0) -> list[dict]:
    """Rows of one small inline run on a 4-UE, 5-dimensional quadratic."""
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp)!r}", "checkpoint.every=0",
        "workload={name='quadratic', num_ues=4, dim=5}", f"rounds={rounds}", f"seed={seed}", "eval_every=1",
        "channel.interference='gaussian'", "channel.scale=0.5", *overrides]))
    return read_metrics(run_experiment(cfg, quiet=True) / "metrics.jsonl")


ANALOG = [  # (strategy, K, transmit, mode)
    *[(s, 1, "gradient", None if s == "server-ota" else "accumulate")
      for s in ("server-ota", "serverfree-relay", "serverfree-d2d")],
    *[(s, K, "update", None if s == "server-ota" else "accumulate")
      for s in ("server-ota", "serverfree-relay", "serverfree-d2d") for K in (1, 3)],
    *[(s, K, "model", m) for s, m in (("server-ota", None), ("serverfree-relay", "reset"),
                                      ("serverfree-d2d", "reset")) for K in (1, 3)],
]


@pytest.mark.parametrize(("strategy", "K", "transmit", "mode"), ANALOG)
def test_every_row_keeps_the_budget(tmp_path: Path, strategy: str, K: int, transmit: str, mode: str | None) -> None:
    """With P = 2.5 and Rayleigh fading, no UE spends more than P in any round, whatever K and the
    transmit rule; under the default rule ("full") the most demanding UE spends exactly P.
    ``tx_energy_max`` is in units of P, ``tx_energy`` (the sum over the round's transmissions) in
    absolute units: 4 uplinks, or in slotted D2D 4 slots of 3 transmissions, each at most P, and
    in each slot (one slot for the server and relay uplinks) the neediest link at exactly P."""
    transmissions, slots = (12, 4) if strategy == "serverfree-d2d" else (4, 1)
    common = [f"strategy.name={strategy!r}", f"train.local_steps={K}", f"strategy.transmit={transmit!r}",
              "channel.fading='rayleigh'", "channel.power=2.5", *([f"strategy.mode={mode!r}"] if mode else [])]
    for rule in ("full", "fixed"):
        rows = run(tmp_path, *common, f"channel.rho={rule!r}")[1:]
        most = np.array([r["tx_energy_max"] for r in rows])
        total = np.array([r["tx_energy"] for r in rows])
        assert np.all(most <= 1 + 1e-9) and np.all(total <= transmissions * 2.5 * (1 + 1e-9)), (rule, most, total)
        assert np.all(most > 0)
        assert all(np.isfinite(r["snr_db"]) for r in rows)
        if rule == "full":
            np.testing.assert_allclose(most, 1.0, rtol=1e-9)
            assert np.all(total >= slots * 2.5 * (1 - 1e-9))


def test_unbounded_rule_is_what_exceeds_the_budget(tmp_path: Path) -> None:
    """The legacy rule ρ = P, not capped, lets deep fades draw more than P (the reason for the cap)."""
    rows = run(tmp_path, "strategy.name='server-ota'", "channel.fading='rayleigh'", "channel.rho='fixed-unbounded'",
               "strategy.transmit='update'", "train.local_steps=3", rounds=12)[1:]
    assert max(r["tx_energy_max"] for r in rows) > 1.0


def final_dists(tmp: Path, interference: str, seeds: range, strategy: str = "server-ota",
                scale: float = 10.0) -> np.ndarray:
    # ρ = P unbounded keeps the noise's scale the same every round, and at c = 10 the noise, not
    # the seed's workload, dominates where the model ends: the final distance follows the law of
    # the interference.
    return np.array([run(tmp, f"strategy.name={strategy!r}", "channel.rho='fixed-unbounded'", f"channel.scale={scale}",
                         f"channel.interference={interference}", rounds=4, seed=s)[-1]["dist"] for s in seeds])


@pytest.mark.parametrize("strategy", ["server-ota", "serverfree-relay"])
def test_sas_at_alpha_2_is_the_gaussian_run(tmp_path: Path, strategy: str) -> None:
    """SαS(2, c) is N(0, 2c²): final distances of α = 2 runs and Gaussian runs at the same scale,
    over disjoint seed sets (independent draws), come from one law (two-sample KS). The test has the
    power to see a √2 error in the Gaussian's standard deviation (c instead of √2·c) and α = 1.2."""
    gauss = final_dists(tmp_path, "'gaussian'", range(0, 40), strategy)
    sas2 = final_dists(tmp_path, "{name='sas', alpha=2.0}", range(100, 140), strategy)
    assert stats.ks_2samp(gauss, sas2).pvalue > 0.01
    heavy = final_dists(tmp_path, "{name='sas', alpha=1.2}", range(100, 140), strategy)
    narrow = final_dists(tmp_path, "'gaussian'", range(100, 140), strategy, scale=10.0 / 2**0.5)
    assert stats.ks_2samp(gauss, heavy).pvalue < 0.01
    assert stats.ks_2samp(gauss, narrow).pvalue < 0.01


def test_alpha_near_2_approaches_the_gaussian_run(tmp_path: Path) -> None:
    """The same seeds (common random numbers) at α = 1.99 and 1.9 land near the α = 2 run, nearer as
    α → 2; α = 1.5 lands farther."""
    seeds = range(10)
    at = {a: final_dists(tmp_path, f"{{name='sas', alpha={a}}}", seeds) for a in (2.0, 1.99, 1.9, 1.5)}
    gap = {a: float(np.median(np.abs(at[a] - at[2.0]) / at[2.0])) for a in (1.99, 1.9, 1.5)}
    assert gap[1.99] < gap[1.9] < gap[1.5], gap
    assert gap[1.99] < 0.05, gap


def test_relay_downlink_below_threshold_everywhere_delivers_nothing(tmp_path: Path) -> None:
    """A downlink threshold no fade reaches: every UE drops out of every broadcast and keeps w0,
    so every UE-held gap is the round-0 gap, and the row counts N drop-outs."""
    rows = run(tmp_path, "strategy.name='serverfree-relay'", "channel.fading='rayleigh'",
               "channel.downlink_h_th=1e9")
    start = rows[0]["gap"]
    assert all(r["downlink_dropouts"] == 4 for r in rows[1:])
    assert all(r["ue_gap_min"] == r["ue_gap_max"] == start for r in rows[1:])
    # a threshold of 0 delivers to everyone and the UEs move
    rows = run(tmp_path, "strategy.name='serverfree-relay'", "channel.fading='rayleigh'", "channel.downlink_h_th=0")
    assert all(r["downlink_dropouts"] == 0 for r in rows[1:])
    assert all(r["ue_gap_min"] != start for r in rows[1:])


cli = CliRunner()
SMALL = ["--set", "rounds=2", "--set", "workload.num_ues=3", "--engine", "inline", "--quiet"]

REFUSED = [  # (overrides, words of the message)
    (["sweep={'channel.downlink_scale' = [0.5, 1.0]}", "strategy.name='server-ota'"],
     "every variant ignores channel.downlink_scale"),
    (["sweep={'channel.downlink_h_th' = [0.1, 0.5]}", "strategy.name='serverfree-relay'",
      "channel.interference_mode='common'"], "every variant ignores channel.downlink_h_th"),
    (["sweep={'channel.h_th' = [0.1, 0.5]}", "strategy.name='server-ota'", "channel.power_control='none'"],
     "every variant ignores channel.h_th"),
    (["sweep={}", "strategy.overlap.enabled=true", "channel.resources=1", "channel.symbol_time=1e-3",
      "workload={name='quadratic', num_ues=3, dim=50}"], "blocks would queue"),
]


@pytest.mark.parametrize(("overrides", "expected"), REFUSED)
def test_settings_that_change_nothing_are_refused(tmp_path: Path, overrides: list[str], expected: str) -> None:
    """A swept channel key no receiver reads, or a pipelined overlap whose uplink (50 symbols of
    1 ms on one waveform: 50 ms) outlasts a block (1 ms), exits 2 with the reason and writes nothing."""
    out = tmp_path / "runs"
    args = ["run", str(QUICKSTART), "--out", str(out), *SMALL]
    for o in overrides:
        args += ["--set", o]
    res = cli.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert expected in " ".join(res.output.split())
    assert not out.exists()


def test_a_sweep_that_varies_the_key_somewhere_is_accepted(tmp_path: Path) -> None:
    """downlink_scale matters to the relay: a sweep over both strategies keeps it."""
    from fedsim.config import read_toml
    from fedsim.sweep import expand_sweep

    variants = expand_sweep(read_toml(QUICKSTART), [
        "sweep={'channel.downlink_scale' = [0.5, 1.0], 'strategy.name' = ['server-ota', 'serverfree-relay']}"])
    assert len(variants) == 4


def test_single_in_flight_is_the_way_out_of_a_queued_pipeline(tmp_path: Path) -> None:
    """The refused pipeline runs with one block in flight. By hand: the uplink carries 50 symbols of
    1 ms on one waveform (50 ms) and the server's broadcast as long again, so τ_cm = 100 ms and
    D = ⌈τ_cm/τ_cp⌉ = 100 steps of 1 ms."""
    rows = run(tmp_path, "strategy.name='server-ota'", "strategy.overlap.enabled=true", "strategy.transmit='update'",
               "strategy.overlap.in_flight='single'", "channel.resources=1", "channel.symbol_time=1e-3",
               "workload={name='quadratic', num_ues=3, dim=50}", rounds=3)
    assert rows[-1]["delay_steps"] == 100
    with pytest.raises(ConfigError, match="blocks would queue"):
        run(tmp_path, "strategy.name='server-ota'", "strategy.overlap.enabled=true", "strategy.transmit='update'",
            "channel.resources=1",
            "channel.symbol_time=1e-3", "workload={name='quadratic', num_ues=3, dim=50}", rounds=3)


def test_digital_fedavg_keeps_its_theory_curve_under_the_default_rho(tmp_path: Path) -> None:
    """ρ rules belong to analog receivers: noise-free digital FedAvg on a quadratic with the default
    rho = "full" still gets the exact reference, which then is the run itself (dist equal)."""
    rows = run(tmp_path, "strategy.name='server-digital'", "train.lr={schedule='constant', eta=0.05}")
    assert all("theory_dist" in r for r in rows)
    for r in rows:
        assert r["theory_dist"] == pytest.approx(r["dist"], rel=1e-9)
