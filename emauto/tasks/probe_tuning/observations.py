"""Ronchigram frames -> the uint8 images policies and estimators see.

The image is made contrast-robust in two steps (issue 21):

1. **background subtraction**: the camera pixels beyond ``BACKGROUND_RADIUS`` x the aperture
   semi-angle receive no bright-field electrons, so their median is the frame's flat
   background: the detector's dark offset plus diffuse scattering spread over the camera.
   It is subtracted before scaling, so a Ronchigram whose modulation sits on a large flat
   background (lost contrast) or on a dark offset keeps its full grey-level range;
2. **percentile scaling**: the ``SCALE_PERCENTILE`` of the remaining counts maps to 255, so
   the image does not depend on the dose.

On the twin's own frames (background about 0.1 counts of about 390 in the disc) the first
step changes nothing the estimator was trained on.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from emauto.microscope import Frame

#: The observation maps this percentile of the frame's counts to 255.
SCALE_PERCENTILE = 99.5
#: Pixels beyond this x the aperture semi-angle are background (room for an aperture up to
#: a tenth of its radius off-centre and a blurred edge).
BACKGROUND_RADIUS = 1.2
#: Fewer background pixels than this: no background is subtracted (the camera sees only
#: the disc).
MIN_BACKGROUND_PIXELS = 64


def ronchigram_image(
    counts: np.ndarray, size: int, crop_px: int | None = None, background: float = 0.0
) -> np.ndarray:
    """A camera frame (ny, nx) -> uint8 (1, size, size), channels first.

    ``background`` (counts) is subtracted first (`background_counts`). ``crop_px`` keeps the
    centred ``crop_px`` square (the probe-forming aperture; the camera usually sees beyond
    it). Binned by block means when ``size`` divides the frame (else linear zoom), then
    scaled so the ``SCALE_PERCENTILE`` of the counts is 255: dose-independent contrast.
    """
    frame = np.asarray(counts, dtype=np.float32)
    if frame.ndim != 2:
        raise ValueError(f"expected a 2-D camera frame, got shape {frame.shape}")
    if not math.isfinite(background):
        raise ValueError(f"background must be finite, got {background}")
    if background:
        frame = frame - np.float32(background)
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


def _angles_rad(frame: Frame) -> tuple[np.ndarray, np.ndarray] | None:
    """Each pixel's (theta_y, theta_x) from the frame's angular calibrations (rad)."""
    calibrations = [c for c in frame.calibrations if c.units == "rad" and c.scale > 0]
    data = np.asarray(frame.data)
    if len(calibrations) != 2 or data.ndim != 2:
        return None
    cal_y, cal_x = calibrations
    theta_y = cal_y.offset + cal_y.scale * np.arange(data.shape[0])
    theta_x = cal_x.offset + cal_x.scale * np.arange(data.shape[1])
    return theta_y[:, None], theta_x[None, :]


def background_counts(frame: Frame, aperture_rad: float) -> float:
    """The frame's flat background (counts): the median beyond ``BACKGROUND_RADIUS`` x the
    aperture semi-angle (rad); 0 without an angular calibration or enough such pixels."""
    angles = _angles_rad(frame)
    if angles is None:
        return 0.0
    theta_y, theta_x = angles
    outside = np.hypot(theta_y, theta_x) > BACKGROUND_RADIUS * aperture_rad
    if int(outside.sum()) < MIN_BACKGROUND_PIXELS:
        return 0.0
    return float(np.median(np.asarray(frame.data, dtype=np.float64)[outside]))


def aperture_crop_px(frame: Frame, aperture_rad: float, margin: float) -> int | None:
    """Side (px, even) of the square covering ``margin x`` the aperture semi-angle (rad).

    None when the frame has no angular calibration (rad) to size it by.
    """
    scales = [c.scale for c in frame.calibrations if c.units == "rad" and c.scale > 0]
    if not scales:
        return None
    side = 2 * math.ceil(margin * aperture_rad / max(scales))
    return max(side, 2)
