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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
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
from emauto.microscope import Frame, ImageRequest, RasterScan

PATCH_PX = 32
PATCH_PIXEL_M = 0.075e-9


def to_features(counts: np.ndarray, electrons_per_pixel: float) -> np.ndarray:
    """float32 ``log10(fraction + 1e-3) + 2`` of raw counts; any leading shape is kept."""
    fraction = np.clip(np.asarray(counts, dtype=np.float64) / electrons_per_pixel, 0, None)
    return (np.log10(fraction + 1e-3) + 2.0).astype(np.float32)


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
