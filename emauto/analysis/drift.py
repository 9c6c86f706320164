"""Drift between consecutive frames by phase correlation (`skimage.registration`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emauto.analysis.image import as_image
from emauto.errors import AnalysisError


@dataclass(frozen=True)
class Drift:
    """Shift of ``moving`` against ``reference``: (dx, dy) pixels; rate when dt is known."""

    shift_px: tuple[float, float]
    error: float
    velocity_m_per_s: tuple[float, float] | None = None
    #: standard error of each shift component (px): the upsampled grid's step / sqrt(12)
    #: (a floor; phase correlation of a clean pair is that good), grown by the normalised
    #: registration error ``error`` in [0, 1] as a fraction of a pixel
    sigma_px: float = 0.0


def measure_drift(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    pixel_m: float | None = None,
    dt_s: float | None = None,
    upsample: int = 20,
) -> Drift:
    """How far the specimen moved from ``reference`` to ``moving`` (same shape), in pixels.

    A feature at (x, y) in ``reference`` is at (x + dx, y + dy) in ``moving``. With
    ``pixel_m`` (m) and ``dt_s`` (s, between the frames) the drift velocity is returned too.
    """
    from skimage.registration import phase_cross_correlation

    ref = as_image(reference, "reference")
    mov = as_image(moving, "moving")
    if ref.shape != mov.shape:
        raise AnalysisError(
            f"drift: expected two frames of one shape, got {ref.shape} and {mov.shape}"
        )
    shift, error, _ = phase_cross_correlation(
        ref, mov, upsample_factor=upsample, normalization=None
    )
    dy, dx = (-float(s) for s in shift)
    velocity = None
    if pixel_m is not None and dt_s is not None and dt_s > 0:
        velocity = (dx * pixel_m / dt_s, dy * pixel_m / dt_s)
    sigma = math.hypot(1 / (upsample * math.sqrt(12)), float(error))
    return Drift(shift_px=(dx, dy), error=float(error), velocity_m_per_s=velocity, sigma_px=sigma)
