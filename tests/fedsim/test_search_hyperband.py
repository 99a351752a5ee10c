"""Hyperband's bracket schedule against Li et al. (JMLR 2018), Table 1 (R = 81, eta = 3), written
out by hand, and the search running exactly that schedule with the best 1/eta promoted."""

from __future__ import annotations

import numpy as np

from fedsim.search.hyperband import bracket_schedule, hyperband_search
from fedsim.search.space import FidelitySpace, SearchSpace

# Li et al., Table 1: per bracket s, the rungs (n_i, r_i)
TABLE_1 = {
    4: [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    3: [(34, 3), (11, 9), (3, 27), (1, 81)],
    2: [(15, 9), (5, 27), (1, 81)],
    1: [(8, 27), (2, 81)],
    0: [(5, 81)],
}


def test_bracket_schedule_is_li_et_al_table_1():
    schedule = bracket_schedule(smax=4, eta=3)
    assert [len(b) for b in schedule] == [5, 4, 3, 2, 1]
    for s, bracket in zip((4, 3, 2, 1, 0), schedule, strict=True):
        assert [(n, r) for n, r, _ in bracket] == TABLE_1[s]
        # the level of rung i is log_3 r_i
        assert [lvl for _, _, lvl in bracket] == [round(np.log(r) / np.log(3)) for _, r in TABLE_1[s]]


def test_hyperband_runs_the_schedule_and_promotes_the_best():
    space = SearchSpace({"x": list(range(50)), "y": list(range(50))})
    fid = FidelitySpace({"rounds": [1, 3, 9]})
    calls = []

    def evaluate(points):
        calls.append([(tuple(p), f["rounds"]) for p, f in points])
        return [float(p[0] + p[1]) for p, _ in points]

    schedule = bracket_schedule(2, 3)  # s=2: 9@1, 3@3, 1@9; s=1: 5@3, 1@9 (ceil(3*3/2)=5); s=0: 3@9
    total = sum(n for b in schedule for n, _, _ in b)
    hyperband_search(space, fid, total, 0, evaluate, eta=3)
    assert [(len(c), c[0][1]) for c in calls] == [(9, 1), (3, 3), (1, 9), (5, 3), (1, 9), (3, 9)]
    # the three promoted from the first rung are its three best, and the survivor is their best
    first = sorted(calls[0], key=lambda c: -(c[0][0] + c[0][1]))
    assert {c[0] for c in calls[1]} == {c[0] for c in first[:3]}
    assert calls[2][0][0] == max((c[0] for c in calls[1]), key=sum)
