"""``fedsim search``: bad input exits 2 and writes nothing; a tabular search writes its folder."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from fedsim.cli import app

LIVE = """
name = "s"
experiment = "quickstart"
set = ["engine.name=inline"]
methods = ["random"]
budget = 2
[space]
"train.lr.eta" = [0.1, 0.3]
"""

BAD = {
    "unknown key": LIVE + "budgte = 3\n",
    "malformed toml": LIVE + "budget = = 3\n",
    "unknown method": LIVE.replace('["random"]', '["annealing"]'),
    "off-schema candidate": LIVE.replace("[0.1, 0.3]", "[0.1, -0.3]"),
    "unknown config key": LIVE.replace('"train.lr.eta"', '"train.lr.etaa"'),
    "missing experiment": LIVE.replace('"quickstart"', '"no-such-experiment"'),
    "searching the seed": LIVE + '[fidelity]\nseed = [0, 1]\n',
    "bad fidelity value": LIVE + '[fidelity]\n"workload.num_ues" = [0, 10]\n',
    "hyperband without fidelity": LIVE.replace('["random"]', '["hyperband"]'),
    "tabular space differs": 'mode = "tabular"\n[space]\n"train.lr.eta" = [0.1]\n',
    "zero budget": LIVE.replace("budget = 2", "budget = 0"),
    "ue rewards from a table": 'mode = "tabular"\n[reward]\nsource = "ue-validation"\n',
    "ue rewards without validation data": LIVE.replace('"engine.name=inline"',
                                                       '"engine.name=inline", "workload.num_ues=3"')
    + '[reward]\nsource = "ue-validation"\n',
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_exits_2_and_writes_nothing(tmp_path, case):
    spec = tmp_path / "spec.toml"
    spec.write_text(BAD[case], encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["search", str(spec), "--out", str(out), "--quiet"])
    assert result.exit_code == 2, (case, result.output)
    assert "error:" in result.output
    assert not out.exists()


def test_out_that_is_a_file_exits_2(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('mode = "tabular"\nmethods = ["random"]\n', encoding="utf-8")
    (tmp_path / "f").write_text("x")
    result = CliRunner().invoke(app, ["search", str(spec), "--out", str(tmp_path / "f" / "o"), "--quiet"])
    assert result.exit_code == 2 and (tmp_path / "f").read_text() == "x"


def test_tabular_search_writes_candidates_curves_and_figure(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "tab"\nmode = "tabular"\nmethods = ["rl", "random"]\nbudget = 6\nseeds = [0, 1]\n',
                    encoding="utf-8")
    result = CliRunner().invoke(app, ["search", str(spec), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0, result.output
    (folder,) = list((tmp_path / "o").iterdir())
    rows = list(csv.DictReader((folder / "candidates.csv").open()))
    assert len(rows) == 2 * 2 * 6 and {r["method"] for r in rows} == {"rl", "random"}
    curves = list(csv.DictReader((folder / "curves.csv").open()))
    assert {r["axis"] for r in curves} == {"evaluations", "sim_time"}
    assert (folder / "figures" / "search-curves.png").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["final"]) == {"rl", "random"}


def test_resume_of_a_folder_that_is_not_a_search_exits_2(tmp_path):
    (tmp_path / "x").mkdir()
    result = CliRunner().invoke(app, ["search", "--resume", str(tmp_path / "x"), "--quiet"])
    assert result.exit_code == 2 and "not a search folder" in result.output
    assert list((tmp_path / "x").iterdir()) == []


def test_ctrl_c_exits_130_naming_the_folder_to_resume(tmp_path, monkeypatch):
    from fedsim.search.reward import RewardLink

    calls = {"n": 0}
    real = RewardLink.combine

    def interrupt_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RewardLink, "combine", interrupt_third)
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "c"\nmode = "tabular"\nmethods = ["random"]\nbudget = 6\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["search", str(spec), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 130, result.output
    (folder,) = list((tmp_path / "o").iterdir())
    assert f"fedsim search --resume {folder}" in result.output.replace("\n", "")
    assert len((folder / "candidates.jsonl").read_text().splitlines()) == 2
