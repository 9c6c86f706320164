"""Ronchigram frames -> the uint8 images policies and estimators see."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from emauto.microscope import Frame

#: The observation maps this percentile of the frame's counts to 255.
SCALE_PERCENTILE = 99.5


def ronchigram_image(counts: np.ndarray, size: int, crop_px: int | None = None) -> np.ndarray:
    """A camera frame (ny, nx) -> uint8 (1, size, size), channels first.

    ``crop_px`` keeps the centred ``crop_px`` square first (the probe-forming aperture; the
    camera usually sees beyond it). Binned by block means when ``size`` divides the frame
    (else linear zoom), then scaled so the ``SCALE_PERCENTILE`` of the counts is 255:
    dose-independent contrast.
    """
    frame = np.asarray(counts, dtype=np.float32)
    if frame.ndim != 2:
        raise ValueError(f"expected a 2-D camera frame, got shape {frame.shape}")
    if crop_px is not None and crop_px < min(frame.shape):
        top, left = (frame.shape[0] - crop_px) // 2, (frame.shape[1] - crop_px) // 2
        frame = frame[top : top + crop_px, left : left + crop_px]
    ny, nx = frame.shape
    if ny % size == 0 and nx % size == 0:
        frame = frame.reshape(size, ny // size, size, nx // size).mean(axis=(1, 3))
    else:
        frame = ndimage.zoom(frame, (size / ny, size / nx), order=1)[:size, :size]
    top_value = float(np.percentile(frame, SCALE_PERCENTILE))
    scaled = frame * (255.0 / top_value) if top_value > 0 else np.zeros_like(frame)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)[None]


def aperture_crop_px(frame: Frame, aperture_rad: float, margin: float) -> int | None:
    """Side (px, even) of the square covering ``margin x`` the aperture semi-angle (rad).

    None when the frame has no angular calibration (rad) to size it by.
    """
    scales = [c.scale for c in frame.calibrations if c.units == "rad" and c.scale > 0]
    if not scales:
        return None
    side = 2 * math.ceil(margin * aperture_rad / max(scales))
    return max(side, 2)
