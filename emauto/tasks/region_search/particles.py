"""Particles in a medium-magnification ADF overview, and how likely each is on a zone axis.

What tells a zone-axis particle from another at medium magnification (0.3 nm pixels, too
coarse for the 0.20-0.24 nm Au fringes) is **channelling**: on the zone axis a particle
scatters more to the ADF detector per nanometre of thickness, so its projected-thickness
profile is steeper for its size. With ``tau = -ln(1 - f)`` (``f`` the scattered fraction,
background subtracted) proportional to the projected thickness, a sphere of radius ``r``
gives ``tau(rho)^2 = (2 k r)^2 - (2 k)^2 rho^2`` at distance ``rho`` from its centre, so the
slope of ``tau^2`` against ``rho^2`` measures the scattering per length ``k`` whatever the
size; the peak over the footprint radius measures it again. `find_particles` segments the
overview (smoothing, local maxima, watershed) and returns these features per particle;
`target_probability` turns them into the probability of a zone-axis particle with a
logistic model fitted on training fields (`TargetModel`, fitted by `fit_target_model`).

Shapes: a fraction map (H, W) float; features (N, `FEATURE_NAMES`) float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from emauto.units import StrictModel

#: Columns of the particle features (lengths in nm, ``tau`` dimensionless).
FEATURE_NAMES = (
    "log_profile_slope",  # ln sqrt(-d tau^2 / d rho^2) (1/nm): channelling, size-free
    "log_peak_per_radius",  # ln(peak tau / footprint radius) (1/nm)
    "log_radius",  # ln footprint radius (nm), from the area above the threshold
    "log_peak",  # ln peak tau (smoothed)
    "fill",  # integrated tau / (area x peak): 2/3 for a sphere
    "fit_r2",  # R^2 of the tau^2-rho^2 line
)
#: Smoothed ``tau`` above which a pixel belongs to a particle; a peak must reach `PEAK_MIN`.
#: (Carbon film and contamination stay below 0.03; the smallest particles peak near 0.08.)
MASK_LEVEL = 0.05
PEAK_MIN = 0.07
#: How far (tau) a peak must rise above the saddle to a higher one: about 2.5 standard
#: deviations of the smoothed counting noise on top of the largest particles.
PEAK_PROMINENCE = 0.05


@dataclass(frozen=True)
class Particles:
    """Particles found in a map: centres (N, 2) as (x, y) pixel coordinates of the map,
    features (N, len(FEATURE_NAMES))."""

    centres_px: np.ndarray
    features: np.ndarray


def thickness_map(fraction: np.ndarray) -> np.ndarray:
    """``tau = -ln(1 - f)`` of a scattered-fraction map (proportional to projected
    thickness for one material)."""
    return -np.log(np.clip(1.0 - np.asarray(fraction, dtype=np.float64), 1e-3, None))


def find_particles(fraction: np.ndarray, pixel_m: float, *, sigma_px: float = 1.0) -> Particles:
    """Segment the particles of a scattered-fraction map (H, W) with pixels of ``pixel_m``
    (m, about 0.3 nm: a particle must span several pixels) and measure each (vectorised
    over particles: one smoothing, one h-maxima, one watershed, sums per label)."""
    if pixel_m <= 0 or not math.isfinite(pixel_m):
        raise ValueError(f"pixel_m must be a positive length in m, got {pixel_m}")
    empty = Particles(np.zeros((0, 2)), np.zeros((0, len(FEATURE_NAMES))))
    tau = thickness_map(fraction)
    smooth = ndi.gaussian_filter(tau, sigma_px)
    background = float(np.median(smooth[::3, ::3]))
    tau -= background
    smooth -= background
    mask = smooth > MASK_LEVEL
    s = np.where(mask, smooth, 0.0)
    if s.max() <= PEAK_MIN:
        return empty
    peaks = _peaks(s, max(3, 2 * round(0.75e-9 / pixel_m) + 1))
    if len(peaks) == 0:
        return empty
    markers = np.zeros(s.shape, np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1)
    regions = watershed(-s, markers, mask=mask)
    yy, xx = np.nonzero(regions)
    label = regions[yy, xx]
    n = len(peaks) + 1
    w, t = s[yy, xx], np.clip(tau[yy, xx], 0, None)
    count = np.bincount(label, minlength=n).astype(np.float64)
    peak = np.zeros(n)
    np.maximum.at(peak, label, w)
    top = np.where(w >= 0.7 * peak[label], w, 0.0)
    weight = np.bincount(label, top, n) + 1e-30
    cy = np.bincount(label, top * yy, n) / weight
    cx = np.bincount(label, top * xx, n) / weight
    nm = pixel_m * 1e9
    rho2 = ((yy - cy[label]) ** 2 + (xx - cx[label]) ** 2) * nm**2
    y2 = t**2
    sx, sy = np.bincount(label, rho2, n), np.bincount(label, y2, n)
    sxx, sxy = np.bincount(label, rho2**2, n), np.bincount(label, rho2 * y2, n)
    syy = np.bincount(label, y2**2, n)
    safe = np.maximum(count, 1)
    var_x = sxx / safe - (sx / safe) ** 2
    cov = sxy / safe - sx * sy / safe**2
    var_y = syy / safe - (sy / safe) ** 2
    slope = -cov / np.maximum(var_x, 1e-12)
    r2 = cov**2 / np.maximum(var_x * var_y, 1e-30)
    area = count * nm**2
    radius = np.sqrt(area / math.pi)
    fill = np.bincount(label, t, n) * nm**2 / np.maximum(area * peak, 1e-30)
    keep = np.flatnonzero(count >= 4)
    keep = keep[keep > 0]
    features = np.column_stack(
        [
            0.5 * np.log(np.maximum(slope[keep], 1e-8)),
            np.log(peak[keep] / radius[keep]),
            np.log(radius[keep]),
            np.log(peak[keep]),
            fill[keep],
            r2[keep],
        ]
    )
    return Particles(np.column_stack([cx[keep], cy[keep]]), features)


def _peaks(s: np.ndarray, window: int) -> np.ndarray:
    """(row, col) of the maxima of ``s`` above `PEAK_MIN` (local maxima in a ``window``
    square) that rise `PEAK_PROMINENCE` above the lowest point on the straight path to every
    higher maximum nearby (a noisy plateau keeps its highest point only)."""
    candidates = np.argwhere((s == ndi.maximum_filter(s, size=window)) & (s > PEAK_MIN))
    if len(candidates) < 2:
        return candidates
    height = s[candidates[:, 0], candidates[:, 1]]
    order = np.argsort(-height, kind="stable")
    candidates, height = candidates[order], height[order]
    kept: list[int] = []
    samples = np.linspace(0.0, 1.0, 24)[:, None]
    for i in range(len(candidates)):
        if kept:
            others = candidates[kept]
            near = np.abs(others - candidates[i]).max(axis=1) < 8 * window
            for j in np.flatnonzero(near):
                path = np.rint(candidates[i] + samples * (others[j] - candidates[i])).astype(int)
                if height[i] - float(s[path[:, 0], path[:, 1]].min()) < PEAK_PROMINENCE:
                    break
            else:
                kept.append(i)
            continue
        kept.append(i)
    return candidates[kept]


class TargetModel(StrictModel):
    """Logistic model of P(zone axis | particle features): standardise with ``mean`` and
    ``scale``, then ``sigmoid(bias + weights . z)``; ``quadratic`` adds the squares of the
    standardised features (weights then hold 2 x len(FEATURE_NAMES) values)."""

    features: tuple[str, ...] = FEATURE_NAMES
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    quadratic: bool = False
    trained_on: str = ""

    def design(self, features: np.ndarray) -> np.ndarray:
        """Standardised (and squared) features (N, D)."""
        z = (np.asarray(features, dtype=np.float64) - np.array(self.mean)) / np.array(self.scale)
        return np.hstack([z, z**2]) if self.quadratic else z

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(zone axis) per particle (N,)."""
        if len(features) == 0:
            return np.zeros(0)
        logit = self.design(features) @ np.array(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))


def fit_target_model(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    quadratic: bool = False,
    l2: float = 1e-2,
    iterations: int = 200,
    trained_on: str = "",
) -> TargetModel:
    """Fit `TargetModel` by Newton's method on the L2-penalised logistic loss; ``labels``
    (N,) 1 for a zone-axis particle, 0 otherwise."""
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != labels.shape[0] or x.shape[1] != len(FEATURE_NAMES):
        raise ValueError(
            f"expected features (N, {len(FEATURE_NAMES)}) and labels (N,), got {x.shape}"
            f" and {labels.shape}"
        )
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    width = x.shape[1] * (2 if quadratic else 1)
    model = TargetModel(
        mean=tuple(mean), scale=tuple(scale), weights=(0.0,) * width, bias=0.0,
        quadratic=quadratic, trained_on=trained_on,
    )  # fmt: skip
    d = np.hstack([np.ones((len(x), 1)), model.design(x)])
    w = np.zeros(d.shape[1])
    penalty = l2 * len(x) * np.eye(d.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(d @ w, -30, 30)))
        gradient = d.T @ (p - labels) + penalty @ w
        hessian = (d * (p * (1 - p))[:, None]).T @ d + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return model.model_copy(update={"bias": float(w[0]), "weights": tuple(float(v) for v in w[1:])})


__all__ = [
    "FEATURE_NAMES",
    "Particles",
    "TargetModel",
    "find_particles",
    "fit_target_model",
    "thickness_map",
]
