"""Run folders say what they are: a sweep's variant folders are named by their assignments (the
variant id), a single run may be named with output.run_name, and a name never overwrites a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fedsim
from fedsim.errors import ConfigError

SMALL = ["rounds=1", "workload.num_ues=3", "output.plot=false"]


def test_variant_folders_are_named_by_their_assignments(tmp_path: Path) -> None:
    folder = fedsim.run("quickstart", [*SMALL, "sweep.seed=[0, 1]"], engine="inline", out=tmp_path)
    index = json.loads((folder / "index.json").read_text())
    names = [v["run_dir"] for v in index["variants"]]
    assert names == [v["id"] for v in index["variants"]]
    assert names[0] == "000-strategy.name=server-ota,channel.interference=gaussian,seed=0"
    assert len(set(names)) == len(names) == 8


def test_a_named_run_and_a_taken_name(tmp_path: Path) -> None:
    first = fedsim.run("quickstart", [*SMALL, "sweep={}", "output.run_name='ota-baseline'"], engine="inline",
                       out=tmp_path)
    second = fedsim.run("quickstart", [*SMALL, "sweep={}", "output.run_name='ota-baseline'"], engine="inline",
                        out=tmp_path)
    assert (first.name, second.name) == ("ota-baseline", "ota-baseline-1")


@pytest.mark.parametrize("bad", ["'../escape'", "'a/b'", "''", "'..'"])
def test_a_run_name_cannot_leave_its_folder(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="output.run_name"):
        fedsim.run("quickstart", [*SMALL, "sweep={}", f"output.run_name={bad}"], engine="inline", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
