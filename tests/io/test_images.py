"""Image files: .npy, .tif, .png and .emd written here and read back; bad files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emauto.errors import ImageFileError
from emauto.io.images import read_image


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).random((24, 40)).astype(np.float32)


def test_npy(tmp_path: Path, image: np.ndarray) -> None:
    np.save(tmp_path / "a.npy", image)
    assert np.array_equal(read_image(tmp_path / "a.npy"), image)
    np.save(tmp_path / "b.npy", image[None])  # a singleton axis is dropped
    assert read_image(tmp_path / "b.npy").shape == (24, 40)


def test_tif(tmp_path: Path, image: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", image)
    assert np.array_equal(read_image(tmp_path / "a.tif"), image)


def test_png(tmp_path: Path, image: np.ndarray) -> None:
    from PIL import Image

    pixels = (image * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), pixels)


def test_emd_through_rosettasciio(tmp_path: Path, image: np.ndarray) -> None:
    from rsciio.emd import file_writer

    axes = [
        {"size": n, "name": name, "scale": 1e-10, "offset": 0.0, "units": "m", "navigate": False}
        for n, name in zip(image.shape, ("y", "x"), strict=True)
    ]
    file_writer(
        str(tmp_path / "a.emd"),
        {
            "data": image,
            "axes": axes,
            "metadata": {"General": {"title": "test"}, "Signal": {"signal_type": ""}},
            "original_metadata": {},
        },
    )
    assert np.allclose(read_image(tmp_path / "a.emd"), image)


def test_dm3_that_is_not_one_gives_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.dm3").write_bytes(b"\x00\x00\x00\x03garbage" * 4)
    with pytest.raises(ImageFileError, match=r"a\.dm3: cannot read it as a \.dm3 image"):
        read_image(tmp_path / "a.dm3")


def test_bad_files(tmp_path: Path, image: np.ndarray) -> None:
    with pytest.raises(ImageFileError, match="no such file"):
        read_image(tmp_path / "missing.npy")
    (tmp_path / "a.txt").write_text("1 2 3")
    with pytest.raises(ImageFileError, match=r"unknown image format '\.txt'"):
        read_image(tmp_path / "a.txt")
    np.save(tmp_path / "cube.npy", np.zeros((3, 16, 16)))
    with pytest.raises(
        ImageFileError, match=r"expected a 2-D image, got an array of shape \(3, 16, 16\)"
    ):
        read_image(tmp_path / "cube.npy")
    (tmp_path / "broken.npy").write_bytes(b"garbage")
    with pytest.raises(ImageFileError, match=r"cannot read it as a \.npy image"):
        read_image(tmp_path / "broken.npy")
    np.save(tmp_path / "nan.npy", np.full((16, 16), np.nan))
    with pytest.raises(ImageFileError, match="NaN"):
        read_image(tmp_path / "nan.npy")
