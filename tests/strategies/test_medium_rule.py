"""The UE rule on the medium (:func:`strategies.medium.ue_round`) against updates written out by
hand: a UE that missed rounds merges its backlog oldest first, in the units its strategy
transmits, and a UE that is not sampled merges everything and transmits nothing.

The local objective is f(w) = ½‖w − c‖², so the gradient is w − c and every step is exact."""

from __future__ import annotations

import pytest
import torch

from strategies import STRATEGIES
from strategies.base import OverlapParams, UEContext
from strategies.medium import Arrival, UEState, ue_round
from strategies.overlap import OverlapState

C = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
W0 = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64)
E1 = torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
E2 = torch.tensor([-1.0, 2.0, 0.25], dtype=torch.float64)


def lr(step: int) -> float:
    return 0.1 / (1 + step)  # differs per step, so the block whose step size is used shows


def context(first_step: int, steps: int) -> UEContext:
    return UEContext(ue=0, first_step=first_step, steps=steps, lr=lr, grad=lambda w, s: w - C, train=None,
                     init=lambda: W0.clone(), state={}, device=torch.device("cpu"))


def run(mode: str, transmit: str, arrivals: list[Arrival], *, participate: bool = True, steps: int = 1,
        first_step: int = 6) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    state = UEState(W0.clone(), OverlapState(pending={}, sync=W0.clone()))
    reported, v = ue_round(state, arrivals, ctx=context(first_step, steps), transmit=transmit, mode=mode,
                           overlap=OverlapParams(), participate=participate, report=True)
    assert reported is not None
    return reported, v, state.w


def test_reset_mode_keeps_the_latest_of_a_backlog() -> None:
    """A UE that failed receives two models at once: it must end on the newer one."""
    reported, v, w = run("reset", "model", [Arrival(3, 0, E2), Arrival(2, 0, E1)])
    torch.testing.assert_close(reported, E2, rtol=0, atol=0)
    torch.testing.assert_close(v, E2 - lr(6) * (E2 - C), rtol=0, atol=1e-15)  # its model after its step


def test_update_mode_adds_every_estimate_of_a_backlog() -> None:
    reported, v, _ = run("accumulate", "update", [Arrival(2, 0, E1), Arrival(3, 0, E2)], steps=2)
    w = W0 + E1 + E2
    torch.testing.assert_close(reported, w, rtol=0, atol=1e-15)
    start = w.clone()
    for s in (6, 7):
        w = w - lr(s) * (w - C)
    torch.testing.assert_close(v, w - start, rtol=0, atol=1e-15)


def test_gradient_mode_steps_each_estimate_with_its_own_blocks_step_size() -> None:
    """Block b's gradient estimate is applied with η of block b's first step, (b − 1)·K."""
    reported, v, _ = run("accumulate", "gradient", [Arrival(2, 0, E1), Arrival(4, 0, E2)])
    w = W0 - lr(1) * E1 - lr(3) * E2
    torch.testing.assert_close(reported, w, rtol=0, atol=1e-15)
    torch.testing.assert_close(v, w - C, rtol=0, atol=1e-15)


def test_a_ue_that_is_not_sampled_merges_everything_and_stays_silent() -> None:
    """Arrivals due later in the round (index > 0) are merged at once, before the report; nothing is
    transmitted."""
    reported, v, w = run("accumulate", "update", [Arrival(2, 1, E1), Arrival(3, 0, E2)], participate=False,
                         steps=2)
    assert v is None
    torch.testing.assert_close(reported, W0 + E1 + E2, rtol=0, atol=1e-15)
    torch.testing.assert_close(w, W0 + E1 + E2, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("mode", "transmit"), [("accumulate", "model"), ("reset", "gradient"),
                                                ("reset", "update")])
def test_serverfree_refuses_a_mode_its_transmission_cannot_serve(mode: str, transmit: str) -> None:
    cls = STRATEGIES.get("serverfree-relay")
    strategy = cls(cls.Params(name="serverfree-relay", mode=mode, transmit=transmit), local_steps=1)
    with pytest.raises(ValueError, match="mode"):
        strategy.check()
