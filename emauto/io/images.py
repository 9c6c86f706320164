"""Read a 2-D image, and its pixel size, from .npy, .tif/.tiff, .png or a microscope file.

`load_image` is the one image reader: it returns a `LoadedImage`, the image as float64
``[y, x]`` (values as stored) with its pixel size in metres when the file carries a spatial
calibration (microscope files: .dm3, .dm4, .emd) and None otherwise (.npy, .tif/.tiff, .png).

Microscope files go through rosettasciio (`rsciio`); when a file holds several signals, the
first 2-D one is taken. Singleton axes are dropped (``(1, ny, nx)`` is an image). Anything
else (missing file, unknown extension, corrupt file, not 2-D, smaller than 8x8 pixels,
non-finite pixels) raises an `ImageFileError` that names the file, what was expected and what
arrived. What an analysis needs beyond that (a larger image, some contrast) is checked by the
analysis (`emauto.analysis.image.as_image`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emauto.errors import ImageFileError

__all__ = ["MIN_SIDE", "SUPPORTED_SUFFIXES", "LoadedImage", "first_2d_signal", "load_image"]

SUPPORTED_SUFFIXES = (".npy", ".tif", ".tiff", ".png", ".dm3", ".dm4", ".emd")
#: The smallest image side a file may hold (pixels).
MIN_SIDE = 8
#: Length units of a microscope file's axes, in metres.
_UNIT_TO_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "nm": 1e-9, "Å": 1e-10, "A": 1e-10,
              "pm": 1e-12}  # fmt: skip


@dataclass(frozen=True)
class LoadedImage:
    """An image read from ``path``: ``data`` float64 ``[y, x]``, pixel size (m) or None."""

    path: Path
    data: np.ndarray
    pixel_m: float | None


def _read_npy(path: Path) -> tuple[Any, float | None]:
    return np.load(path, allow_pickle=False), None


def _read_tiff(path: Path) -> tuple[Any, float | None]:
    import tifffile

    return tifffile.imread(path), None


def _read_png(path: Path) -> tuple[Any, float | None]:
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("F") if image.mode not in ("L", "I", "F") else image)
    return pixels, None


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


def _pixel_size(axes: list[dict[str, Any]]) -> float | None:
    """The x (last) axis's scale in metres, if its unit is a length; else None."""
    if not axes:
        return None
    axis = axes[-1]
    factor = _UNIT_TO_M.get(str(axis.get("units", "")).strip())
    scale = float(axis.get("scale", 0.0) or 0.0)
    if factor is None or scale <= 0:
        return None
    return scale * factor


def _read_rsciio(path: Path) -> tuple[Any, float | None]:
    signal = first_2d_signal(path)
    return signal["data"], _pixel_size(signal.get("axes", []))


_READERS = {
    ".npy": _read_npy,
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".png": _read_png,
    ".dm3": _read_rsciio,
    ".dm4": _read_rsciio,
    ".emd": _read_rsciio,
}


def load_image(path: str | Path) -> LoadedImage:
    """The 2-D image in ``path`` (float64 ``[y, x]``) and its pixel size (m) if it has one."""
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
        raw, pixel_m = _READERS[suffix](path)
    except ImageFileError:
        raise
    except Exception as exc:  # every reader raises its own types for a corrupt file
        raise ImageFileError(
            f"{path}: cannot read it as a {suffix} image: {type(exc).__name__}: {exc}"
        ) from exc
    array = np.asarray(raw)
    if array.dtype.kind not in "biuf":
        raise ImageFileError(f"{path}: expected numeric pixels, got dtype {array.dtype}")
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise ImageFileError(f"{path}: expected a 2-D image, got an array of shape {array.shape}")
    if min(squeezed.shape) < MIN_SIDE:
        raise ImageFileError(
            f"{path}: expected an image of at least {MIN_SIDE}x{MIN_SIDE} pixels, "
            f"got {squeezed.shape}"
        )
    image = squeezed.astype(np.float64)
    if not np.all(np.isfinite(image)):
        raise ImageFileError(f"{path}: the image has NaN or infinite pixels")
    return LoadedImage(path=path, data=image, pixel_m=pixel_m)
