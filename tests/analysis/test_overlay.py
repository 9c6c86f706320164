"""The `emauto analyze` overlay PNG: a scale bar drawn to the pixel size (nm / pm), pixels
when the pixel size is unknown, and a colour bar beside the image."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emauto.analysis.overlay import COLOUR_BAR_WIDTH
from emauto.cli import main
from emauto.io.pictures import scale_bar_length


def lattice(shape: int = 96, spacing_px: float = 8.3) -> np.ndarray:
    """Gaussian columns on a square lattice with light noise."""
    y, x = np.mgrid[0:shape, 0:shape].astype(float)
    image = np.zeros((shape, shape))
    for cy in np.arange(2.0, shape, spacing_px):
        for cx in np.arange(3.0, shape, spacing_px):
            image += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 1.3**2))
    return image + np.random.default_rng(0).normal(0, 0.02, image.shape)


def bar_pixels(path: Path) -> int:
    """The drawn scale bar's length (picture pixels): the longest run of pure white pixels
    in the lower right corner of the image part (the bar sits on a black box there)."""
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    corner = pixels[-40:, :-COLOUR_BAR_WIDTH][:, -pixels.shape[0] // 2 :]
    white = np.all(corner == 255, axis=2)
    longest = 0
    for row in white:
        edges = np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))
        if edges.size:
            longest = max(longest, int(np.max(edges[1::2] - edges[::2])))
    return longest


def label(path: Path) -> str:
    """The scale bar's label as written in the PNG's text."""
    with Image.open(path) as picture:
        return str(picture.info["emauto:scale_bar"])


@pytest.mark.parametrize("pixel_m", [31.25e-12, 0.2e-9])
def test_overlay_scale_bar_matches_the_pixel_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pixel_m: float
) -> None:
    image = lattice()
    np.save(tmp_path / "frame.npy", image)
    args = ["analyze", str(tmp_path / "frame.npy"), "--json", "--pixel-size", str(pixel_m)]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    overlay = Path(out["overlay"])
    with Image.open(overlay) as picture:
        width = picture.width - COLOUR_BAR_WIDTH
    upscale = width // image.shape[1]
    expected = scale_bar_length(pixel_m, "m", image.shape[1])
    assert expected.unit in ("pm", "nm")
    drawn = bar_pixels(overlay)
    assert drawn == round(expected.pixels * upscale)
    # what a reader computes: the drawn length in image pixels times the true pixel size is
    # the bar's label (a wrong pixel size gives another label for a bar of the same pixels)
    value, unit = label(overlay).split()
    assert unit == expected.unit
    length_m = float(value) * {"pm": 1e-12, "nm": 1e-9}[unit]
    assert math.isclose(drawn / upscale * pixel_m, length_m, rel_tol=0.02)


def test_overlay_without_a_pixel_size_shows_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "frame.npy", lattice())
    assert main(["analyze", str(tmp_path / "frame.npy"), "--json"]) == 0
    overlay = Path(json.loads(capsys.readouterr().out)["overlay"])
    expected = scale_bar_length(1.0, "px", 96)
    assert bar_pixels(overlay) == round(expected.pixels * (512 // 96))
    assert label(overlay) == expected.label == "10 px"
    with Image.open(overlay) as picture:  # the colour bar: a grey ramp, white on top
        strip = np.asarray(picture.convert("L"))[:, -COLOUR_BAR_WIDTH + 8]
    ramp = strip[22:-22]
    assert ramp[0] > 240 and ramp[-1] < 15 and np.all(np.diff(ramp.astype(int)) <= 0)
