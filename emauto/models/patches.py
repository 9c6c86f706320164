"""Labelled image patches from the survey twin, for the patch classifiers.

A patch is a ``PATCH_PX`` square raster at ``PATCH_PIXEL_M`` taken through the Microscope
contract (`SurveyMicroscope`: stage to the patch centre, field of view, acquire), labelled
with the class at its centre from the field's ground truth (`SurveyField.labels_at`).
Classes are balanced: centres are drawn per class (inside particles for the particle
classes, on the twin boundary for ``defect``; ``zone_axis`` patches come from untwinned
particles only, so that no twin boundary crosses them). Dwell times are drawn from ``dwell_range_s``
so that the classifier sees a range of doses.

`to_features` turns raw counts into what the networks read: the scattered fraction per
pixel (counts / electrons per pixel, from the frame's dose) on a log scale.

`lattice_features` measures what the CNN embedding separates worst, a zone-axis lattice
against a twin boundary through it: the lattice fringes (spacings ``LATTICE_SPACING_M``)
are isolated in the power spectrum with the counting-noise floor removed; a twin
boundary adds the mirrored fringe directions (a broader angular spectrum) and makes the
two sides of the patch differ (sub-windows and half-patches with different spectra).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from emauto.drivers.sim.survey import (
    CLASSES,
    RANDOM,
    TWINNED,
    ZONE_AXIS,
    SurveyConfig,
    SurveyField,
    SurveyMicroscope,
)
from emauto.errors import AnalysisError
from emauto.microscope import Frame, ImageRequest, RasterScan

PATCH_PX = 32
PATCH_PIXEL_M = 0.075e-9
#: Fringe spacings (m) the lattice features look at: Au {111} 0.236 nm and {002} 0.204 nm
#: with margin, all above the 0.15 nm Nyquist spacing of `PATCH_PIXEL_M`.
LATTICE_SPACING_M = (0.18e-9, 0.30e-9)
#: Columns of `lattice_features` (all dimensionless).
LATTICE_FEATURE_NAMES = (
    "angular_entropy_12",  # entropy (nats) of the fringe power over 12 directions
    *(f"angular_share_12_{i}" for i in range(6)),  # the 6 largest shares, 12 directions
    "angular_entropy_24",
    *(f"angular_share_24_{i}" for i in range(6)),
    "log_fringe_snr",  # ln(fringe power / counting-noise power)
    "window_similarity_min",  # cosine similarity of 16x16 sub-window direction spectra
    "window_similarity_mean",
    "half_similarity_min",  # the same between the two halves split by 8 lines through the centre
    "half_similarity_mean",
    "mean",  # of the features (log10 scattered fraction + 2)
    "std",
    "p10",
    "p90",
)


def to_features(counts: np.ndarray, electrons_per_pixel: float) -> np.ndarray:
    """float32 ``log10(fraction + 1e-3) + 2`` of raw counts; any leading shape is kept."""
    fraction = np.clip(np.asarray(counts, dtype=np.float64) / electrons_per_pixel, 0, None)
    return (np.log10(fraction + 1e-3) + 2.0).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _spectrum_geometry(
    w: int, directions: int, pixel_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Taper (w, w), ring and beyond-lattice masks (w*w,), and the ring's direction one-hot
    matrix (ring pixels, directions) of a ``w`` square window."""
    taper = np.outer(np.hanning(w), np.hanning(w))
    fy, fx = np.fft.fftfreq(w)[:, None], np.fft.fftfreq(w)[None]
    radius = np.hypot(fx, fy).ravel()  # cycles per pixel
    angle = np.mod(np.arctan2(fy, fx), np.pi).ravel()
    low, high = pixel_m / LATTICE_SPACING_M[1], pixel_m / LATTICE_SPACING_M[0]
    ring = (radius > low) & (radius < high)
    beyond = radius >= 0.45  # no lattice there: white counting noise only
    bins = np.minimum((angle[ring] / np.pi * directions).astype(int), directions - 1)
    onehot = np.zeros((int(ring.sum()), directions))
    onehot[np.arange(len(bins)), bins] = 1.0
    return taper, ring, beyond, onehot


def _fringe_power(lattice: np.ndarray, pixel_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Power in the lattice ring (..., ring pixels) of square windows (..., w, w), with the
    counting-noise floor (the median power beyond the lattice, ...) removed, and that floor."""
    w = lattice.shape[-1]
    taper, ring, beyond, _ = _spectrum_geometry(w, 1, pixel_m)
    centred = lattice - lattice.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fft2(centred * taper)) ** 2
    power = power.reshape(*power.shape[:-2], w * w)
    noise = np.median(power[..., beyond], axis=-1)
    return np.clip(power[..., ring] - noise[..., None], 0, None), noise


def _direction_spectrum(
    lattice: np.ndarray, directions: int, pixel_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fringe power (..., directions) over [0, pi) of square windows (..., w, w), counting-
    noise floor removed, and that floor per frequency bin (...)."""
    fringe, noise = _fringe_power(lattice, pixel_m)
    return fringe @ _spectrum_geometry(lattice.shape[-1], directions, pixel_m)[3], noise


@functools.lru_cache(maxsize=1)
def _half_masks() -> np.ndarray:
    """(8, 32, 32) one side of 8 lines through the patch centre, 22.5 degrees apart."""
    yy, xx = np.mgrid[0:PATCH_PX, 0:PATCH_PX] - (PATCH_PX - 1) / 2
    angles = np.arange(8) * np.pi / 8
    return np.stack([(-np.sin(a) * xx + np.cos(a) * yy) > 0 for a in angles])


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=-1) + 1e-12
    nb = np.linalg.norm(b, axis=-1) + 1e-12
    return (a * b).sum(-1) / (na * nb)


def lattice_features(features: np.ndarray, pixel_m: float = PATCH_PIXEL_M) -> np.ndarray:
    """(N, len(LATTICE_FEATURE_NAMES)) float32 lattice and intensity statistics of patch
    features (N, 32, 32) with pixels of ``pixel_m`` (m); see the module doc."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (PATCH_PX, PATCH_PX):
        raise AnalysisError(f"expected patches (N, {PATCH_PX}, {PATCH_PX}), got {x.shape}")
    if not pixel_m > 0:
        raise AnalysisError(f"pixel_m: expected > 0 m, got {pixel_m}")
    block = 256  # bounded memory: the half-patch spectra are 16 FFTs a patch
    return np.concatenate(
        [_lattice_block(x[i : i + block], pixel_m) for i in range(0, len(x), block)]
        or [np.zeros((0, len(LATTICE_FEATURE_NAMES)), dtype=np.float32)]
    )


def _lattice_block(x: np.ndarray, pixel_m: float) -> np.ndarray:
    n = len(x)
    lattice = x - gaussian_filter(x, (0, 2, 2))  # fringes (~3 px) without the particle shape
    columns: list[np.ndarray] = []
    fringe, noise = _fringe_power(lattice, pixel_m)  # one FFT, binned twice
    for directions in (12, 24):
        spectrum = fringe @ _spectrum_geometry(PATCH_PX, directions, pixel_m)[3]
        total = spectrum.sum(1) + 1e-12
        share = spectrum / total[:, None]
        columns.append(-(share * np.log(share + 1e-12)).sum(1))
        columns.extend(np.sort(share, axis=1)[:, ::-1][:, :6].T)
    columns.append(np.log(total / (noise + 1e-12) + 1e-3))
    half = PATCH_PX // 2
    starts = (0, half // 2, half)
    windows = np.stack([lattice[:, i : i + half, j : j + half] for i in starts for j in starts], 1)
    spectra, _ = _direction_spectrum(windows, 12, pixel_m)  # (N, 9, 12)
    i, j = np.triu_indices(spectra.shape[1], 1)
    pairs = _cosine(spectra[:, i], spectra[:, j])
    columns += [pairs.min(1), pairs.mean(1)]
    sides = _half_masks()
    both, _ = _direction_spectrum(
        np.concatenate([lattice[:, None] * sides, lattice[:, None] * ~sides], 1), 12, pixel_m
    )
    halves = _cosine(both[:, :8], both[:, 8:])  # (N, 8)
    columns += [halves.min(1), halves.mean(1)]
    flat = x.reshape(n, -1)
    columns += [flat.mean(1), flat.std(1), *np.percentile(flat, [10, 90], axis=1)]
    return np.column_stack(columns).astype(np.float32)


def frame_features(frame: Frame) -> np.ndarray:
    """`to_features` of a raster frame, with the electrons per pixel from its dose."""
    return to_features(frame.data, frame.dose_e / frame.data.size)


def _candidates(field: SurveyField, label: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random points (n, 2) likely to carry ``label`` (checked by the caller)."""
    half = field.config.field_m / 2 - 2e-9
    name = CLASSES[label]
    if name in ("particle", "zone_axis", "defect"):
        if name == "particle":
            pool = np.flatnonzero(field.kinds == RANDOM)
        elif name == "zone_axis":  # untwinned: a twin boundary nearby would be ambiguous
            pool = np.flatnonzero(field.kinds == ZONE_AXIS)
        else:
            pool = np.flatnonzero(field.kinds == TWINNED)
        if len(pool) == 0:
            return np.zeros((0, 2))
        chosen = pool[rng.integers(len(pool), size=n)]
        r = field.radii_m[chosen, None]
        if name == "defect":
            a = field.twin_angle_rad[chosen]
            along = rng.uniform(-0.7, 0.7, size=n) * r[:, 0]
            normal_offset = field.twin_offset_m[chosen] + rng.uniform(-0.3e-9, 0.3e-9, size=n)
            direction = np.stack([np.cos(a), np.sin(a)], axis=1)
            normal = np.stack([-np.sin(a), np.cos(a)], axis=1)
            return (
                field.centres_m[chosen]
                + along[:, None] * direction
                + normal_offset[:, None] * normal
            )
        angle = rng.uniform(0, 2 * math.pi, size=n)
        rho = 0.8 * r[:, 0] * np.sqrt(rng.uniform(size=n))
        return field.centres_m[chosen] + np.stack([rho * np.cos(angle), rho * np.sin(angle)], 1)
    if name == "contamination" and len(field.contamination_m):
        c = field.contamination_m[rng.integers(len(field.contamination_m), size=n)]
        angle = rng.uniform(0, 2 * math.pi, size=n)
        rho = 0.7 * c[:, 2] * np.sqrt(rng.uniform(size=n))
        return c[:, :2] + np.stack([rho * np.cos(angle), rho * np.sin(angle)], 1)
    if name == "vacuum" and len(field.holes_m):
        h = field.holes_m[rng.integers(len(field.holes_m), size=n)]
        angle = rng.uniform(0, 2 * math.pi, size=n)
        rho = 0.95 * h[:, 2] * np.sqrt(rng.uniform(size=n))
        points = h[:, :2] + np.stack([rho * np.cos(angle), rho * np.sin(angle)], 1)
        return np.clip(points, -half, half)
    return rng.uniform(-half, half, size=(n, 2))


def sample_patch_centres(
    field: SurveyField, per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` centres (m) per class whose ground-truth label is that class."""
    centres, labels = [], []
    half = field.config.field_m / 2 - PATCH_PX * PATCH_PIXEL_M
    for label in range(len(CLASSES)):
        found = np.zeros((0, 2))
        for _round in range(20):
            points = _candidates(field, label, 4 * per_class, rng)
            points = points[np.all(np.abs(points) <= half, axis=1)]
            points = points[field.labels_at(points) == label]
            found = np.concatenate([found, points])[:per_class]
            if len(found) >= per_class:
                break
        centres.append(found)
        labels.append(np.full(len(found), label))
    return np.concatenate(centres), np.concatenate(labels)


def acquire_patches(
    scope: SurveyMicroscope, centres_m: np.ndarray, dwells_s: np.ndarray
) -> np.ndarray:
    """Patch features (N, PATCH_PX, PATCH_PX) acquired at ``centres_m`` through the contract."""
    out = np.zeros((len(centres_m), PATCH_PX, PATCH_PX), dtype=np.float32)
    scope.set({"scan_fov": PATCH_PX * PATCH_PIXEL_M})
    request = {float(d): ImageRequest(scan=RasterScan(shape=(PATCH_PX, PATCH_PX)), dwell_s=float(d))
               for d in np.unique(dwells_s)}  # fmt: skip
    for i, ((x, y), dwell) in enumerate(zip(centres_m, dwells_s, strict=True)):
        scope.set({"stage_x": float(x), "stage_y": float(y)})
        out[i] = frame_features(scope.acquire(request[float(dwell)]))
    return out


def make_patch_dataset(
    seeds: Sequence[int],
    per_class: int,
    *,
    dwell_range_s: tuple[float, float] = (1e-6, 8e-6),
    sample_seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (N, 32, 32), labels (N,) and field seeds (N,) from survey fields ``seeds``."""
    rng = np.random.default_rng(sample_seed)
    xs, ys, ss = [], [], []
    for seed in tqdm(seeds, desc="patches", disable=not progress):
        scope = SurveyMicroscope(SurveyConfig(seed=int(seed)))
        centres, labels = sample_patch_centres(scope.field, per_class, rng)
        low, high = np.log(dwell_range_s[0]), np.log(dwell_range_s[1])
        dwells = np.round(np.exp(rng.uniform(low, high, size=len(centres))), 7)
        xs.append(acquire_patches(scope, centres, dwells))
        ys.append(labels)
        ss.append(np.full(len(labels), seed))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ss)
