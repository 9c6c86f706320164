"""Read a 2-D image from .npy, .tif/.tiff, .png or a microscope file (.dm3, .dm4, .emd).

Microscope files go through rosettasciio (`rsciio`); when a file holds several signals, the
first 2-D one is taken. Singleton axes are dropped (``(1, ny, nx)`` is an image). Anything
else (missing file, unknown extension, corrupt file, not 2-D, non-finite pixels) raises an
`ImageFileError` that names the file, what was expected and what arrived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emauto.errors import ImageFileError

__all__ = ["SUPPORTED_SUFFIXES", "first_2d_signal", "read_image"]

SUPPORTED_SUFFIXES = (".npy", ".tif", ".tiff", ".png", ".dm3", ".dm4", ".emd")


def _read_npy(path: Path) -> Any:
    return np.load(path, allow_pickle=False)


def _read_tiff(path: Path) -> Any:
    import tifffile

    return tifffile.imread(path)


def _read_png(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("F") if image.mode not in ("L", "I", "F") else image)


def first_2d_signal(path: Path) -> dict[str, Any]:
    """The first signal of a microscope file (.dm3/.dm4/.emd, rosettasciio) whose data is a
    2-D image once singleton axes are dropped: its ``data``, ``axes`` and metadata."""
    suffix = path.suffix.lower()
    if suffix in (".dm3", ".dm4"):
        from rsciio.digitalmicrograph import file_reader
    else:
        from rsciio.emd import file_reader
    signals = file_reader(str(path))
    shapes = []
    for signal in signals:
        data = np.asarray(signal["data"])
        shapes.append(data.shape)
        if np.squeeze(data).ndim == 2:
            return dict(signal)
    raise ImageFileError(
        f"{path}: expected a 2-D image among the file's signals, got shapes {shapes}"
    )


def _read_rsciio(path: Path) -> Any:
    return first_2d_signal(path)["data"]


_READERS = {
    ".npy": _read_npy,
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".png": _read_png,
    ".dm3": _read_rsciio,
    ".dm4": _read_rsciio,
    ".emd": _read_rsciio,
}


def read_image(path: str | Path) -> np.ndarray:
    """The 2-D image in ``path`` as float64 ``[y, x]`` (values as stored)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ImageFileError(
            f"{path}: unknown image format {suffix or '(no extension)'!r}; expected one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    try:
        raw = _READERS[suffix](path)
    except ImageFileError:
        raise
    except Exception as exc:
        raise ImageFileError(
            f"{path}: cannot read it as a {suffix} image: {type(exc).__name__}: {exc}"
        ) from exc
    array = np.asarray(raw)
    if array.dtype.kind not in "biuf":
        raise ImageFileError(f"{path}: expected numeric pixels, got dtype {array.dtype}")
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise ImageFileError(f"{path}: expected a 2-D image, got an array of shape {array.shape}")
    if min(squeezed.shape) < 8:
        raise ImageFileError(
            f"{path}: expected an image of at least 8x8 pixels, got {squeezed.shape}"
        )
    image = squeezed.astype(np.float64)
    if not np.all(np.isfinite(image)):
        raise ImageFileError(f"{path}: the image has NaN or infinite pixels")
    return image
