"""The policy-gradient search: shared perturbations (identical on every UE, uniform on
{-eps, 0, +eps} by a chi-square test) and one update against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedsim.search.rl import perturbations, rl_search, rl_update, ue_perturbations
from fedsim.search.space import FidelitySpace, SearchSpace


def test_perturbations_are_identical_on_every_ue_and_change_with_seed_and_iteration():
    draws = ue_perturbations(seed=7, iteration=3, p=16, eps=2, dims=5, num_ues=12)
    assert draws.shape == (12, 16, 5)
    assert (draws == draws[0]).all()  # every UE drew the same perturbations from the shared key
    assert not np.array_equal(draws[0], perturbations(7, 4, 16, 2, 5))  # next iteration: new draws
    assert not np.array_equal(draws[0], perturbations(8, 3, 16, 2, 5))  # another seed: new draws


@pytest.mark.parametrize("eps", [1, 3])
def test_perturbations_follow_the_uniform_law_on_three_values(eps):
    d = perturbations(seed=1, iteration=0, p=20000, eps=eps, dims=3)
    values, counts = np.unique(d, return_counts=True)
    assert values.tolist() == [-eps, 0, eps]
    # chi-square goodness of fit against 1/3 each, per dimension and pooled
    for col in range(3):
        _, c = np.unique(d[:, col], return_counts=True)
        assert stats.chisquare(c).pvalue > 1e-3
    assert stats.chisquare(counts).pvalue > 1e-3


def test_rl_update_matches_a_hand_computation():
    # 4 perturbations over 3 dimensions, eps = 1
    deltas = np.array([[1, 0, -1],
                       [-1, 1, 0],
                       [0, 1, 1],
                       [1, -1, 0]])
    rewards = np.array([0.8, 0.5, 0.6, 0.9])
    # d0: Avg+ = (0.8 + 0.9)/2 = 0.85, Avg0 = 0.6, Avg- = 0.5  -> A0 = 0.35
    # d1: Avg+ = (0.5 + 0.6)/2 = 0.55, Avg0 = 0.8, Avg- = 0.9  -> Avg0 < max -> A1 = 0.55 - 0.9 = -0.35
    # d2: Avg+ = 0.6, Avg0 = (0.5 + 0.9)/2 = 0.7, Avg- = 0.8 -> Avg0 = 0.7 < 0.8 -> A2 = 0.6 - 0.8 = -0.2
    a_hand = np.array([0.35, -0.35, -0.2])
    pi0, sizes, eta = np.array([5, 2, 0]), np.array([12, 6, 2]), 2.0
    new, a = rl_update(pi0, deltas, rewards, eta, sizes)
    np.testing.assert_allclose(a, a_hand, atol=1e-12)
    norm = np.sqrt(0.35**2 + 0.35**2 + 0.2**2)  # 0.5338
    # pi0 + 2 A/|A| = (5 + 1.3112, 2 - 1.3112, 0 - 0.7493) -> round (6, 1, -1) -> clip to the grid (6, 1, 0)
    np.testing.assert_allclose(pi0 + eta * a_hand / norm, [6.3112, 0.6888, -0.7493], atol=1e-4)
    assert new.tolist() == [6, 1, 0]


def test_rl_update_keeps_pi0_when_zero_is_best_everywhere():
    deltas = np.array([[1, -1], [0, 0], [-1, 1]])
    new, a = rl_update(np.array([3, 3]), deltas, np.array([0.1, 0.9, 0.2]), 1.0, np.array([7, 7]))
    assert a.tolist() == [0.0, 0.0] and new.tolist() == [3, 3]


def test_rl_search_climbs_a_separable_objective():
    space = SearchSpace({"a": list(range(10)), "b": list(range(10))})
    seen = []

    def evaluate(points):
        seen.extend(p for p, _ in points)
        return [-float((p[0] - 8) ** 2 + (p[1] - 1) ** 2) for p, _ in points]

    rl_search(space, FidelitySpace(None), 120, 0, evaluate, p=6, eps=1, eta=1.0)
    assert len(seen) == 120
    assert {tuple(p) for p in seen[-6:]} & {(8, 1)}  # the policy reached the optimum
