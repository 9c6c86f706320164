"""A frame series registered against its first frame (drift), averaged, then analysed.

Each frame's shift against the first is measured by phase correlation (`measure_drift`,
sub-pixel), the frame is shifted back in Fourier space, and the frames are averaged over the
region every frame covers (the border the largest shift exposes is cropped). The average
has the dose of all frames, so the analysis sees columns a single frame does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from emauto.analysis.analyze import AnalysisResult, analyze_image
from emauto.analysis.drift import measure_drift
from emauto.analysis.image import MIN_SIDE, as_image
from emauto.errors import AnalysisError


@dataclass(frozen=True)
class Registered:
    """The average (cropped ``[y, x]``), each frame's (dx, dy) shift against the first with its
    standard error (px), and the crop's top-left corner (x, y) in the first frame's pixels."""

    average: np.ndarray
    shifts_px: list[tuple[float, float]]
    shift_sigma_px: list[float]
    origin_px: tuple[int, int]


def register_series(frames: Sequence[np.ndarray], *, upsample: int = 20) -> Registered:
    """Register ``frames`` (same shape) on the first and average them (module doc)."""
    if len(frames) < 2:
        raise AnalysisError(f"series: expected at least 2 frames, got {len(frames)}")
    first = as_image(frames[0], "frame 0")
    shifts: list[tuple[float, float]] = [(0.0, 0.0)]
    sigmas: list[float] = [0.0]
    total = first.copy()
    for index, frame in enumerate(frames[1:], start=1):
        data = as_image(frame, f"frame {index}")
        if data.shape != first.shape:
            raise AnalysisError(
                f"series: frame {index} has shape {data.shape}, expected {first.shape}"
            )
        drift = measure_drift(first, data, upsample=upsample)
        dx, dy = drift.shift_px
        back = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(data), (-dy, -dx))).real
        total += back
        shifts.append((dx, dy))
        sigmas.append(drift.sigma_px)
    margin_x = math.ceil(max(abs(s[0]) for s in shifts)) + 1
    margin_y = math.ceil(max(abs(s[1]) for s in shifts)) + 1
    ny, nx = first.shape
    if nx - 2 * margin_x < MIN_SIDE or ny - 2 * margin_y < MIN_SIDE:
        raise AnalysisError(
            f"series: the frames drift by up to ({margin_x}, {margin_y}) px, leaving less than "
            f"{MIN_SIDE} px in common"
        )
    average = total[margin_y : ny - margin_y, margin_x : nx - margin_x] / len(frames)
    return Registered(average, shifts, sigmas, (margin_x, margin_y))


def analyze_series(
    frames: Sequence[np.ndarray], *, pixel_m: float | None = None
) -> tuple[AnalysisResult, Registered]:
    """Register, average and analyse ``frames``; positions in the result are in the first
    frame's pixels (the crop's origin added back), drift is each frame's shift."""
    registered = register_series(frames)
    result = analyze_image(registered.average, pixel_m=pixel_m)
    ox, oy = registered.origin_px
    result.atoms_xy_px = [[round(x + ox, 3), round(y + oy, 3)] for x, y in result.atoms_xy_px]
    result.missing_xy_px = [[round(x + ox, 3), round(y + oy, 3)] for x, y in result.missing_xy_px]
    result.drift = {
        "series_shifts_px": [list(s) for s in registered.shifts_px],
        "series_shift_sigma_px": registered.shift_sigma_px,
        "frames": len(frames),
    }
    result.notes.append(
        f"{len(frames)} frames registered on the first and averaged; "
        f"{registered.origin_px[0]} px x and {registered.origin_px[1]} px y cropped at each side"
    )
    return result, registered
