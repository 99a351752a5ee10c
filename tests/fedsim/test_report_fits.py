"""The report's numbers against curves of known shape: a real sweep folder whose runs' metrics
are replaced by seeded synthetic curves dist = t^(−a)·e^(σε), gap = dist², sim_time = τ·t, so
the fitted exponents, their confidence intervals and the hitting times have values known by hand.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from fedsim.analytics.fits import loglog_fit, seed_slopes
from fedsim.config import validate
from fedsim.report import build_report
from fedsim.sweep import expand_sweep, run_sweep

ROUNDS, TAU, NOISE = 400, 2e-3, 0.01
DECAY = {2.0: 0.4, 1.5: 0.25}  # the exponent a of each group (keyed by the swept alpha)
SEEDS = range(6)


def synthetic_rows(a: float, seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, int(a * 100)])
    t = np.arange(ROUNDS + 1, dtype=np.float64)
    dist = np.maximum(t, 1.0) ** (-a) * np.exp(NOISE * rng.standard_normal(t.size))
    return [{"round": int(r), "sim_time": TAU * r, "dist": float(d), "gap": float(d * d), "loss": float(d * d)}
            for r, d in zip(t, dist, strict=True)]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fits")
    data = {"name": "fit", "rounds": 2, "workload": {"name": "quadratic", "num_ues": 3, "dim": 2},
            "strategy": {"name": "server-ota"},
            "channel": {"interference": {"name": "sas", "alpha": 2.0}, "scale": 0.5},
            "engine": {"name": "inline"}, "output": {"dir": str(out), "plot": False},
            "sweep": {"channel.interference.alpha": list(DECAY), "seed": list(SEEDS)}}
    folder = run_sweep(expand_sweep(data, []), validate({**data, "sweep": {}}), quiet=True)
    for v in json.loads((folder / "index.json").read_text())["variants"]:
        alpha = float(v["assignments"][0].split("=")[1])
        seed = int(v["assignments"][1].split("=")[1])
        rows = synthetic_rows(DECAY[alpha], seed)
        (folder / v["run_dir"] / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def table_cells(text: str, first: str) -> list[list[str]]:
    """Rows of the markdown tables whose first cell contains ``first``."""
    out = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and first in cells[0]:
            out.append(cells)
    return out


def interval(cell: str) -> tuple[float, float, float]:
    m = re.match(r"(-?[\d.e+-]+) \[(-?[\d.e+-]+), (-?[\d.e+-]+)\]", cell)
    assert m, cell
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def test_fitted_exponents_recover_the_planted_decay(sweep_dir, tmp_path) -> None:
    """dist ∝ t^(−a) and gap ∝ t^(−2a): the median slope is within 0.02 of the truth, the 95 %
    interval covers it and excludes the other group's exponent."""
    text = build_report([sweep_dir], out=tmp_path).read_text()
    for alpha, a in DECAY.items():
        other = [b for b in DECAY.values() if b != a][0]
        rows = {r[1]: r for r in table_cells(text, f"alpha={alpha}") if len(r) >= 3 and r[1] in ("dist", "gap")}
        assert set(rows) == {"dist", "gap"}, text
        for metric, truth, wrong in (("dist", -a, -other), ("gap", -2 * a, -2 * other)):
            median, lo, hi = interval(rows[metric][2])
            assert median == pytest.approx(truth, abs=0.02), (alpha, metric, rows[metric])
            assert lo <= truth <= hi, (alpha, metric, rows[metric])
            assert not lo <= wrong <= hi


def test_hitting_times_match_the_hand_computation(sweep_dir, tmp_path) -> None:
    """gap = t^(−2a)·e^(2σε) reaches 0.1 at t = 0.1^(−1/(2a)) rounds (18 and 100). The report
    smooths with a causal running median over 5 rounds, which a decreasing curve crosses 2 rounds
    later; so the hand value is ⌈t⌉ + 2 rounds and τ times that in simulated seconds (median over
    seeds; the noise moves single seeds by about a round)."""
    text = build_report([sweep_dir], out=tmp_path, target=0.1).read_text()
    for alpha, a in DECAY.items():
        t_hit = 0.1 ** (-1 / (2 * a))
        header = next(r for r in table_cells(text, "group") if "rounds to target" in r)
        row = next(r for r in table_cells(text, f"alpha={alpha}") if len(r) == len(header))
        rounds_med = interval(row[header.index("rounds to target")])[0]
        seconds_med = interval(row[header.index("sim time to target [s]")])[0]
        want = math.ceil(t_hit) + 2
        assert abs(rounds_med - want) <= 1.5, (alpha, want, row)
        assert abs(seconds_med - TAU * want) <= 1.5 * TAU, (alpha, want, row)


def test_fits_skip_nonpositive_points_and_handle_degenerate_seed_sets() -> None:
    """Zeros and negatives cannot be on a log-log line: they are skipped, so y = 3 t^-1.5 with a few
    zeros still gives slope -1.5 exactly. Identical seeds give a point interval at their slope; a
    single usable seed gives no interval (NaN)."""
    t = np.arange(1.0, 41.0)
    y = 3.0 * t**-1.5
    y[[4, 9, 30]] = 0.0
    y[12] = -1.0
    assert loglog_fit(t, y).slope == pytest.approx(-1.5, abs=1e-12)
    same = seed_slopes(t, np.vstack([3.0 * t**-0.5] * 3))
    assert same.median == pytest.approx(-0.5, abs=1e-12)
    assert same.ci_low == pytest.approx(-0.5, abs=1e-12) and same.ci_high == pytest.approx(-0.5, abs=1e-12)
    one = seed_slopes(t, np.vstack([t**-0.5, np.full_like(t, np.nan)]))
    assert one.n_failed == 1 and np.isnan(one.ci_low) and np.isnan(one.ci_high)
