"""Image files: .npy, .tif, .png, .emd written here and read back with their pixel size; bad
files refused with a message that names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emauto.errors import AnalysisError, ImageFileError
from emauto.io.images import LoadedImage, load_image


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).random((24, 40)).astype(np.float32)


def test_npy(tmp_path: Path, image: np.ndarray) -> None:
    np.save(tmp_path / "a.npy", image)
    loaded = load_image(tmp_path / "a.npy")
    assert isinstance(loaded, LoadedImage)
    assert loaded.path == tmp_path / "a.npy"
    assert loaded.data.dtype == np.float64 and np.array_equal(loaded.data, image)
    assert loaded.pixel_m is None  # a bare array has no calibration
    np.save(tmp_path / "b.npy", image[None])  # a singleton axis is dropped
    assert load_image(str(tmp_path / "b.npy")).data.shape == (24, 40)


def test_tif(tmp_path: Path, image: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", image)
    loaded = load_image(tmp_path / "a.tif")
    assert np.array_equal(loaded.data, image)
    assert loaded.pixel_m is None
    tifffile.imwrite(tmp_path / "b.tiff", image.astype(np.float64))
    assert np.array_equal(load_image(tmp_path / "b.tiff").data, image)


def test_png(tmp_path: Path, image: np.ndarray) -> None:
    from PIL import Image

    pixels = (image * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    assert np.array_equal(loaded.data, pixels)
    assert loaded.pixel_m is None
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(tmp_path / "rgb.png")  # to grey
    assert load_image(tmp_path / "rgb.png").data.shape == (24, 40)


def test_emd_through_rosettasciio_with_its_pixel_size(tmp_path: Path, image: np.ndarray) -> None:
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
    loaded = load_image(tmp_path / "a.emd")
    assert np.allclose(loaded.data, image)
    assert loaded.pixel_m == pytest.approx(1e-10)


def test_ncem_emd_in_nm_with_its_pixel_size(tmp_path: Path, image: np.ndarray) -> None:
    """An NCEM EMD (HDF5) file, as rosettasciio reads it: stored [x, y], dims in nm."""
    import h5py

    ny, nx = image.shape
    with h5py.File(tmp_path / "a.emd", "w") as f:
        f.attrs["version_major"], f.attrs["version_minor"] = 0, 2
        group = f.create_group("data/image")
        group.attrs["emd_group_type"] = 1
        group.create_dataset("data", data=image.T)
        for name, axis, n in (("dim1", "x", nx), ("dim2", "y", ny)):
            dim = group.create_dataset(name, data=np.arange(n) * 0.05)
            dim.attrs["name"], dim.attrs["units"] = axis, "nm"
    loaded = load_image(tmp_path / "a.emd")
    assert np.allclose(loaded.data, image)
    assert loaded.pixel_m == pytest.approx(5e-11)


def test_dm3_that_is_not_one_gives_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.dm3").write_bytes(b"\x00\x00\x00\x03garbage" * 4)
    with pytest.raises(ImageFileError, match=r"a\.dm3: cannot read it as a \.dm3 image"):
        load_image(tmp_path / "a.dm3")
    (tmp_path / "junk.dm4").write_bytes(b"not a dm4 file at all")
    with pytest.raises(ImageFileError, match=r"cannot read it as a \.dm4 image"):
        load_image(tmp_path / "junk.dm4")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ImageFileError, match="no such file"):
        load_image(tmp_path / "missing.npy")
    with pytest.raises(ImageFileError, match="no such file"):
        load_image(tmp_path / "missing.emd")
    (tmp_path / "a.txt").write_text("1 2 3")
    with pytest.raises(ImageFileError, match=r"unknown image format '\.txt'"):
        load_image(tmp_path / "a.txt")
    with pytest.raises(ImageFileError, match=r"unknown image format '\.jpg'"):
        load_image(tmp_path / "a.jpg")
    np.save(tmp_path / "cube.npy", np.zeros((3, 16, 16)))
    with pytest.raises(
        ImageFileError, match=r"expected a 2-D image, got an array of shape \(3, 16, 16\)"
    ):
        load_image(tmp_path / "cube.npy")
    np.save(tmp_path / "small.npy", np.zeros((4, 16)))
    with pytest.raises(ImageFileError, match="at least 8x8 pixels"):
        load_image(tmp_path / "small.npy")
    np.save(tmp_path / "text.npy", np.array([["a"] * 16] * 16))
    with pytest.raises(ImageFileError, match="numeric pixels"):
        load_image(tmp_path / "text.npy")
    (tmp_path / "broken.npy").write_bytes(b"garbage")
    with pytest.raises(ImageFileError, match=r"cannot read it as a \.npy image"):
        load_image(tmp_path / "broken.npy")
    np.save(tmp_path / "nan.npy", np.full((16, 16), np.nan))
    with pytest.raises(ImageFileError, match="NaN"):
        load_image(tmp_path / "nan.npy")
    # an image file error is an analysis error: the analysis CLI reports both alike
    assert issubclass(ImageFileError, AnalysisError)
