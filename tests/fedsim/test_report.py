"""``fedsim report`` on a small sweep: report.md with the exponent table, figures, errors."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

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
