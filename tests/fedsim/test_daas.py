"""DAAS: the joint architecture + augmentation-policy search in ``nas-gdas``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from fedsim.config import apply_overrides, validate
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.workloads.augsearch import augment_batch
from fedsim.workloads.nas.gdas import GdasConfig, GdasWorkload

ARCH = {"node0": [["conv3x3", 0], ["skip", 1]], "node1": [["conv3x3", 1], ["avg_pool3x3", 2]],
        "node2": [["skip", 2], ["conv3x3", 3]]}


pytestmark = pytest.mark.usefixtures("one_thread")


def _wl(**kw) -> GdasWorkload:
    return GdasWorkload(GdasConfig(num_ues=3, total_steps=20, **kw), seed=0)


def _train(wl: GdasWorkload, rounds: int = 2, steps: int = 3) -> tuple[torch.Tensor, dict]:
    w, state = wl.init_params(), {}
    for r in range(rounds):
        w = wl.local_train(w, 1, r * steps, steps, lambda s: 0.1, state)
    return w, state


def test_joint_vector_is_theta_alpha_beta_and_all_three_learn() -> None:
    plain, joint = _wl(), _wl(augment={"policy": "search"})
    space = joint.aug_space
    assert joint.dim == plain.dim + space.num_logits and joint.policy_dim == space.num_logits
    w0 = joint.init_params()
    assert torch.equal(w0[: plain.dim], plain.init_params())  # same θ and α init as plain GDAS
    assert torch.equal(joint.policy_part(w0), space.init_logits())  # β = 0: the uniform policy
    w, state = _train(joint)
    theta0, alpha0 = joint.split(w0)
    theta, alpha = joint.split(w)
    assert not torch.equal(theta, theta0) and not torch.equal(alpha, alpha0)
    assert not torch.equal(joint.policy_part(w), joint.policy_part(w0))
    assert float(state["aug.count"]) == 6 and float(state["gdas.t"]) == 6
    again, _ = _train(joint)
    assert torch.equal(w, again)  # deterministic from (seed, step, UE)
    stats = joint.evaluate(w)
    assert 0 < stats["policy_entropy"] < torch.log(torch.tensor(float(space.num_subpolicies))) + 1e-6
    assert {"alpha_entropy", "genotype_accuracy", "policy_top_prob"} <= stats.keys()


def test_frozen_policy_search_equals_gdas_on_uniformly_augmented_images() -> None:
    """With η_β = 0 the joint search is GDAS on images augmented by the uniform policy, exactly:
    same augmentation draws, same Gumbel paths, β untouched (the reward pass draws nothing)."""
    joint = _wl(augment={"policy": "search", "policy_lr": 0.0})
    uniform = _wl(augment={"policy": "uniform"})
    wj, _ = _train(joint)
    wu, su = _train(uniform)
    assert torch.equal(wj[: uniform.dim], wu)
    assert torch.equal(joint.policy_part(wj), joint.aug_space.init_logits())
    assert "aug.count" not in su
    plain, _ = _train(_wl())
    assert not torch.equal(plain, wu)  # the augmentation does change training


def test_reward_is_validation_loss_improvement_of_the_weight_step(monkeypatch: pytest.MonkeyPatch) -> None:
    wl = _wl(augment={"policy": "search"})
    rewards: list[float] = []
    from fedsim.workloads.augsearch import ReinforceStats

    orig = ReinforceStats.step
    monkeypatch.setattr(ReinforceStats, "step", lambda self, sp, b, smp, r, a: (rewards.append(r),
                                                                               orig(self, sp, b, smp, r, a)))
    w0 = wl.init_params()
    w1 = wl.local_train(w0, 2, 0, 1, lambda s: 0.1, {})
    # recompute by hand: one weight step on the augmented batch, reward along the α step's path
    from channels.rng import torch_generator

    theta0, alpha0 = wl.split(w0)
    gen = torch_generator(0, "gumbel", 0, 2)
    x, y, _ = wl.augmented_batch(2, 0, wl.policy_part(w0))
    new = theta0 - 0.1 * wl._weight_grad(theta0, x, y, wl.sample_path(alpha0, gen, 0))
    path = wl.sample_path(alpha0, gen, 0)
    xv, yv = wl.validation_batch(2, 0)
    expected = float(wl.loss(theta0, xv, yv, path)) - float(wl.loss(new, xv, yv, path))
    assert rewards == [pytest.approx(expected, rel=1e-5, abs=1e-7)]
    torch.testing.assert_close(wl.split(w1)[0], new)


def test_search_result_is_the_pair_and_retraining_uses_the_frozen_policy() -> None:
    wl = _wl(augment={"policy": "search", "top_k": 2})
    w, _ = _train(wl)
    found = wl.search_result(w)
    pair = found["architecture"]
    assert set(pair) == {"genotype", "policy"}
    beta = wl.policy_part(w)
    assert pair["policy"]["logits"] == pytest.approx(beta.tolist(), abs=1e-6)
    assert len(pair["policy"]["top"]) == 5 and found["resources"]["params"] > 0
    rc = GdasConfig(**wl.retrain_config(pair))
    assert rc.arch == pair["genotype"] and rc.augment.policy == "fixed" and rc.augment.top_k == 2
    child = GdasWorkload(rc, seed=0)
    assert child.dim == child.theta_dim  # no α, no β: only the child's weights travel
    # the frozen policy samples only the top-2 sub-policies of β, with β's own probabilities
    cat = beta[: wl.aug_space.num_subpolicies]
    top2 = set(torch.argsort(cat, descending=True)[:2].tolist())
    x = torch.rand(4000, 1, 8, 8)
    _, sample = augment_batch(child.aug_space, child._frozen_beta, x, 0, 0, 0)
    assert set(sample.sub.tolist()) == top2
    ids = sorted(top2)
    want = torch.softmax(cat[ids], 0)
    got = torch.stack([(sample.sub == i).float().mean() for i in ids])
    torch.testing.assert_close(got, want, rtol=0, atol=0.03)  # 4000 draws: sd < 0.008


@pytest.mark.parametrize(("augment", "extra", "match"), [
    ({"policy": "search"}, {"arch": ARCH}, "needs arch unset"),
    ({"policy": "fixed"}, {}, "augment.logits of length"),
    ({"policy": "fixed", "logits": [0.0, 1.0]}, {}, "got 2"),
    ({"policy": "search", "logits": [0.0]}, {}, "only used with augment.policy='fixed'"),
    ({"policy": "search", "top_k": 99}, {}, "exceeds augment.num_subpolicies"),
    ({"policy": "sometimes"}, {}, "policy"),
    ({"policy": "search", "num_subpolicies": 100}, {}, "num_subpolicies"),
])
def test_bad_augment_sections_are_refused(augment: dict, extra: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        GdasConfig(num_ues=3, augment=augment, **extra)


def test_daas_run_writes_the_pair_and_retrains_genotype_with_policy(tmp_path: Path) -> None:
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}", "checkpoint.every=0",
        "workload={name='nas-gdas', num_ues=3, channels=4, augment={policy='search'}}", "rounds=2",
        "train.local_steps=2", "workload.retrain_rounds=1",
    ]))
    run_dir = run_experiment(cfg, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    found = summary["search"]
    pair = found["architecture"]
    assert set(pair) == {"genotype", "policy"}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    wl = GdasWorkload(cfg.workload, seed=cfg.seed)
    assert rows[0]["loss"] == pytest.approx(wl.evaluate(wl.init_params())["loss"], rel=1e-6)  # round 0 = init
    k = wl.aug_space.num_subpolicies
    assert rows[0]["policy_entropy"] == pytest.approx(math.log(k), rel=1e-6)  # β = 0: uniform over sub-policies
    for r in rows[1:]:
        assert 0 < r["policy_entropy"] <= math.log(k) + 1e-6 and 0 < r["alpha_entropy"] <= math.log(6) + 1e-6
    # the child's weights by hand (cells.py): stem 9C, 9C² per kept conv edge per cell, head 4C·10 + 10
    convs = sum(op in ("conv3x3", "dil_conv3x3") for pairs in pair["genotype"].values() for op, _ in pairs)
    assert found["resources"]["params"] == 9 * 4 + 2 * convs * 9 * 16 + 40 * 4 + 10
    assert len(pair["policy"]["logits"]) == wl.aug_space.num_logits
    re = found["retrain"]
    assert re["status"] == "completed" and 0 <= re["final"]["accuracy"] <= 1
    retrain = load_run(run_dir / re["run_dir"])
    assert retrain.summary["status"] == "completed"
    rw = retrain.config["workload"]
    assert rw["arch"] == pair["genotype"] and rw["augment"]["policy"] == "fixed"
    assert rw["augment"]["logits"] == pytest.approx(pair["policy"]["logits"])  # β frozen as searched
    assert retrain.metrics[-1]["arch_params"] == found["resources"]["params"]


def test_reports_show_the_genotype_and_top_sub_policy_not_the_logits() -> None:
    from fedsim.results.architecture import architecture_text

    pair = {"genotype": ARCH, "policy": {"top": ["0.20: (shift, p=0.50, m=0.40) -> (noise, p=0.50, m=0.20)"],
                                         "logits": [0.125] * 104}}
    text = architecture_text(pair)
    assert text.startswith('{"node0":[["conv3x3",0],["skip",1]]') and "policy 0.20: (shift" in text
    assert "0.125" not in text
    assert architecture_text(ARCH) == text.split(" + policy")[0]
