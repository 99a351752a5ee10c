"""The behaviours that the power budget, the slotted D2D receiver and the relay's downlink fading
replaced stay reachable under explicit names, with the numbers they had.

``golden_legacy.json`` holds rows recorded at commit 346157c (before those changes) from
``legacy_base.toml`` with the ``BEFORE`` overrides, in that commit's names: ``rho = "fixed"`` was
then unbounded and ``serverfree-d2d`` was the idealised scheme. Today the same runs are
``rho = "fixed-unbounded"`` and ``serverfree-d2d-ideal``; a relay with no fading (or with common
interference, an ideal downlink) is the constant-scale special case of the fading downlink. Where
UEs hold their own models, what a row then called ``loss`` (the virtual average's) is ``avg_loss``
now, and the new keys (UE-held medians and spread, ``tx_energy_max``, ``snr_db``) have no
recorded counterpart.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from record_golden import run_file

HERE = Path(__file__).resolve().parent
BASE = HERE / "legacy_base.toml"
RECORDED = HERE / "golden_legacy.json"

#: case -> overrides today (the same run as BEFORE[case] at commit 346157c)
NOW: dict[str, list[str]] = {
    "ota_rayleigh_update": ["strategy.name=server-ota", "channel.fading=rayleigh", "train.local_steps=2",
                            "strategy.transmit=update", "channel.rho=fixed-unbounded"],
    "d2d_ideal_sas": ["strategy.name=serverfree-d2d-ideal", "channel.fading=rayleigh", "channel.power_control=phase",
                      "channel.interference={name='sas', alpha=1.5}", "channel.rho=fixed-unbounded"],
    "relay_no_fading": ["strategy.name=serverfree-relay", "train.local_steps=3", "channel.downlink_scale=0.5",
                        "channel.rho=fixed-unbounded"],
    "relay_common_rayleigh": ["strategy.name=serverfree-relay", "channel.fading=rayleigh",
                              "channel.interference_mode=common", "channel.rho=fixed-unbounded"],
}
BEFORE: dict[str, list[str]] = {
    "ota_rayleigh_update": ["strategy.name=server-ota", "channel.fading=rayleigh", "train.local_steps=2",
                            "strategy.transmit=update"],
    "d2d_ideal_sas": ["strategy.name=serverfree-d2d", "channel.fading=rayleigh", "channel.power_control=phase",
                      "channel.interference={name='sas', alpha=1.5}"],
    "relay_no_fading": ["strategy.name=serverfree-relay", "train.local_steps=3", "channel.downlink_scale=0.5"],
    "relay_common_rayleigh": ["strategy.name=serverfree-relay", "channel.fading=rayleigh",
                              "channel.interference_mode=common"],
}


def unmatched(key: str) -> bool:
    """Recorded keys with no counterpart: notes on which theory applies (their wording changed
    with the budget rules) and the UE-held means (the median is the headline now)."""
    return key == "theory_notes" or (key.startswith("ue_") and key.endswith("_mean"))


def old_view(new_row: dict, old_row: dict) -> dict:
    """``new_row`` under the recorded row's names: ``avg_<k>`` stands for ``k`` where it exists."""
    return {k: new_row.get(f"avg_{k}", new_row.get(k)) for k in old_row if not unmatched(k)}


def far(a, b) -> bool:
    """Floats (also inside the constants table) beyond 1e-9 relative, anything else at all: another
    numpy/scipy build may move the last bits of a Newton-CG optimum."""
    if isinstance(b, float) and isinstance(a, int | float):
        return not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() != b.keys() or any(far(a[k], b[k]) for k in b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) != len(b) or any(far(x, y) for x, y in zip(a, b, strict=True))
    return a != b


@pytest.mark.parametrize("case", list(NOW))
def test_the_old_behaviour_is_reachable_by_name(case: str, tmp_path: Path) -> None:
    want = json.loads(RECORDED.read_text())[case]["000"]["rows"]
    got = run_file(BASE, NOW[case], tmp_path)["000"]["rows"]
    assert len(got) == len(want)
    bad = [(r["round"], k, v, old[k]) for r, old in zip(got, want, strict=True)
           for k, v in old_view(r, old).items() if far(v, old[k])]
    assert not bad, f"{len(bad)} differences, first: {bad[:4]}"


def test_the_legacy_settings_exceed_the_budget_the_default_keeps(tmp_path: Path) -> None:
    """Why the default changed: the old fixed scaling puts a UE above P in some round; today's
    default never does."""
    over = run_file(BASE, NOW["ota_rayleigh_update"], tmp_path / "old")["000"]["rows"][1:]
    now = run_file(BASE, NOW["ota_rayleigh_update"][:-1], tmp_path / "new")["000"]["rows"][1:]
    assert max(r["tx_energy_max"] for r in over) > 1.0
    assert max(r["tx_energy_max"] for r in now) <= 1.0 + 1e-9
