"""Record the per-round metrics of every shipped experiment at small settings (and a few extra
settings that reach the strategies' corners), to guard refactors: the recorded rows must stay
the same.

    python tests/regression/record_golden.py            # rewrite tests/regression/golden.json
    python tests/regression/record_golden.py --check    # compare with it, exactly

The test ``test_golden.py`` runs the same cases and compares with a tight tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN = HERE / "golden.json"

#: case id -> (experiment file stem, overrides); every sweep variant of a case is recorded.
CASES: dict[str, tuple[str, list[str]]] = {
    "quickstart": ("quickstart", ["rounds=5"]),
    "grid_240": ("grid_240", ["rounds=4", "sweep.channel.interference.alpha=[1.5, 2.0]", "sweep.channel.gsnr_db=[10.0]",
                              "sweep.seed=[0]"]),
    "heavy_tail": ("heavy_tail", ["rounds=8", "sweep.seed=[0]"]),
    "server_vs_serverfree": ("server_vs_serverfree", ["rounds=8", "sweep.seed=[1]"]),
    "overlap_latency": ("overlap_latency", ["rounds=8", "sweep.timing.latency_ratio=[0.0, 5.0]", "sweep.seed=[0]"]),
    "moe": ("moe_switch_vs_stable", ["rounds=3", "workload.num_ues=4", "workload.total_steps=15"]),
    "augment": ("augment_mnist", ["rounds=2", "eval_every=1", "train.local_steps=2", "workload.num_ues=4",
                                  "sweep.seed=[0]"]),
    "daas": ("daas_mnist", ["rounds=2", "eval_every=1", "train.local_steps=2", "workload.num_ues=4",
                            "workload.retrain_rounds=1"]),
    "nas_dash": ("nas_dash", ["rounds=2", "train.local_steps=2", "workload.num_ues=4", "workload.retrain_rounds=1"]),
    "nas_gdas": ("nas_gdas", ["rounds=2", "eval_every=1", "train.local_steps=2", "workload.num_ues=4",
                              "workload.retrain_rounds=1"]),
    "nas_tabnas": ("nas_tabnas", ["rounds=3", "train.local_steps=2", "workload.num_ues=4",
                                  "workload.retrain_rounds=2", "sweep.seed=[0]"]),
    # corners the shipped files do not reach
    "d2d_reset_faults": ("quickstart", [
        "rounds=5", "sweep={}", "strategy.name=serverfree-d2d", "strategy.mode=reset",
        "strategy.fraction=0.5", "channel.fading=rayleigh", "channel.power_control=phase",
        "faults.unavailable=0.2", "faults.nan_at=[[2, 3]]", "workload.num_ues=8"]),
    "relay_per_ue_update": ("quickstart", [
        "rounds=4", "sweep={}", "strategy.name=serverfree-relay", "train.local_steps=3",
        "channel.interference={name='sas', alpha=1.5, vector='isotropic'}", "channel.interference_mode=per_ue",
        "channel.downlink_scale=0.5", "workload.batch_size=8", "workload.num_ues=6"]),
    "ota_rician_norm": ("quickstart", [
        "rounds=4", "sweep={}", "strategy.name=server-ota", "channel.fading={name='rician', k=2.0}",
        "channel.csi_error=0.05", "channel.rho=norm", "train.lr.schedule=inverse",
        "strategy.fraction=0.6", "workload.num_ues=10"]),
    "ota_fixed_growth": ("quickstart", [  # a constant ρ growing with 1/η_t, capped by the budget
        "rounds=4", "sweep={}", "strategy.name=server-ota", "channel.fading=rayleigh", "channel.rho=fixed",
        "channel.rho_growth=lr", "train.lr.schedule=inverse", "workload.num_ues=6"]),
    "d2d_slotted_inversion": ("quickstart", [
        "rounds=4", "sweep={}", "strategy.name=serverfree-d2d", "channel.fading=rayleigh",
        "channel.interference={name='sas', alpha=1.3, draws='independent'}", "timing.latency_ratio=1.0",
        "workload.num_ues=5"]),
    "relay_downlink_fading": ("quickstart", [
        "rounds=4", "sweep={}", "strategy.name=serverfree-relay", "channel.fading=rayleigh",
        "channel.downlink_h_th=0.6", "workload.num_ues=8"]),
    "digital_quant_cotaf": ("quickstart", [
        "rounds=4", "sweep={}", "strategy.name=server-digital", "channel.quant_bits=6", "train.local_steps=2",
        "workload.num_ues=6"]),
    "ota_none_cotaf": ("quickstart", [
        "rounds=4", "sweep={}", "strategy.name=server-ota", "channel.power_control=none", "channel.rho=cotaf",
        "train.local_steps=2", "strategy.transmit=model", "workload.num_ues=6"]),
    "overlap_single_replace": ("overlap_latency", [
        "rounds=6", "sweep={}", "strategy.overlap.enabled=true", "strategy.overlap.in_flight=single",
        "strategy.overlap.merge=replace", "timing.latency_ratio=3.0", "train.local_steps=2",
        "strategy.name=serverfree-relay", "workload.num_ues=6"]),
    "overlap_digital": ("overlap_latency", [
        "rounds=6", "sweep={}", "strategy.overlap.enabled=true", "timing.latency_ratio=2.0",
        "strategy.name=server-digital", "workload.num_ues=6", "timing.tau_cp_spread=0.5"]),
    "batched_stragglers": ("quickstart", [
        "rounds=4", "sweep={}", "strategy.name=server-ota", "engine.batched=true", "train.local_steps=3",
        "workload.batch_size=8", "workload.num_ues=6", "faults.slowdown=[[1, 10.0]]", "faults.deadline=0.005",
        "faults.raise_at=[[2, 0]]", "faults.policy=zero"]),
    "overlap_midblock": ("overlap_latency", [  # aggregates merged mid-block (D = 2, K = 3)
        "rounds=6", "sweep={}", "strategy.overlap.enabled=true", "train.local_steps=3", "timing.latency_ratio=2.0",
        "strategy.name=serverfree-relay", "workload.num_ues=6", "train.lr.eta=0.1"]),
    "overlap_midblock_ota": ("overlap_latency", [
        "rounds=6", "sweep={}", "strategy.overlap.enabled=true", "train.local_steps=4", "timing.latency_ratio=3.0",
        "strategy.name=server-ota", "workload.num_ues=5", "strategy.overlap.merge=replace"]),
    "quadratic_theory": ("server_vs_serverfree", [
        "rounds=6", "sweep={}", "strategy.name=serverfree-relay", "channel.interference={name='sas', alpha=1.5}",
        "channel.interference_mode=common", "workload.num_ues=5", "workload.grad_noise=0.1"]),
}

#: Keys whose values depend on the machine or the clock, never on the maths.
VOLATILE = {"latency_ms", "wall_s", "cpu_s"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def run_case(case: str, out_dir: Path) -> dict:
    """{variant index: {"rows": [...], "retrain_rows": [...], "search": {...}}} for one case."""
    stem, overrides = CASES[case]
    return run_file(ROOT / "fedsim" / "experiments" / f"{stem}.toml", overrides, out_dir)


def run_file(path: Path, overrides: list[str], out_dir: Path) -> dict:
    """:func:`run_case` for an experiment file and overrides."""
    from fedsim.config import read_toml
    from fedsim.results.rundir import read_metrics
    from fedsim.runner import run_experiment
    from fedsim.sweep import expand_sweep

    overrides = [*overrides, "engine.name=inline", "output.plot=false", f"output.dir={str(out_dir)!r}"]
    result = {}
    for v in expand_sweep(read_toml(path), overrides, source=str(path)):
        run_dir = run_experiment(v.config, quiet=True, plot=False)
        entry: dict = {"rows": _strip(read_metrics(run_dir / "metrics.jsonl"))}
        retrain = sorted(run_dir.glob("*-retrain-*"))
        if retrain:
            entry["retrain_rows"] = _strip(read_metrics(retrain[0] / "metrics.jsonl"))
        arch = run_dir / "architecture.json"
        if arch.exists():
            found = json.loads(arch.read_text())
            found.get("retrain", {}).pop("run_dir", None)
            entry["search"] = _strip(found)
        result[v.id.split("-")[0]] = entry
    return result


def differences(got, want, path: str = "") -> list[str]:
    """Where ``got`` and ``want`` differ (exactly), as readable lines."""
    if isinstance(got, dict) and isinstance(want, dict):
        out = [f"{path}.{k}: only in {'new' if k in got else 'recorded'}" for k in sorted(set(got) ^ set(want))]
        for k in sorted(set(got) & set(want)):
            out += differences(got[k], want[k], f"{path}.{k}")
        return out
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return [f"{path}: {len(got)} items, recorded {len(want)}"]
        return [d for i, (a, b) in enumerate(zip(got, want, strict=True)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if got == want and type(got) is type(want) else [f"{path}: {got!r} != recorded {want!r}"]


def record(cases: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return {case: run_case(case, Path(tmp) / case) for case in cases}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the recorded file, exactly")
    parser.add_argument("cases", nargs="*", help="case ids (default: all)")
    args = parser.parse_args()
    cases = args.cases or list(CASES)
    got = record(cases)
    if args.check:
        want = json.loads(GOLDEN.read_text())
        bad = [c for c in cases if got[c] != want.get(c)]
        for c in bad:
            diffs = differences(got[c], want.get(c))
            print(f"DIFFERS: {c} ({len(diffs)} places)")
            for line in diffs[:12]:
                print("   ", line[:300])
        print("identical" if not bad else f"{len(bad)} of {len(cases)} cases differ")
        return 1 if bad else 0
    old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    old.update(got)
    GOLDEN.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(got)} cases)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
