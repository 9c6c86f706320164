"""Synthetic ADF images with ground truth, for choosing thresholds and for the bench.

Atomic structures (projected columns as Gaussians of rms width ``column_sigma_m``, ADF
intensity per column relative to the brightest sublattice):

- ``square``: one column a cell, a = 3.9 Å (a simple cubic projection).
- ``perovskite``: A at (0, 0) (1.0) and B at (1/2, 1/2) (0.55) of a 3.905 Å cell, as SrTiO3
  [001] in HAADF (O columns too weak to see and left out).
- ``honeycomb``: MoS2-like, a = 3.16 Å hexagonal, Mo at (1/3, 2/3) (1.0) and S2 at
  (2/3, 1/3) (0.5).
- ``dumbbell``: Si [110]-like, a 3.84 x 5.43 Å centred cell with pairs 1.36 Å apart (1.0
  and 1.0).

Non-atomic images (no resolved columns; the analysis must report none):

- ``particles``: Au particles (2-10 nm) on amorphous carbon at 0.2-0.6 nm pixels.
- ``amorphous``: an amorphous film (random atoms, about 1.9 Å apart) at atomic pixels.
- ``blob_vacuum``: a smooth bright region (a thick particle without a lattice at this focus)
  beside vacuum, at atomic pixels, like the Au edge of issue 22.
- ``noise``: pure shot noise.
- ``fringes``: one set of lattice fringes (a crystal seen off zone axis): a 1-D lattice, no
  columns.

Every image is expected electrons per pixel (dose x pixel area x scattered fraction) with
Poisson noise, then a random detector gain and offset (analysis must not assume counts). A
structure is rotated by a random angle with a random origin; 2 % of columns are removed
(vacancies, absent from the truth). Same seed, same image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from emauto.errors import AnalysisError

ANGSTROM = 1e-10

_H = 3.16 * math.sqrt(3) / 2
#: name -> (a1, a2 in Å, [(x, y offset in Å, relative intensity, sublattice label)])
STRUCTURES: dict[
    str, tuple[tuple[float, float], tuple[float, float], list[tuple[float, float, float, str]]]
] = {
    "square": ((3.9, 0.0), (0.0, 3.9), [(0.0, 0.0, 1.0, "A")]),
    "perovskite": ((3.905, 0.0), (0.0, 3.905), [(0.0, 0.0, 1.0, "A"), (1.9525, 1.9525, 0.55, "B")]),
    "honeycomb": (
        (3.16, 0.0),
        (-1.58, _H),
        [(0.0, _H * 2 / 3, 1.0, "Mo"), (1.58, _H / 3, 0.5, "S2")],
    ),
    "dumbbell": (
        (3.84, 0.0),
        (1.92, 2.715),
        [(0.0, -0.68, 1.0, "upper"), (0.0, 0.68, 1.0, "lower")],
    ),
}
NON_ATOMIC = ("particles", "amorphous", "blob_vacuum", "noise", "fringes")


@dataclass
class SyntheticImage:
    """An image ``[y, x]`` and its truth: column (x, y) pixels and sublattice labels."""

    image: np.ndarray
    pixel_m: float
    kind: str
    columns_xy_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: list[str] = field(default_factory=list)
    dose_e_per_A2: float = 0.0
    column_sigma_m: float = 0.0
    expected_e: np.ndarray | None = None  # noiseless expected electrons per pixel


def _gaussians(
    shape: tuple[int, int], xy: np.ndarray, weights: np.ndarray, sigma_px: float
) -> np.ndarray:
    """Sum of unit-peak Gaussians at ``xy`` (N, 2 pixels) times ``weights`` on ``shape``."""
    ny, nx = shape
    out = np.zeros(shape)
    half = math.ceil(4 * sigma_px) + 1
    off = np.arange(-half, half + 1)
    for (x, y), w in zip(xy, weights, strict=True):
        ix, iy = round(x), round(y)
        xs, ys = ix + off, iy + off
        kx = (xs >= 0) & (xs < nx)
        ky = (ys >= 0) & (ys < ny)
        if not kx.any() or not ky.any():
            continue
        gx = np.exp(-((xs[kx] - x) ** 2) / (2 * sigma_px**2))
        gy = np.exp(-((ys[ky] - y) ** 2) / (2 * sigma_px**2))
        out[np.ix_(ys[ky], xs[kx])] += w * np.outer(gy, gx)
    return out


def _finish(expected_e: np.ndarray, rng: np.random.Generator, noise: bool) -> np.ndarray:
    """Poisson counts (or the expectation) times a random gain plus a random offset."""
    counts = rng.poisson(np.clip(expected_e, 0, None)).astype(np.float64) if noise else expected_e
    gain = float(rng.uniform(0.5, 20.0))
    offset = float(rng.uniform(-50.0, 200.0))
    return np.asarray(counts * gain + offset, dtype=np.float64)


def crystal_image(
    structure: str,
    *,
    seed: int,
    shape: tuple[int, int] = (192, 192),
    pixel_m: float = 20e-12,
    dose_e_per_A2: float = 5e3,
    column_sigma_m: float | None = None,
    peak_fraction: float = 0.12,
    background_fraction: float = 0.01,
    vacancy_fraction: float = 0.02,
    interstitials: int = 0,
    noise: bool = True,
) -> SyntheticImage:
    """An ADF image of ``structure`` (see module doc) with its truth.

    ``peak_fraction``: the scattered fraction at the centre of a brightest column;
    ``background_fraction``: scattered fraction between columns; ``dose_e_per_A2``: e/Å^2;
    ``interstitials``: columns (intensity 0.8, label "interstitial") near the centres of
    random cells well inside the image (a different place in each), off every site.
    """
    if structure not in STRUCTURES:
        raise AnalysisError(f"structure: expected one of {sorted(STRUCTURES)}, got {structure!r}")
    rng = np.random.default_rng(seed)
    ny, nx = shape
    pixel_a = pixel_m / ANGSTROM
    sigma_a = column_sigma_m / ANGSTROM if column_sigma_m else float(rng.uniform(0.3, 0.5))
    v1, v2, basis = STRUCTURES[structure]
    a1, a2 = np.array(v1), np.array(v2)
    sites = [(np.array([x, y]), w, name) for x, y, w, name in basis]
    angle = float(rng.uniform(0, math.pi))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    a1p, a2p = rot @ a1 / pixel_a, rot @ a2 / pixel_a
    origin = np.array([nx / 2, ny / 2]) + rng.uniform(-3, 3, size=2)
    reach = int(math.hypot(nx, ny) / min(np.hypot(*a1p), np.hypot(*a2p))) + 3
    ij = np.stack(np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1)), -1)
    ij = ij.reshape(-1, 2).astype(np.float64)
    cells = origin + ij[:, :1] * a1p + ij[:, 1:] * a2p
    xy_all, w_all, lab_all = [], [], []
    for offset, weight, name in sites:
        pts = cells + rot @ offset / pixel_a
        pts = pts + rng.normal(0.0, 0.02 / pixel_a, size=pts.shape)  # 2 pm static displacement
        margin = 4 * sigma_a / pixel_a + 2
        keep = (pts[:, 0] > -margin) & (pts[:, 0] < nx - 1 + margin)
        keep &= (pts[:, 1] > -margin) & (pts[:, 1] < ny - 1 + margin)
        pts = pts[keep]
        xy_all.append(pts)
        w_all.append(np.full(len(pts), weight))
        lab_all.extend([name] * len(pts))
    xy = np.concatenate(xy_all)
    weights = np.concatenate(w_all)
    labels = np.array(lab_all)
    present = rng.random(len(xy)) >= vacancy_fraction
    xy, weights, labels = xy[present], weights[present], labels[present]
    if interstitials:
        uv = rng.uniform(0.35, 0.65, size=(len(cells), 2))  # a different place in each cell
        centres = cells + uv[:, :1] * a1p + uv[:, 1:] * a2p + rot @ sites[0][0] / pixel_a
        inner = np.all((centres > 12) & (centres < np.array([nx, ny]) - 12), axis=1)
        chosen = rng.choice(np.nonzero(inner)[0], size=interstitials, replace=False)
        xy = np.concatenate([xy, centres[chosen]])
        weights = np.concatenate([weights, np.full(interstitials, 0.8)])
        labels = np.concatenate([labels, np.array(["interstitial"] * interstitials)])
    fraction = background_fraction + peak_fraction * _gaussians(
        shape, xy, weights, sigma_a / pixel_a
    )
    expected_e = dose_e_per_A2 * pixel_a**2 * fraction
    data = _finish(expected_e, rng, noise)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= nx - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= ny - 1)
    return SyntheticImage(
        image=data,
        pixel_m=pixel_m,
        kind=structure,
        columns_xy_px=xy[inside],
        labels=labels[inside].tolist(),
        dose_e_per_A2=dose_e_per_A2,
        column_sigma_m=sigma_a * ANGSTROM,
        expected_e=expected_e,
    )


def non_atomic_image(
    kind: str,
    *,
    seed: int,
    shape: tuple[int, int] = (192, 192),
    dose_e_per_A2: float = 5e3,
) -> SyntheticImage:
    """An image without resolved atomic columns (see module doc); its truth has none."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    if kind == "particles":
        pixel_m = float(rng.uniform(0.2e-9, 0.6e-9))
        fraction = 0.01 + 0.01 * _smooth_noise(shape, 6.0, rng)
        for _ in range(int(rng.integers(5, 40))):
            r = rng.uniform(1e-9, 5e-9) / pixel_m
            cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
            d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
            fraction += 0.3 * np.sqrt(np.clip(1 - d2, 0, None))
    elif kind == "amorphous":
        pixel_m = float(rng.uniform(12e-12, 35e-12))
        pixel_a = pixel_m / ANGSTROM
        n = int(nx * ny * pixel_a**2 / 1.9**2 * 3)  # about 3 atoms a 1.9 Å square in depth
        xy = rng.uniform([-5, -5], [nx + 5, ny + 5], size=(n, 2))
        fraction = 0.01 + 0.04 * _gaussians(shape, xy, np.ones(n), 0.45 / pixel_a)
    elif kind == "blob_vacuum":
        pixel_m = float(rng.uniform(5e-12, 15e-12))
        cx, cy = rng.uniform(-0.2, 0.5) * nx, rng.uniform(0.2, 0.8) * ny
        r = rng.uniform(0.5, 0.9) * nx
        d = np.hypot(xx - cx, yy - cy)
        edge = 1 / (1 + np.exp((d - r) / rng.uniform(3, 20)))
        fraction = 0.002 + edge * (0.2 + 0.05 * _smooth_noise(shape, 30.0, rng))
    elif kind == "noise":
        pixel_m = float(rng.uniform(10e-12, 50e-12))
        fraction = np.full(shape, float(rng.uniform(0.01, 0.2)))
    elif kind == "fringes":
        pixel_m = float(rng.uniform(12e-12, 35e-12))
        period = float(rng.uniform(2.0, 3.5)) * ANGSTROM / pixel_m
        angle = float(rng.uniform(0, math.pi))
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period
        fraction = 0.05 * (1 + 0.3 * np.cos(phase)) * (1 + 0.2 * _smooth_noise(shape, 20.0, rng))
    else:
        raise AnalysisError(f"kind: expected one of {list(NON_ATOMIC)}, got {kind!r}")
    pixel_a = pixel_m / ANGSTROM
    # at coarse pixels the dose per Å^2 would give huge counts; cap it near a survey's
    dose = min(dose_e_per_A2, 2e4 / pixel_a**2)
    expected_e = dose * pixel_a**2 * np.clip(fraction, 0, None)
    data = _finish(expected_e, rng, True)
    return SyntheticImage(
        image=data, pixel_m=pixel_m, kind=kind, dose_e_per_A2=dose, expected_e=expected_e
    )


def _smooth_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    field_ = ndimage.gaussian_filter(rng.normal(size=shape), sigma_px, mode="wrap")
    return field_ / max(float(field_.std()), 1e-12)
