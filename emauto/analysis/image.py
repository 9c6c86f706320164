"""Validation of analysis inputs: a finite, 2-D, non-constant image."""

from __future__ import annotations

from typing import Any

import numpy as np

from emauto.errors import AnalysisError

#: The smallest image side the analysis accepts (pixels).
MIN_SIDE = 16


def as_image(data: Any, what: str = "image") -> np.ndarray:
    """``data`` as a float64 2-D array ``[y, x]``; raises `AnalysisError` if it is not one."""
    try:
        array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(
            f"{what}: expected a 2-D numeric array, got {type(data).__name__}"
        ) from exc
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise AnalysisError(f"{what}: expected a 2-D array [y, x], got shape {array.shape}")
    if min(array.shape) < MIN_SIDE:
        raise AnalysisError(
            f"{what}: expected at least {MIN_SIDE}x{MIN_SIDE} pixels, got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise AnalysisError(f"{what}: expected finite values, found NaN or inf")
    if float(np.ptp(array)) == 0.0:
        raise AnalysisError(
            f"{what}: expected an image with contrast, got a constant {float(array.flat[0]):g}"
        )
    return array
