"""``fedsim report`` on a small sweep: report.md with the exponent table, figures in fedsim's
figure style (fedsim.figstyle), no interval from a single seed, errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import typer
from matplotlib.collections import PolyCollection
from typer.testing import CliRunner

from fedsim import figstyle
from fedsim.cli_report import report
from fedsim.config import validate
from fedsim.errors import FedsimError
from fedsim.report import build_report
from fedsim.sweep import expand_sweep, run_sweep

app = typer.Typer()
app.command()(report)
app.command("noop")(lambda: None)  # a second command keeps `report` a named subcommand


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    data = {
        "name": "rep", "rounds": 40,
        "workload": {"name": "quadratic", "num_ues": 5, "dim": 5, "mu": 1.0, "L": 2.0},
        "train": {"local_steps": 1, "lr": {"schedule": "inverse", "theta": 2.0, "gamma": 16.0}},
        "strategy": {"name": "server-ota"},
        "channel": {"interference": {"name": "sas", "alpha": 2.0}, "scale": 0.5},
        "engine": {"name": "inline"}, "output": {"dir": str(out), "plot": False},
        "sweep": {"channel.interference.alpha": [2.0, 1.5], "strategy.name": ["server-ota", "serverfree-relay"],
                  "seed": [0, 1]},
    }
    variants = expand_sweep(data, [])
    return run_sweep(variants, validate({**data, "sweep": {}}), quiet=True)


def test_report_has_exponent_table_and_figures(sweep_dir, tmp_path):
    path = build_report([sweep_dir], out=tmp_path)
    text = path.read_text()
    assert "## Fitted exponents vs theory" in text
    assert "| group | metric | fitted exponent [95% CI] | theory |" in text
    assert "-0.5 | §4.4/§4.3" in text  # dist at alpha = 2: -(1 - 1/2)
    assert "-0.333 | §4.4/§4.3" in text  # alpha = 1.5
    assert "median [q25, q75]" in text
    for name in ("report-curves.png", "report-heatmap.png", "report-server-vs-serverfree.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 1000
        assert f"figures/{name}" in text


def test_cli_report_writes_next_to_sweep(sweep_dir):
    res = CliRunner().invoke(app, ["report", str(sweep_dir), "--target", "0.01"])
    assert res.exit_code == 0, res.output
    assert (sweep_dir / "report.md").exists()
    assert "gap ≤ 0.01" in (sweep_dir / "report.md").read_text()


def test_user_errors(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2
    with pytest.raises(FedsimError):
        build_report([tmp_path])


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The report's figures as they are saved, by file stem."""
    figs, real = {}, figstyle.save

    def save(fig, out, formats=figstyle.FORMATS):
        figs[Path(out).stem] = fig
        return real(fig, out, formats)

    monkeypatch.setattr(figstyle, "save", save)
    return figs


def seed_bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_gid() == "seed-iqr"]


def png_width(path: Path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def test_report_figures_keep_the_style(sweep_dir, tmp_path, drawn):
    text = build_report([sweep_dir], out=tmp_path).read_text()
    curves = drawn["report-curves"]
    ax = curves.axes[0]
    assert ax.get_ylabel() == "optimality gap f(w_t) − f*" and curves.axes[-1].get_xlabel() == "round t"
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert len(seed_bands(ax)) == 4  # four groups of two seeds
    legend = curves.legends[0]
    assert legend.get_title().get_text() == "median and IQR over n = 2 seeds"
    labels = [t.get_text().replace("\n", " ") for t in legend.get_texts()]
    assert "strategy: server-ota, α = 2" in labels and "strategy: serverfree-relay, α = 1.5" in labels
    panels = drawn["report-server-vs-serverfree"]
    visible = [a for a in panels.axes if a.get_visible()]
    assert visible and all((a.get_xscale(), a.get_yscale()) == ("log", "log") for a in visible)
    assert [a.get_title() for a in visible] == ["α = 2", "α = 1.5"]
    assert "α" in drawn["report-heatmap"].axes[0].get_xlabel()
    for stem, fig in drawn.items():
        png = tmp_path / "figures" / f"{stem}.png"
        assert (tmp_path / "figures" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert png_width(png) == round(fig.get_figwidth() * 200) == 700, stem
        assert f"figures/{stem}.pdf" in text


def test_one_seed_prints_no_interval_and_draws_no_band(sweep_dir, tmp_path, drawn):
    first = json.loads((sweep_dir / "index.json").read_text())["variants"][0]["run_dir"]
    text = build_report([sweep_dir / first], out=tmp_path).read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and " | dist | " in line]
    assert rows and rows[0][2].endswith("[—]"), rows
    header = next(line for line in text.splitlines() if line.startswith("| group | seeds |")).split(" | ")
    row = next(line for line in text.splitlines() if line.startswith("| ") and " | 1 | " in line).split(" | ")
    assert "[" not in row[header.index("final gap")], row
    ax = drawn["report-curves"].axes[0]
    assert not seed_bands(ax) and drawn["report-curves"].legends[0].get_title().get_text() == ""
