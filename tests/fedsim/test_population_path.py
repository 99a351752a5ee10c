"""The population path (``engine.population``): a round as one tensor program, without per-UE
ClientApp calls. Its numbers equal the per-UE path on every strategy, receiver, transmission and
fault setting and on the channel's parts (interference laws and modes, fading, CSI error, power
control, rho, the relay's downlink, quantisation), gradient descent on quadratics and a
hand-written D2D loop (digital FedAvg: ``test_batched_serverfree.py``); its checkpoints resume on
either path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from interrupt import interrupted_run
from serverfree_cases import CASES, FAULTY, LOGREG, NOISY, QUAD, _models, _run, _same_numbers

import fedsim.apps.client as client
from fedsim.config import apply_overrides, validate
from fedsim.errors import ConfigError, FedsimError
from fedsim.results.rundir import load_run
from fedsim.runner import run_experiment
from fedsim.runtime.assemble import assemble
from fedsim.runtime.checkpoint import TensorBag, load_checkpoint
from fedsim.runtime.execute import execute, preflight
from fedsim.runtime.population import Population
from fedsim.runtime.recorder import Recorder
from fedsim.workloads.quadratic import Quadratic
from fedsim.workloads.synthetic import SyntheticLogreg
from strategies.medium import PENDING
from strategies.population import PopulationExchange, UEModels, population_round

POP = "engine.population=true"
RELAY_K2 = [LOGREG, "strategy.name='serverfree-relay'", "train.local_steps=2", *NOISY]
#: every fault kind and non-finite policy, on top of the shared cases
FAULT_CASES = {
    "relay-raise-nan-exclude": [*RELAY_K2, "faults.raise_at=[[2, 1], [3, 4]]", "faults.nan_at=[[2, 3]]"],
    "relay-nan-zero": [*RELAY_K2, "faults.nan_at=[[1, 0], [3, 5]]", "faults.policy='zero'"],
    "relay-nan-skip-round": [*RELAY_K2, "faults.nan_at=[[2, 2]]", "faults.policy='skip-round'"],
    "d2d-straggler-trace": [QUAD, "strategy.name='serverfree-d2d'", "train.local_steps=2",
                            "faults.slowdown=[[1, 50.0], [4, 3.0]]", "faults.deadline=0.01",
                            "faults.trace=[[1, 2], [2, 2], [3, 0]]", *NOISY],
}

#: overlapped schedules (DGA-style; a block's aggregate arrives D = timing.latency_ratio steps after
#: it ends, so estimates are merged between local steps), every merge rule and in-flight mode
OVERLAP = ["strategy.overlap.enabled=true", "timing.latency_ratio=3"]
OVERLAP_CASES = {
    "overlap-relay-swap-raise-nan": [*RELAY_K2, *OVERLAP, "faults.raise_at=[[2, 1], [3, 4]]", "faults.nan_at=[[2, 3]]"],
    "overlap-relay-replace-single-skip": [*RELAY_K2, *OVERLAP, "strategy.overlap.merge='replace'",
                                          "strategy.overlap.in_flight='single'", "faults.nan_at=[[2, 2]]",
                                          "faults.policy='skip-round'"],
    "overlap-digital-replace-stragglers": [QUAD, "strategy.name='server-digital'", "train.local_steps=2", *OVERLAP,
                                           "strategy.overlap.merge='replace'", "faults.slowdown=[[1, 50.0]]",
                                           "faults.deadline=0.01", "faults.trace=[[1, 2], [3, 0]]"],
    "overlap-d2d-gradient-nan-zero": [QUAD, "strategy.name='serverfree-d2d'", "strategy.transmit='gradient'",
                                      "train.local_steps=1", "train.lr.schedule='inverse'", *OVERLAP, *NOISY,
                                      "faults.unavailable=0.3", "faults.nan_at=[[3, 0]]", "faults.policy='zero'"],
}

#: server-based strategies on the global-model server
SERVER_CASES = {
    "digital-model-faults": [LOGREG, "strategy.name='server-digital'", "train.local_steps=2", *FAULTY,
                             "faults.raise_at=[[2, 0], [3, 1]]"],
    "ota-gradient-nan-zero": [QUAD, "strategy.name='server-ota'", "train.local_steps=1", *NOISY,
                              "faults.nan_at=[[2, 1]]", "faults.policy='zero'", "train.lr.schedule='inverse'"],
    "ota-update-straggler-nan": [LOGREG, "strategy.name='server-ota'", "train.local_steps=3", *NOISY,
                                 "faults.slowdown=[[2, 50.0]]", "faults.deadline=0.01", "faults.nan_at=[[3, 4]]",
                                 "strategy.fraction=0.7"],
    "ota-model-skip-round": [LOGREG, "strategy.name='server-ota'", "strategy.transmit='model'",
                             "train.local_steps=2", *NOISY, "faults.nan_at=[[2, 3]]", "faults.policy='skip-round'"],
}

#: the channel's parts and options on each receiver (relay, D2D, ideal D2D, server, digital)
CHANNEL_CASES = {
    "relay-gaussian-per-ue-downlink": [LOGREG, "strategy.name='serverfree-relay'", "train.local_steps=2", *FAULTY,
                                       "channel.interference='gaussian'", "channel.gsnr_db=15.0",
                                       "channel.interference_mode='per_ue'", "channel.fading='rayleigh'",
                                       "channel.downlink_scale=2.0", "channel.downlink_h_th=0.8"],
    "relay-common-rician-csi-norm": [QUAD, "strategy.name='serverfree-relay'", "train.local_steps=2",
                                     "channel.interference={name='sas', alpha=1.2}", "channel.dispersion=0.01",
                                     "channel.interference_mode='common'", "channel.fading={name='rician', k=3.0}",
                                     "channel.csi_error=0.05", "channel.rho='norm'"],
    "d2d-sas-none-power-cotaf": [LOGREG, "strategy.name='serverfree-d2d'", "train.local_steps=2",
                                 "channel.interference={name='sas', alpha=1.8}", "channel.gsnr_db=20.0",
                                 "channel.fading={name='rician', k=4.0}", "channel.power_control='none'",
                                 "channel.rho='cotaf'"],
    "d2d-ideal-gaussian-rho-lr": [QUAD, "strategy.name='serverfree-d2d-ideal'", "train.local_steps=1",
                                  "strategy.transmit='gradient'", "train.lr.schedule='inverse'",
                                  "channel.interference='gaussian'", "channel.scale=0.05", "channel.rho='fixed'",
                                  "channel.rho_growth='lr'", "channel.power_control='phase'"],
    "ota-sas-rician-csi-unbounded": [LOGREG, "strategy.name='server-ota'", "train.local_steps=2", *FAULTY,
                                     "channel.interference={name='sas', alpha=1.3}", "channel.gsnr_db=10.0",
                                     "channel.fading={name='rician', k=1.0}", "channel.csi_error=0.1",
                                     "channel.rho='fixed-unbounded'"],
    "digital-quantised": [LOGREG, "strategy.name='server-digital'", "train.local_steps=2", *FAULTY,
                          "channel.quant_bits=3"],
}


def _count_ue_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """ClientApp train calls from now on."""
    calls: list[int] = []
    orig = client.train_round
    monkeypatch.setattr(client, "train_round", lambda *a, **k: (calls.append(1), orig(*a, **k))[1])
    return calls


EQUAL_CASES = {**CASES, **FAULT_CASES, **OVERLAP_CASES, **SERVER_CASES, **CHANNEL_CASES}


@pytest.mark.parametrize("case", list(EQUAL_CASES))
def test_population_equals_the_per_ue_path_without_ue_calls(
        tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = EQUAL_CASES[case]
    per_ue = _run(tmp_path, "per-ue", *extra)
    calls = _count_ue_calls(monkeypatch)
    population = _run(tmp_path, "population", POP, *extra)
    assert calls == []  # no round went through a ClientApp
    _same_numbers(per_ue, population)


def test_the_fault_cases_exercise_their_faults(tmp_path: Path) -> None:
    """The fault cases are not vacuous: each shows its fault in the rows."""
    rows = {case: _run(tmp_path, case, POP, *extra)[0] for case, extra in FAULT_CASES.items()}
    reasons = [r for row in rows["relay-raise-nan-exclude"] for r in row.get("failure_reasons", [])]
    assert any("raised mid-training in round 2" in r for r in reasons)
    assert any(r == "non-finite vector" for r in reasons)
    assert rows["relay-nan-zero"][1]["participants"] == 6  # the zeroed UE still counts
    skipped = rows["relay-nan-skip-round"][2]
    assert skipped["participants"] == 0 and skipped["failed_ues"] == [2]
    overlapped = {case: _run(tmp_path, case, POP, *extra)[0] for case, extra in OVERLAP_CASES.items()}
    for case, rows_of_case in overlapped.items():  # merged mid-block, and a fault acted out
        assert all(r["delay_steps"] == 3 for r in rows_of_case[1:]), case
        assert any(r.get("injected") for r in rows_of_case), case
    d2d = rows["d2d-straggler-trace"]
    assert d2d[1]["injected"] == {"unavailable": [2], "straggler": [1]}
    assert d2d[1]["participants"] == 4  # UE 1 missed the deadline, UE 2 was unavailable


def test_the_channel_cases_exercise_their_parts(tmp_path: Path) -> None:
    """The channel cases are not vacuous: the analog receivers see interference, the relay's
    downlink threshold drops UEs, and per-UE downlink noise leaves the UE models apart."""
    rows = {case: _run(tmp_path, case, POP, *extra)[0] for case, extra in CHANNEL_CASES.items()}
    for case, rows_of_case in rows.items():
        if case != "digital-quantised":
            assert all(r["noise_scale"] > 0 for r in rows_of_case[1:]), case  # row 0: the initial models
    assert sum(r["downlink_dropouts"] for r in rows["relay-gaussian-per-ue-downlink"][1:]) > 0
    assert rows["relay-common-rician-csi-norm"][-1]["consensus"] < 1e-12  # one common estimate
    assert rows["relay-gaussian-per-ue-downlink"][-1]["consensus"] > 1.0


def test_population_server_digital_on_quadratics_is_gradient_descent(tmp_path: Path) -> None:
    """Digital FedSGD, full batch, K = 1, UE 2 unavailable in round 2: the global model takes
    ``w <- w - eta sum_n q_n a_n (w - b_n) / sum_n q_n`` over the UEs that answered."""
    wl_cfg = "workload={name='quadratic', num_ues=6, dim=5, hessian='heterogeneous'}"
    rounds, eta = 4, 0.1
    _, res = _run(tmp_path, "fedsgd", wl_cfg, POP, "strategy.name='server-digital'", "strategy.transmit='gradient'",
                  "train.local_steps=1", f"train.lr.eta={eta}", "faults.trace=[[2, 2]]")
    wl = Quadratic(validate(apply_overrides({}, [wl_cfg])).workload, validate({}).seed)
    a, b, q = wl.a.numpy(), wl.b.numpy(), wl.ue_weights().numpy()
    w = wl.init_params().numpy()
    for r in range(1, rounds + 1):
        up = [u for u in range(6) if not (r == 2 and u == 2)]
        w = w - eta * (q[up, None] * a[up] * (w - b[up])).sum(0) / q[up].sum()
    torch.testing.assert_close(res["final_model"], torch.from_numpy(w), rtol=1e-9, atol=1e-12)


def test_population_d2d_on_quadratics_follows_a_hand_written_loop(tmp_path: Path) -> None:
    """Noise-free D2D, full batch, accumulate updates, UE 3 unavailable in round 2: every
    answering UE adds the estimates it has not merged yet, runs K steps of
    ``w <- w - eta a_n (w - b_n)`` and transmits the update; the estimate is the mean update."""
    wl_cfg = "workload={name='quadratic', num_ues=6, dim=5, hessian='heterogeneous'}"
    rounds, K, eta = 4, 3, 0.05
    _, res = _run(tmp_path, "d2d", wl_cfg, POP, "strategy.name='serverfree-d2d'", "channel.power_control='none'",
                  f"train.local_steps={K}", f"train.lr.eta={eta}", "faults.trace=[[2, 3]]")
    wl = Quadratic(validate(apply_overrides({}, [wl_cfg])).workload, validate({}).seed)
    a, b = wl.a.numpy(), wl.b.numpy()
    w = wl.init_params().numpy()[None].repeat(6, 0)
    inbox = [[] for _ in range(6)]
    for r in range(1, rounds + 2):  # the last exchange only delivers
        up = [u for u in range(6) if not (r == 2 and u == 3)]
        for u in up:
            w[u] = w[u] + sum(inbox[u], 0 * w[u])
            inbox[u] = []
        if r > rounds:
            break
        x = w[up].copy()
        for _ in range(K):
            x = x - eta * a[up] * (x - b[up])
        mean = (x - w[up]).sum(0) / len(up)
        for u in range(6):
            inbox[u].append(mean)
    torch.testing.assert_close(_models(res), torch.from_numpy(w), rtol=1e-9, atol=1e-12)


RESUMED = {
    "d2d": [LOGREG, "strategy.name='serverfree-d2d'", "train.local_steps=2", *FAULTY, *NOISY],
    "overlap-swap": [LOGREG, "strategy.name='serverfree-relay'", "train.local_steps=2", *OVERLAP, *NOISY,
                     "faults.unavailable=0.3"],
    "overlap-replace": [LOGREG, "strategy.name='server-digital'", "train.local_steps=2", *OVERLAP,
                        "timing.latency_ratio=1", "strategy.overlap.merge='replace'", "faults.unavailable=0.3"],
}


@pytest.mark.parametrize("case", RESUMED)
@pytest.mark.parametrize("resumed_on", ["population", "per-ue"])
def test_population_checkpoints_resume_to_the_per_ue_run(tmp_path: Path, resumed_on: str, case: str) -> None:
    """Interrupted after round 2 and resumed from its checkpoint (on the population path, or on
    the per-UE path from the population's checkpoint), the run ends where the uninterrupted
    per-UE run ends; with overlap, blocks are in flight at the cut."""
    extra = RESUMED[case]
    per_ue = _run(tmp_path, "per-ue", *extra)
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path / 'cut')!r}",
        "checkpoint.every=1", "rounds=4", POP, *extra]))
    run_dir = interrupted_run(cfg, 3)
    if resumed_on == "per-ue":
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"population": False})})
    result: dict = {}
    run_experiment(cfg, quiet=True, resume=run_dir, result=result)
    _same_numbers(per_ue, (load_run(run_dir).metrics, result))


@pytest.mark.parametrize(("extra", "why"), [
    (["engine.name='ray'"], "needs engine.name = 'inline'"),
    (["engine.batched=true"], "leave engine.batched = false"),
    (["workload={name='moe-lm', num_ues=4}", "train.local_steps=2"], "no vectorised gradient"),
])
def test_population_is_refused_where_it_cannot_run(tmp_path: Path, extra: list[str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        preflight(validate(apply_overrides({}, [
            "engine.name='inline'", f"output.dir={str(tmp_path)!r}", LOGREG, "strategy.name='serverfree-relay'",
            POP, *extra])))


def _ue_records(run_dir: Path) -> dict[tuple[int, str, str], torch.Tensor | None]:
    ckpt = load_checkpoint(run_dir)
    assert ckpt is not None
    bag = TensorBag(ckpt.tensors)
    return {(ue, name, key): (bag.get(t) if t is not None else None) for ue, name, key, t in ckpt.meta["ue_states"]}


@pytest.mark.parametrize("overlap", [[], [*OVERLAP, "strategy.overlap.merge='replace'"], OVERLAP])
def test_population_checkpoints_hold_the_records_the_ues_hold(tmp_path: Path, overlap: list[str]) -> None:
    """The UE records a population checkpoint holds are those the per-UE path's ClientApps hold
    in their Context.state (model, blocks in flight, sync model), including after a resume, for a
    UE that never answered (5) and for one that answered only before the resume (4); with overlap
    the blocks in flight are there."""
    extra = [LOGREG, "strategy.name='serverfree-relay'", "train.local_steps=2", *NOISY, "checkpoint.every=1",
             "rounds=4", "faults.trace=[[1, 5], [2, 5], [3, 5], [3, 4]]", *overlap]
    dirs = {}
    for path in ("per-ue", "population"):
        cfg = validate(apply_overrides({}, [
            "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path / path)!r}", *extra,
            POP if path == "population" else "engine.population=false"]))
        dirs[path] = interrupted_run(cfg, 3)  # rows of rounds 0 and 1, then round 2's exchange
        with pytest.MonkeyPatch.context() as mp:  # resumed, then stopped again: records survive a resume
            mp.setattr(Recorder, "log", _stop_after(Recorder.log, 4))
            with pytest.raises(_Stop):
                run_experiment(cfg, quiet=True, resume=dirs[path])
    per_ue, population = _ue_records(dirs["per-ue"]), _ue_records(dirs["population"])
    assert population.keys() == per_ue.keys()
    assert any(name == PENDING and key for _, name, key in per_ue) == bool(overlap)
    assert {ue for ue, _, _ in per_ue} == set(range(6)) - {5}  # UE 5 has not answered yet
    for key, t in per_ue.items():
        if t is None:
            assert population[key] is None, key
        else:
            torch.testing.assert_close(population[key], t, rtol=1e-9, atol=1e-12)


class _Stop(Exception):
    pass


def _stop_after(log, rows: int):
    def stop(self, row):
        log(self, row)
        if len(self.rows) >= rows:
            raise _Stop()

    return stop


def test_unreported_exchanges_copy_no_models() -> None:
    """An exchange that does not ask for reports returns no held models (none are copied)."""
    cfg = validate(apply_overrides({}, ["engine.name='inline'", LOGREG, "strategy.name='serverfree-relay'", POP]))
    exp = assemble(cfg)
    medium = exp.strategy.server(exp.server_setup({u: u + 1 for u in range(6)}))
    held = UEModels(exp.workload.init_params().repeat(6, 1))
    ex = PopulationExchange(report=False, flush=False, sampled=list(range(6)), failed={}, transmit="update",
                            mode="accumulate")
    result = population_round(medium, 1, held, ex, lambda ues, produce: (ues, torch.zeros_like(held.W[ues]), []))
    assert result.models is None and result.participants == list(range(6))
    ex.report = True
    nothing = population_round(medium, 2, held, ex, lambda ues, produce: ([], held.W[:0], []))
    assert nothing.models.holders == list(range(6))


@pytest.mark.parametrize(("extra", "taken"), [
    ([], True),
    (["engine.population=false"], False),
    (["engine.name='ray'"], False),
    (["engine.batched=true"], False),
    (["strategy.name='server-ota'"], True),
    (["strategy.name='server-digital'", "strategy.overlap.enabled=true", "strategy.overlap.in_flight='single'",
      "train.local_steps=2"], True),
    (["strategy.overlap.enabled=true"], True),
    (["strategy.overlap.enabled=true", "engine.population=false"], False),
])
def test_population_is_the_default_wherever_it_can_run(extra: list[str], taken: bool) -> None:
    cfg = validate(apply_overrides({}, ["engine.name='inline'", LOGREG, "strategy.name='serverfree-relay'", *extra]))
    assert cfg.engine.population in ("auto", False)
    assert assemble(cfg).population is taken


def test_a_strategy_with_its_own_ue_rule_or_server_runs_per_ue() -> None:
    """The population path reproduces only the built-in UE rules and server sides: a subclass with
    its own ``ue_round`` is refused, and a server side of its own falls back under "auto"."""
    from strategies.fedavg import ServerDigital

    class OwnRule(ServerDigital):
        def ue_round(self, ctx, received, config):
            return super().ue_round(ctx, received, config)

    cfg = validate(apply_overrides({}, ["engine.name='inline'", LOGREG, "strategy.name='server-digital'"]))
    assert OwnRule(cfg.strategy, 1).supports_population is not None
    assert ServerDigital(cfg.strategy, 1).supports_population is None
    exp = assemble(cfg)
    assert exp.population
    assert Population.of(exp, object()) is None  # a server side of its own: the per-UE path
    explicit = assemble(validate(apply_overrides({}, ["engine.name='inline'", LOGREG, POP])))
    with pytest.raises(FedsimError, match="has no population round"):
        Population.of(explicit, object())


def test_an_error_in_the_vectorised_code_stops_the_run_and_keeps_its_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One vectorised call serves every UE, so an exception in the workload's code cannot be pinned
    on one UE as on the per-UE path: the run stops as failed, with the error in its summary and the
    rows of the rounds before it kept."""
    original = SyntheticLogreg.stochastic_grad_many

    def crash(self, ws, ues, step):
        if step == 2:
            raise RuntimeError("simulated bug in the vectorised gradient")
        return original(self, ws, ues, step)

    monkeypatch.setattr(SyntheticLogreg, "stochastic_grad_many", crash)
    cfg = validate(apply_overrides({}, [
        "engine.name='inline'", "output.plot=false", f"output.dir={str(tmp_path)!r}", LOGREG, POP,
        "strategy.name='server-ota'", "train.local_steps=1", "rounds=5"]))
    result = execute(cfg, quiet=True)
    assert isinstance(result.error, RuntimeError)
    assert result.summary["status"] == "failed" and "simulated bug" in result.summary["error"]
    assert [r["round"] for r in load_run(result.run_dir).metrics] == [0, 1, 2]
