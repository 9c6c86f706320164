"""Smooth synthetic images for the sparse-scan tests."""

from __future__ import annotations

import numpy as np
import pytest


def smooth(shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A smooth image in [0, 1]: a few long-wavelength waves and a Gaussian blob."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    image = (
        0.4 * np.sin(2 * np.pi * 1.1 * x + 0.3) * np.cos(2 * np.pi * 0.8 * y)
        + 0.3 * np.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) / 0.05)
        + 0.2 * y
    )
    return (image - image.min()) / np.ptp(image)


@pytest.fixture
def smooth_image() -> np.ndarray:
    return smooth()
