"""Cardiac-like short-axis phantoms: a left-ventricle (LV) blood pool, the myocardial ring around
it and a right-ventricle (RV) crescent, each slice with its own random geometry, imaged by a
"site" (a scanner) with its own contrast, bias field and noise.

Coordinates are normalised: the image spans ``[-1, 1]`` on both axes, and the pixel (i, j) of an
``S x S`` image has its centre at ``u = -1 + (2j + 1)/S`` (column, x) and ``v = -1 + (2i + 1)/S``
(row, y). A pixel's label is the region its centre lies in (no partial volume):

- LV (1): ``|p - c| < r``, the disk of radius r around the LV centre c;
- myocardium (2): ``r <= |p - c| < r + t``, the ring of thickness t;
- RV (3): ``|p - c_rv| < R`` and ``|p - c| >= r + t``: the RV disk minus the epicardial disk
  (a crescent, since the RV disk never contains the epicardial disk);
- background (0): everything else. A slice drops its RV with probability ``rv_missing``
  (apical slices), so some slices have no RV at all.

The clean image holds a tissue intensity per label (``TISSUE``) plus a smooth random texture on the
background. Site n turns it into ``x = I^gamma_n * b_n(u, v) + sigma_n * eps`` with
``eps ~ N(0, 1)`` per pixel and the multiplicative bias field
``b_n = exp(s * (a_1 u + a_2 v + a_3 u v))``, ``a`` a random unit vector of the site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: clean intensity of background, LV blood, myocardium, RV blood (label order)
TISSUE = np.array([0.30, 0.90, 0.50, 0.80])
TEXTURE = 0.04  # amplitude of each of the background texture's 4 random cosines
# per-slice geometry ranges, normalised units (the image is [-1, 1]^2)
LV_RADIUS = (0.16, 0.28)
THICKNESS = (0.07, 0.13)
LV_CENTRE = ((0.0, 0.2), (-0.1, 0.1))  # u range, v range (the RV sits to the left)
RV_ANGLE = np.pi / 4  # the RV direction is pi +- U(0, RV_ANGLE): the rotation of the slice
RV_RADIUS = (1.0, 1.25)  # RV disk radius, in units of the epicardial radius r + t
RV_OFFSET = (0.55, 0.85)  # RV disk centre's distance from c, in units of r + t


@dataclass(frozen=True)
class Geometry:
    """Per-slice geometry, each field ``[n]`` (normalised units, angle in radians)."""

    cu: np.ndarray
    cv: np.ndarray
    r: np.ndarray  # LV radius
    t: np.ndarray  # myocardial thickness
    angle: np.ndarray  # RV direction from c
    rv_radius: np.ndarray  # R
    rv_offset: np.ndarray  # |c_rv - c|
    rv_present: np.ndarray  # bool

    @property
    def rv_centre(self) -> tuple[np.ndarray, np.ndarray]:
        return self.cu + self.rv_offset * np.cos(self.angle), self.cv + self.rv_offset * np.sin(self.angle)


@dataclass(frozen=True)
class Site:
    """One scanner: contrast exponent gamma, bias strength s and direction a (unit, [3]), noise sigma."""

    gamma: float
    bias: float
    bias_dir: np.ndarray
    sigma: float


def draw_site(rng: np.random.Generator, gamma_range: tuple[float, float], bias: float,
              noise_range: tuple[float, float]) -> Site:
    """A site: log gamma ~ U(log lo, log hi), sigma ~ U(lo, hi), a ~ uniform on the unit sphere."""
    lo, hi = np.log(gamma_range[0]), np.log(gamma_range[1])
    gamma = float(np.exp(rng.uniform(lo, hi)))
    a = rng.standard_normal(3)
    sigma = float(rng.uniform(*noise_range))
    return Site(gamma=gamma, bias=float(bias), bias_dir=a / np.linalg.norm(a), sigma=sigma)


def draw_geometry(rng: np.random.Generator, n: int, rv_missing: float) -> Geometry:
    """``n`` slices' geometry from the ranges above (uniform in each)."""
    r = rng.uniform(*LV_RADIUS, n)
    t = rng.uniform(*THICKNESS, n)
    out = r + t
    return Geometry(
        cu=rng.uniform(*LV_CENTRE[0], n), cv=rng.uniform(*LV_CENTRE[1], n), r=r, t=t,
        angle=np.pi + rng.uniform(-RV_ANGLE, RV_ANGLE, n),
        rv_radius=out * rng.uniform(*RV_RADIUS, n), rv_offset=out * rng.uniform(*RV_OFFSET, n),
        rv_present=rng.uniform(size=n) >= rv_missing,
    )


def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)``, each ``[1, S, S]``: normalised x (column) and y (row) of every pixel centre."""
    c = -1.0 + (2.0 * np.arange(size) + 1.0) / size
    return c[None, None, :], c[None, :, None]


def labels(geo: Geometry, size: int) -> np.ndarray:
    """``[n, S, S]`` int64 label maps of the slices ``geo`` (see the module docstring)."""
    u, v = pixel_centres(size)
    col = lambda a: a[:, None, None]  # noqa: E731
    d = np.hypot(u - col(geo.cu), v - col(geo.cv))
    ru, rv = geo.rv_centre
    in_rv = (np.hypot(u - col(ru), v - col(rv)) < col(geo.rv_radius)) & col(geo.rv_present)
    y = np.zeros(d.shape, dtype=np.int64)
    y[in_rv] = 3
    y[d < col(geo.r + geo.t)] = 2
    y[d < col(geo.r)] = 1
    return y


def clean_image(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[n, S, S]`` tissue intensities of label maps ``y``, with a smooth background texture
    (4 cosines of 0.5..2 cycles per image width, random direction and phase, amplitude TEXTURE)."""
    n, size = y.shape[0], y.shape[-1]
    u, v = pixel_centres(size)
    freq = rng.uniform(0.5, 2.0, (n, 4, 1, 1)) * np.pi
    theta = rng.uniform(0, 2 * np.pi, (n, 4, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 4, 1, 1))
    tex = TEXTURE * np.cos(freq * (np.cos(theta) * u[:, None] + np.sin(theta) * v[:, None]) + phase).sum(1)
    return TISSUE[y] + np.where(y == 0, tex, 0.0)


def bias_field(site: Site, size: int) -> np.ndarray:
    """``[1, S, S]``: b(u, v) = exp(s (a_1 u + a_2 v + a_3 u v))."""
    u, v = pixel_centres(size)
    a = site.bias_dir
    return np.exp(site.bias * (a[0] * u + a[1] * v + a[2] * u * v))


def acquire(clean: np.ndarray, site: Site, rng: np.random.Generator) -> np.ndarray:
    """What site ``site`` measures of ``clean [n, S, S]``: clean^gamma * b + sigma * N(0, 1)."""
    shaded = np.clip(clean, 0.0, None) ** site.gamma * bias_field(site, clean.shape[-1])
    return shaded + site.sigma * rng.standard_normal(clean.shape)


def site_slices(site: Site, n: int, size: int, rv_missing: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """``n`` slices imaged by ``site``: ``(x [n, S, S] float32, y [n, S, S] int64, geometry)``; the
    geometry, texture and noise are drawn from ``rng`` in that order."""
    geo = draw_geometry(rng, n, rv_missing)
    y = labels(geo, size)
    x = acquire(clean_image(y, rng), site, rng)
    return x.astype(np.float32), y, geo
