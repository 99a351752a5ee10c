"""``fedsim plot``'s figures keep the one figure style (fedsim.figstyle): axis labels from the
table, legends naming what differs in words, log-log axes for rates against rounds, bands only
across two or more seeds, Okabe–Ito colours with distinct line styles, a single-column size with
the legend below the panels, and PDF plus PNG at 200 dpi. Run directories are written by hand
here (config.toml, metrics.jsonl, summary.json), so no simulation runs."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from fedsim import figstyle
from fedsim.errors import FedsimError
from fedsim.plots import SEED_BAND, UE_BAND, convergence_figure, plot_runs
from fedsim.results.sweepdir import load_runs

GAUSS = {"name": "gaussian"}
SAS = {"name": "sas", "alpha": 1.5, "vector": "iid", "draws": "common"}
ROUNDS = 20


def make_run(root: Path, name: str, *, strategy: str = "server-ota", interference: dict = GAUSS, seed: int = 0,
             ue_spread: bool = False) -> Path:
    """A run directory with smooth synthetic curves (gap ∝ 1/(t+1))."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {"name": "exp", "seed": seed, "rounds": ROUNDS, "strategy": {"name": strategy},
           "channel": {"fading": "none", "interference": interference}}
    scale = 1.0 + 0.1 * seed + (0.5 if interference.get("name") == "sas" else 0.0)
    rows = []
    for r in range(ROUNDS + 1):
        row: dict[str, Any] = {"round": r, "sim_time": 0.01 * r, "gap": scale / (r + 1), "loss": 0.3 + scale / (r + 1),
                               "accuracy": 1 - 1 / (r + 2), "noise_hill": 1.5}
        if ue_spread:
            g = scale / (r + 1)
            row |= {"ue_gap_p10": 0.8 * g, "ue_gap_p90": 1.2 * g, "avg_gap": 0.9 * g}
        rows.append(row)
    (d / "config.toml").write_text(tomli_w.dumps(cfg))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"status": "completed"}))
    return d


@pytest.fixture
def four_groups(tmp_path: Path) -> list[Path]:
    """strategy × interference, one seed each."""
    return [make_run(tmp_path, f"{s}-{i['name']}", strategy=s, interference=i)
            for s in ("server-ota", "serverfree-relay") for i in (GAUSS, SAS)]


def bands(ax: Any, gid: str = SEED_BAND) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_gid() == gid]


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_axis_labels_come_from_the_table(four_groups: list[Path]) -> None:
    fig = convergence_figure(four_groups, metrics=["gap", "accuracy", "noise_hill"])
    gap, acc, other = fig.axes
    assert gap.get_ylabel() == "optimality gap f(w_t) − f*"
    assert acc.get_ylabel() == "test accuracy"
    assert other.get_ylabel() == "noise_hill"  # not in the table: the key itself
    assert other.get_xlabel() == "round t" and gap.get_xlabel() == ""  # the x label once, at the bottom
    fig = convergence_figure(four_groups, metrics=["gap"], x="sim_time")
    assert fig.axes[0].get_xlabel() == "simulated time [s]"
    assert figstyle.axis_label("dist") == "distance ‖w_t − w*‖"
    assert figstyle.axis_label("tx_energy_max") == "max transmit energy / P"
    assert figstyle.axis_label("avg_gap") == "optimality gap f(w_t) − f*, virtual average"


def test_rates_against_rounds_are_log_log(four_groups: list[Path]) -> None:
    gap, acc = convergence_figure(four_groups, metrics=["gap", "accuracy"]).axes
    assert (gap.get_xscale(), gap.get_yscale()) == ("log", "log")
    assert (acc.get_xscale(), acc.get_yscale()) == ("linear", "linear")
    assert min(gap.lines[0].get_xdata()) > 0  # round 0 has no place on a log axis
    (gap_t,) = convergence_figure(four_groups, metrics=["gap"], x="sim_time").axes
    assert (gap_t.get_xscale(), gap_t.get_yscale()) == ("linear", "log")


def test_legend_names_what_differs_in_words(four_groups: list[Path]) -> None:
    labels = legend_texts(convergence_figure(four_groups, metrics=["gap"]))
    flat = [s.replace("\n", " ") for s in labels]
    assert flat == ["strategy: server-ota, interference: Gaussian", "strategy: server-ota, interference: SαS (α = 1.5)",
                    "strategy: serverfree-relay, interference: Gaussian",
                    "strategy: serverfree-relay, interference: SαS (α = 1.5)"]
    assert not any("vector" in s or "draws" in s or "=" in s.split("α")[0] for s in flat)


def test_same_law_legend_shows_only_its_parameter(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, f"a{a}", interference={**SAS, "alpha": a}) for a in (2.0, 1.5)]
    assert legend_texts(convergence_figure(runs, metrics=["gap"])) == ["α = 2", "α = 1.5"]


def test_a_single_run_is_described_not_named_after_its_experiment(tmp_path: Path) -> None:
    run = make_run(tmp_path, "one", strategy="serverfree-relay", interference=SAS, ue_spread=True)
    fig = convergence_figure([run], metrics=["gap"])
    texts = [s.replace("\n", " ") for s in legend_texts(fig)]
    assert texts[0] == "strategy: serverfree-relay, interference: SαS (α = 1.5)"
    assert "virtual average (held by no UE)" in texts and "UE models, 10–90 %" in texts
    assert "exp" not in texts
    assert bands(fig.axes[0], UE_BAND) and not bands(fig.axes[0])  # UE spread, not a seed band


def test_seed_band_only_with_two_or_more_seeds(tmp_path: Path) -> None:
    one = make_run(tmp_path, "one", strategy="server-ota")
    fig = convergence_figure([one], metrics=["gap", "loss"])
    assert all(not ax.collections for ax in fig.axes)
    assert fig.legends[0].get_title().get_text() == ""
    three = [make_run(tmp_path, f"s{s}", strategy="serverfree-relay", seed=s) for s in range(3)]
    fig = convergence_figure([one, *three], metrics=["gap"])
    assert len(bands(fig.axes[0])) == 1  # the three-seed group only
    texts = legend_texts(fig)
    assert texts[1].endswith("(n = 3 seeds)") and "n =" not in texts[0]
    fig = convergence_figure(three + [make_run(tmp_path, f"o{s}", seed=s) for s in range(3)], metrics=["gap"])
    assert len(bands(fig.axes[0])) == 2
    assert fig.legends[0].get_title().get_text() == "median and IQR over n = 3 seeds"


def test_seed_band_is_the_interquartile_range_by_hand(tmp_path: Path) -> None:
    """Four seeds with gap (1 + 0.1 s)/(r + 1): numpy's linear quartiles of {1.0, 1.1, 1.2, 1.3}
    are 1.075 and 1.225; once seed 2 has no gap in round 5 they are those of {1.0, 1.1, 1.3}
    there, 1.05 and 1.2. Runs already loaded draw the same band as their folders."""
    runs = [make_run(tmp_path, f"s{s}", strategy="serverfree-relay", seed=s) for s in range(4)]

    def band_points(items: list) -> set[tuple[float, float]]:
        [band] = bands(convergence_figure(items, metrics=["gap"]).axes[0])
        return {(round(float(x), 9), round(float(y), 9)) for x, y in band.get_paths()[0].vertices}

    def quartiles_at(points: set[tuple[float, float]], r: int, lo: float, hi: float) -> bool:
        return (r, round(lo / (r + 1), 9)) in points and (r, round(hi / (r + 1), 9)) in points

    complete = band_points(runs)
    assert all(quartiles_at(complete, r, 1.075, 1.225) for r in range(1, ROUNDS + 1))
    assert band_points(load_runs(runs)) == complete
    rows = [json.loads(line) for line in (runs[2] / "metrics.jsonl").read_text().splitlines()]
    del rows[5]["gap"]
    (runs[2] / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    missing = band_points(runs)
    assert quartiles_at(missing, 5, 1.05, 1.2)
    assert all(quartiles_at(missing, r, 1.075, 1.225) for r in range(1, ROUNDS + 1) if r != 5)


def test_palette_and_line_styles_tell_groups_apart(four_groups: list[Path]) -> None:
    lines = convergence_figure(four_groups, metrics=["gap"]).axes[0].lines
    colors = [line.get_color() for line in lines]
    assert colors == list(figstyle.OKABE_ITO[:4])
    assert len({repr(line._unscaled_dash_pattern) for line in lines}) == 4  # four distinct dash patterns
    assert len({repr(figstyle.group_style(i)["linestyle"]) for i in range(5)}) == 5


def test_single_column_legend_below_the_panels(four_groups: list[Path]) -> None:
    fig = convergence_figure(four_groups, metrics=["loss", "accuracy", "gap"])
    assert fig.get_figwidth() == pytest.approx(figstyle.COLUMN_WIDTH)
    fig.draw_without_rendering()
    legend = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        box = ax.get_window_extent()
        assert legend.y1 <= box.y0, "the legend overlaps a panel"
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert fig.texts == [] and all(t.get_fontsize() <= 9 for t in fig.legends[0].get_texts())


def test_saved_as_pdf_and_png_at_200_dpi(four_groups: list[Path], tmp_path: Path) -> None:
    fig = convergence_figure(four_groups)
    written = figstyle.save(fig, tmp_path / "figs" / "conv")
    assert sorted(p.suffix for p in written) == [".pdf", ".png"]
    png = tmp_path / "figs" / "conv.png"
    w, h = fig.get_size_inches() * 200
    assert png_size(png) == (round(w), round(h))
    assert png_size(png)[0] == 700  # 3.5 in
    assert (tmp_path / "figs" / "conv.pdf").read_bytes()[:5] == b"%PDF-"
    paths = plot_runs(four_groups, metrics=["gap"], out=tmp_path / "p" / "gap.png")
    assert sorted(p.name for p in paths) == ["gap.pdf", "gap.png"]
    assert png_size(tmp_path / "p" / "gap.png")[0] == 700


def test_draws_into_the_axes_it_is_given(four_groups: list[Path]) -> None:
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    assert convergence_figure(four_groups, metrics=["gap"], ax=ax) is fig
    assert len(ax.lines) == 4 and ax.get_xscale() == "log"
    assert ax.get_legend() is not None and not fig.legends
    with pytest.raises(FedsimError, match="2 metrics"):
        convergence_figure(four_groups, metrics=["gap", "loss"], ax=ax)
