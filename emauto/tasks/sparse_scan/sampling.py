"""Simulate a sparse scan on any image: sample its pixels with Poisson noise at a dose.

Images are normalised to [0, 1] (min-max) first; that normalised image is the ground truth
every error is measured against. The dose ``dose_e`` is the number of electrons the
detector counts at a position of normalised intensity 1 (the brightest pixel); a position of
intensity ``v`` counts ``Poisson(dose_e * v)`` electrons, and the sample is
``counts / dose_e``. ``dose_e=None`` samples the image without noise (infinite dose).
"""

from __future__ import annotations

import math

import numpy as np

from emauto.errors import ConfigError
from emauto.tasks.sparse_scan.strategies import ScanPlan

__all__ = ["check_dose", "normalise", "sample_image", "sparse_image"]


def normalise(image: np.ndarray) -> np.ndarray:
    """``image`` as float64 min-max scaled to [0, 1]; a 2-D finite, non-constant image."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ConfigError(f"expected a 2-D image, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ConfigError("the image has NaN or infinite pixels")
    low, high = float(array.min()), float(array.max())
    if not high > low:
        raise ConfigError(f"the image is constant ({low:g}); nothing to reconstruct")
    return (array - low) / (high - low)


def check_dose(dose_e: float | None) -> float | None:
    """``dose_e`` (electrons at full intensity per position) as a positive float, or None."""
    if dose_e is None:
        return None
    value = float(dose_e)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"dose must be a positive number of electrons per position, got {dose_e!r}"
        )
    return value


def sample_image(
    truth: np.ndarray, pixels: np.ndarray, dose_e: float | None, rng: np.random.Generator
) -> np.ndarray:
    """Measured values (N,) at ``pixels`` ``(row, col)`` of the normalised ``truth``."""
    values = truth[pixels[:, 0], pixels[:, 1]]
    dose = check_dose(dose_e)
    if dose is None:
        return values.astype(np.float64)
    return rng.poisson(np.clip(values, 0, None) * dose).astype(np.float64) / dose


def sparse_image(
    plan: ScanPlan, truth: np.ndarray, dose_e: float | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(values, mask)``: a ``plan.shape`` array holding the samples (0 elsewhere) and the
    boolean mask of sampled pixels."""
    if truth.shape != plan.shape:
        raise ConfigError(f"plan shape {plan.shape} does not match image shape {truth.shape}")
    values = np.zeros(plan.shape, dtype=np.float64)
    values[plan.pixels[:, 0], plan.pixels[:, 1]] = sample_image(
        truth, plan.pixels, dose_e, np.random.default_rng(seed)
    )
    return values, plan.mask()
