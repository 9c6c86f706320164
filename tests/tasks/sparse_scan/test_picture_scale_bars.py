"""Sparse-scan figures carry a scale bar drawn to the image's pixel size and a colour bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emauto.io.pictures import drawn_scale_bars
from emauto.tasks.sparse_scan.pictures import (
    image_figure,
    reconstructions_figure,
    save_image_png,
    save_reconstructions,
)

PIXEL_M = 8e-9 / 64  # a benchmark image: 8 nm over 64 pixels


@pytest.fixture
def image() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64]
    return np.sin(x / 3.0) * np.cos(y / 4.0) + 2.0


def test_reconstructions_have_scale_bars_of_the_pixel_size(image: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    panels = [("random", image * 0.9), ("grid", image * 1.1)]
    fig = reconstructions_figure(image, panels, "srtio3, coverage 0.1", PIXEL_M)
    try:
        bars = drawn_scale_bars(fig)
        assert len(bars) == 3  # the truth and both reconstructions
        for _, bar in bars:
            assert bar.unit == "nm"
            assert bar.image_pixels * PIXEL_M == pytest.approx(bar.length_si, rel=1e-6)
        labels = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert labels == ["normalised intensity"]
    finally:
        plt.close(fig)


def test_image_without_a_pixel_size_says_so(image: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    fig = image_figure(image, "scan", None)
    try:
        ((ax, bar),) = drawn_scale_bars(fig)
        assert (bar.unit, bar.image_pixels) == ("px", pytest.approx(bar.value))
        assert "pixel size unknown" in ax.get_title()
    finally:
        plt.close(fig)
    fig = image_figure(image, "scan", 0.5e-9)
    try:
        ((_, bar),) = drawn_scale_bars(fig)
        assert bar.image_pixels * 0.5e-9 == pytest.approx(bar.length_si)
        assert [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"] == ["counts"]
    finally:
        plt.close(fig)


def test_the_files_are_written(image: np.ndarray, tmp_path: Path) -> None:
    assert save_image_png(image, tmp_path / "a.png", "scan", PIXEL_M).stat().st_size > 0
    paths = save_reconstructions(
        {"random": {"x.npy": image}}, {"x.npy": image}, tmp_path / "r", 0.2, {"x.npy": PIXEL_M}
    )
    assert [p.name for p in paths] == ["sparse_scan_x.png"]
