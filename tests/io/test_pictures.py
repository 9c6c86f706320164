"""Pictures carry a scale bar whose drawn length matches the frame's pixel size (mrad for a
Ronchigram, nm / pm for an image) and a colour bar; a wrong pixel size is caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import emauto
from emauto.io.pictures import (
    DrawnScaleBar,
    add_scale_bar,
    drawn_scale_bars,
    frame_figure,
    save_frame_png,
    scale_bar_length,
)
from emauto.microscope import Frame, ImageRequest, RasterScan, RonchigramRequest


def assert_bar_matches(bar: DrawnScaleBar, pixel_size: float) -> None:
    """The bar's drawn length (image pixels) times the true pixel size is its label."""
    assert bar.image_pixels * pixel_size == pytest.approx(bar.length_si, rel=1e-6), bar
    assert bar.label.endswith(bar.unit)


def colour_bar_labels(fig: Any) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


@pytest.fixture(scope="module")
def frames(tiny_sim_uri: str) -> dict[str, Frame]:
    scope = emauto.connect(tiny_sim_uri)
    try:
        ronchigram = scope.acquire(RonchigramRequest(exposure_s=0.01))
        scope.set({"scan_fov": 2e-9})
        image = scope.acquire(ImageRequest(detector="adf", scan=RasterScan(shape=(32, 32))))
    finally:
        scope.close()
    return {"ronchigram": ronchigram, "image": image}


def test_scale_bar_length_is_a_round_length_in_display_units() -> None:
    bar = scale_bar_length(0.05e-9, "m", 256)  # 12.8 nm wide: 2 nm is the longest <= 2.56
    assert (bar.value, bar.unit, bar.pixels, bar.label) == (2.0, "nm", pytest.approx(40), "2 nm")
    assert scale_bar_length(6.25e-11, "m", 32).label == "200 pm"  # a 2 nm field: pm
    assert scale_bar_length(0.9375e-3, "rad", 128).label == "20 mrad"  # 120 mrad wide
    assert scale_bar_length(1.0, "px", 100).label == "20 px"
    with pytest.raises(ValueError, match="pixel size"):
        scale_bar_length(0.0, "m", 10)
    with pytest.raises(ValueError, match="units"):
        scale_bar_length(1e-9, "inch", 10)


@pytest.mark.parametrize(
    ("kind", "unit", "axis_unit"), [("ronchigram", "mrad", "mrad"), ("image", "pm", "nm")]
)
def test_frame_picture_has_a_scale_bar_of_its_pixel_size(
    frames: dict[str, Frame], kind: str, unit: str, axis_unit: str
) -> None:
    import matplotlib.pyplot as plt

    frame = frames[kind]
    fig = frame_figure(frame)
    try:
        ((_, bar),) = drawn_scale_bars(fig)
        assert bar.unit == unit
        assert_bar_matches(bar, frame.calibrations[-1].scale)
        assert colour_bar_labels(fig) == ["counts"]
        assert f"({axis_unit})" in fig.axes[0].get_xlabel()
    finally:
        plt.close(fig)


def test_a_wrong_pixel_size_fails_the_check(frames: dict[str, Frame]) -> None:
    import matplotlib.pyplot as plt

    frame = frames["ronchigram"]
    fig, ax = plt.subplots()
    try:
        ax.imshow(frame.data)
        add_scale_bar(ax, frame.calibrations[-1].scale * 1.5, "rad")  # a wrong pixel size
        ((_, bar),) = drawn_scale_bars(fig)
        with pytest.raises(AssertionError):
            assert_bar_matches(bar, frame.calibrations[-1].scale)
    finally:
        plt.close(fig)


def rendered(fig: Any) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def test_the_rendered_bar_has_its_length_in_screen_pixels(frames: dict[str, Frame]) -> None:
    """Render with and without the scale bar: what changes holds a white bar as long, in
    screen pixels, as the labelled length over the frame's pixel size."""
    import matplotlib.pyplot as plt

    frame = frames["ronchigram"]
    fig = frame_figure(frame)
    try:
        ((ax, bar),) = drawn_scale_bars(fig)
        with_bar = rendered(fig)
        (artist,) = [a for a in ax.artists if a.get_label() != "<colorbar>"]
        artist.set_visible(False)
        without = rendered(fig)
    finally:
        plt.close(fig)
    changed = np.any(with_bar != without, axis=2)
    assert changed.any()
    white = np.all(with_bar > 250, axis=2) & changed
    longest = 0
    for row in white:
        edges = np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))
        if edges.size:
            longest = max(longest, int(np.max(edges[1::2] - edges[::2])))
    screen_per_pixel = ax.get_window_extent().width / frame.data.shape[1]
    expected = bar.length_si / frame.calibrations[-1].scale * screen_per_pixel
    assert abs(longest - expected) <= 2, (longest, expected)


def test_save_frame_png_writes_a_png(frames: dict[str, Frame], tmp_path: Path) -> None:
    from PIL import Image

    path = save_frame_png(frames["image"], tmp_path / "i.png")
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width > 300
