"""The per-op cost model: op summaries counted from a real forward pass equal the closed forms
used for the table's CNNs and for MLPs, and NNLS recovers known coefficients from a synthetic table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedsim.workloads.latency.costmodel import (
    cnn3_features,
    cnn3_summary_features,
    features,
    fit_cost_model,
    mlp_features,
    op_summary,
)
from fedsim.workloads.latency.space import NUM_ARCHS, PROFILES, Cnn3, decode
from fedsim.workloads.latency.table import shipped_table


@pytest.mark.parametrize("index", [2771, NUM_ARCHS - 1])
def test_counted_summary_matches_closed_form(index: int) -> None:
    layers = [tuple(map(int, lk)) for lk in decode(index)[0]]
    counted = op_summary(Cnn3(layers).eval(), torch.zeros(1, 1, 28, 28))
    assert counted == cnn3_summary_features(PROFILES[0], index)
    for p in PROFILES:  # the profile's repeats counted in a real forward equal the closed-form features
        real = op_summary(Cnn3(layers, p).eval(), torch.zeros(1, 1, 28, 28))
        want = features(real, dataclasses.replace(p, slowdown={}))
        assert cnn3_features(p, np.array([index]))[0] == pytest.approx(want, rel=1e-12)


def test_mlp_closed_form_matches_counted() -> None:
    widths = torch.tensor([[4, 64, 8], [32, 16, 64]])
    got = mlp_features(widths, 20, 10, PROFILES[2])
    for row, w in zip(got, widths.tolist(), strict=True):
        dims = [20, *w, 10]
        layers = [m for a, b in zip(dims[:-1], dims[1:], strict=True) for m in (nn.Linear(a, b), nn.ReLU())][:-1]
        summary = op_summary(nn.Sequential(*layers).eval(), torch.zeros(1, 20))
        assert row.numpy() == pytest.approx(features(summary, PROFILES[2]), rel=1e-12)


def test_nnls_recovers_planted_coefficients() -> None:
    table = shipped_table()
    coef = np.array([[0.01, 2e-8, 3e-7], [0.02, 0.0, 1e-6]])
    profiles = table.profiles[:2]
    lat = np.stack([cnn3_features(p) @ c for p, c in zip(profiles, coef, strict=True)])
    fitted = fit_cost_model(dataclasses.replace(table, latency_ms=lat, profiles=profiles))
    assert fitted.coef == pytest.approx(coef, rel=1e-6, abs=1e-15)
    assert max(fitted.fit_median_ape) < 1e-6
