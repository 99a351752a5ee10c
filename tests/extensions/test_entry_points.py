"""A user's own workload and strategy, in their own package, registered through the entry-point
groups ``fedsim.workloads`` and ``fedsim.strategies``: a tiny package is built as a wheel, pip
installs it into a folder, and ``fedsim run`` uses both from a TOML file, on the inline engine and
in Ray UE actors (which find the plugin through the same entry points)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
PACKAGE = "fedsim_plugin_demo"
ENTRY_POINTS = f"""[fedsim.workloads]
linreg = {PACKAGE}.linreg:LinRegConfig

[fedsim.strategies]
server-median = {PACKAGE}.median:ServerMedian
"""
EXPERIMENT = """name = "plugin"
rounds = 4

[workload]
name = "linreg"
num_ues = 5
dim = 4

[train]
local_steps = 2
lr = { eta = 0.1 }

[strategy]
name = "server-median"
"""


def build_wheel(folder: Path) -> Path:
    """A pure-Python wheel of the demo package (the how-to examples, without their registry
    lines: the entry points register them)."""
    dist = f"{PACKAGE}-0.1.dist-info"
    strip = lambda text: "\n".join(ln for ln in text.splitlines() if not ln.startswith(("WORKLOADS.register",  # noqa: E731
                                                                                        "STRATEGIES.register"))) + "\n"
    files = {
        f"{PACKAGE}/__init__.py": '"""fedsim plugin demo."""\n',
        f"{PACKAGE}/linreg.py": strip((EXAMPLES / "linreg_workload.py").read_text()),
        f"{PACKAGE}/median.py": strip((EXAMPLES / "median_strategy.py").read_text()),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 0.1\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": ENTRY_POINTS,
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{PACKAGE}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder the demo package is pip-installed into."""
    root = tmp_path_factory.mktemp("plugin")
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(build_wheel(root))], check=True)
    return target


def fedsim_run(site: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    experiment = tmp_path / "plugin.toml"
    experiment.write_text(EXPERIMENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-c", "from fedsim.cli import main; main()", "run", str(experiment),
                           "--out", str(out), "--quiet", *args], env=env, capture_output=True, text=True, timeout=300)
    return proc, out


def rows_of(out: Path) -> list[dict]:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_plugin_parts_run_from_a_toml_file(site: Path, tmp_path: Path) -> None:
    proc, out = fedsim_run(site, tmp_path, "--engine", "inline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = rows_of(out)
    assert [r["round"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[-1]["gap"] < rows[0]["gap"]  # the median of locally trained models still descends
    assert rows[0]["constants"]["mu"]["source"] == "exact: λ_min(H)"  # the plugin's workload answered


def test_without_the_plugin_the_names_are_unknown(tmp_path: Path) -> None:
    experiment = tmp_path / "plugin.toml"
    experiment.write_text(EXPERIMENT)
    proc = subprocess.run([sys.executable, "-c", "from fedsim.cli import main; main()", "run", str(experiment),
                           "--out", str(tmp_path / "runs"), "--quiet", "--engine", "inline"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "workload.name: unknown workload 'linreg'" in proc.stderr.replace("\n", " ")
    assert not (tmp_path / "runs").exists()


# slow (~30-45 s, most of it Ray's start-up): the inline plugin tests above run by default
@pytest.mark.slow
def test_ray_ue_actors_load_the_plugin_and_agree_with_inline(site: Path, tmp_path: Path) -> None:
    inline, out_inline = fedsim_run(site, tmp_path / "inline", "--engine", "inline")
    ray, out_ray = fedsim_run(site, tmp_path / "ray", "--engine", "ray", "--set", "engine.num_cpus=2")
    assert inline.returncode == 0 and ray.returncode == 0, ray.stderr[-2000:]
    assert rows_of(out_ray) == rows_of(out_inline)
