"""The seg-unet phantoms: label maps against the analytic geometry (pixel centres, areas by closed
form), site draws against their configured laws, and the workload's images against their sites."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedsim.workloads import build_workload, parse_workload_config
from fedsim.workloads.seg import phantom

pytestmark = pytest.mark.usefixtures("one_thread")


def _geometry(n: int, seed: int = 0, rv_missing: float = 0.0) -> phantom.Geometry:
    return phantom.draw_geometry(np.random.default_rng(seed), n, rv_missing)


def test_labels_are_the_regions_holding_each_pixel_centre() -> None:
    geo, size = _geometry(5, seed=1, rv_missing=0.4), 24
    y = phantom.labels(geo, size)
    ru, rv = geo.rv_centre
    for k in range(5):
        for i in range(size):
            for j in range(size):
                u, v = (2 * j + 1) / size - 1, (2 * i + 1) / size - 1  # the pixel centre
                rho = math.dist((u, v), (geo.cu[k], geo.cv[k]))
                if rho < geo.r[k]:
                    want = 1
                elif rho < geo.r[k] + geo.t[k]:
                    want = 2
                elif geo.rv_present[k] and math.dist((u, v), (ru[k], rv[k])) < geo.rv_radius[k]:
                    want = 3
                else:
                    want = 0
                assert y[k, i, j] == want, (k, i, j)
    assert not (y[~geo.rv_present] == 3).any() and (y[geo.rv_present] == 3).any()


def _lens(r1: float, r2: float, d: float) -> float:
    """Area of the intersection of two disks (radii r1, r2, centres d apart), |r1 - r2| < d < r1 + r2."""
    a1 = r1**2 * math.acos((d**2 + r1**2 - r2**2) / (2 * d * r1))
    a2 = r2**2 * math.acos((d**2 + r2**2 - r1**2) / (2 * d * r2))
    return a1 + a2 - 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))


def test_region_areas_match_the_closed_forms() -> None:
    """Pixel counts against pi r^2, the ring pi((r+t)^2 - r^2) and the crescent pi R^2 minus the lens
    with the epicardial disk. Per slice the count of pixel centres in a disk of radius rho (pixels)
    is within 2 sqrt(2) pi rho of its area (every pixel crossing the boundary lies in the annulus
    rho +- sqrt(2)/2); averaged over slices the relative error is far smaller."""
    size, n = 64, 200
    geo = _geometry(n, seed=2)
    y = phantom.labels(geo, size)
    px = size / 2  # pixels per normalised unit
    ru, rv = geo.rv_centre
    rel = {1: [], 2: [], 3: []}
    for k in range(n):
        r, out, big = geo.r[k] * px, (geo.r[k] + geo.t[k]) * px, geo.rv_radius[k] * px
        lv, ring = math.pi * r**2, math.pi * (out**2 - r**2)
        crescent = math.pi * big**2 - _lens(big, out, geo.rv_offset[k] * px)
        counts = np.bincount(y[k].ravel(), minlength=4)
        slack = 2 * math.sqrt(2) * math.pi
        assert abs(counts[1] - lv) <= slack * r
        assert abs(counts[2] - ring) <= slack * (r + out)
        inside = min(ru[k] + 1, 1 - ru[k], rv[k] + 1, 1 - rv[k]) > geo.rv_radius[k]
        if inside:  # the crescent is not cut by the image border
            assert abs(counts[3] - crescent) <= slack * (big + out)
            rel[3].append(counts[3] / crescent - 1)
        rel[1].append(counts[1] / lv - 1)
        rel[2].append(counts[2] / ring - 1)
    assert len(rel[3]) > n // 2
    for c in (1, 2, 3):
        assert abs(np.mean(rel[c])) < 0.01, (c, np.mean(rel[c]))


def test_site_draws_follow_their_configured_laws() -> None:
    rng = np.random.default_rng(3)
    sites = [phantom.draw_site(rng, (0.5, 2.0), 0.7, (0.01, 0.2)) for _ in range(400)]
    log_g = np.log([s.gamma for s in sites])
    lo, hi = math.log(0.5), math.log(2.0)
    assert stats.kstest(log_g, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    assert stats.kstest([s.sigma for s in sites], stats.uniform(0.01, 0.19).cdf).pvalue > 1e-3
    dirs = np.array([s.bias_dir for s in sites])
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, rtol=1e-12)
    assert np.abs(dirs.mean(0)).max() < 4 / math.sqrt(3 * 400)  # isotropic: each coordinate has variance 1/3


def test_each_ue_images_its_slices_with_its_own_site() -> None:
    """On the myocardium (clean intensity 0.5, no texture) a UE's pixels are
    0.5^gamma * b(u, v) + sigma * N(0, 1): estimate gamma and sigma back from the workload's data."""
    cfg = parse_workload_config({"name": "seg-unet", "num_ues": 6, "slices_per_ue": 24, "gamma_range": [0.5, 2.0],
                                 "noise_range": [0.02, 0.15], "bias": 0.5})
    wl = build_workload(cfg, seed=4)
    gammas, sigmas = [], []
    for n in range(6):
        site = wl.sites[n]
        x, y = wl.ue_data(n)
        b = np.broadcast_to(phantom.bias_field(site, cfg.size), y.shape)
        myo = y.numpy() == 2
        xm, bm = x[:, 0].numpy()[myo].astype(np.float64), b[myo]
        g_hat = math.log(np.mean(xm / bm)) / math.log(0.5)
        s_hat = np.std(xm - 0.5**site.gamma * bm)
        m = myo.sum()
        assert g_hat == pytest.approx(site.gamma, abs=4 * site.sigma / (0.5**site.gamma * math.log(2) * math.sqrt(m)
                                                                        * bm.min()))
        chi = stats.chi2(m)  # 99.9 % interval of the sample std
        assert chi.ppf(5e-4) / m < (s_hat / site.sigma) ** 2 < chi.ppf(1 - 5e-4) / m
        gammas.append(site.gamma)
        sigmas.append(site.sigma)
    assert len(set(gammas)) == 6 and max(gammas) / min(gammas) > 1.3
    assert max(sigmas) / min(sigmas) > 1.3
