"""Read images from disk: .npy, .tif/.tiff, .dm3/.dm4 and .emd (via rosettasciio).

`load_image` returns the image as float64 ``[y, x]`` and its pixel size in metres when the
file carries a spatial calibration (None otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emauto.analysis.image import as_image
from emauto.errors import AnalysisError, ImageFileError
from emauto.io.images import first_2d_signal

SUFFIXES = (".npy", ".tif", ".tiff", ".dm3", ".dm4", ".emd")
_UNIT_TO_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "nm": 1e-9, "Å": 1e-10, "A": 1e-10,
              "pm": 1e-12}  # fmt: skip


@dataclass(frozen=True)
class LoadedImage:
    """An image read from ``path``: data ``[y, x]`` (float64) and pixel size (m) or None."""

    path: Path
    data: np.ndarray
    pixel_m: float | None


def load_image(path: str | Path) -> LoadedImage:
    """Read a 2-D image; raises `ImageFileError` for a missing, unreadable or non-2-D file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ImageFileError(
            f"{path}: unsupported file type {suffix!r}; expected one of {SUFFIXES}"
        )
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    try:
        if suffix == ".npy":
            data, pixel = np.load(path, allow_pickle=False), None
        elif suffix in (".tif", ".tiff"):
            import tifffile

            data, pixel = tifffile.imread(path), None
        else:
            data, pixel = _read_rsciio(path)
    except ImageFileError:
        raise
    except Exception as exc:  # every reader raises its own types for a corrupt file
        raise ImageFileError(f"{path}: could not read it as {suffix}: {exc}") from exc
    try:
        image = as_image(data, what=str(path))
    except AnalysisError as exc:
        raise ImageFileError(str(exc)) from exc
    return LoadedImage(path=path, data=image, pixel_m=pixel)


def _read_rsciio(path: Path) -> tuple[np.ndarray, float | None]:
    signal = first_2d_signal(path)  # the one reader of microscope files (emauto.io.images)
    return np.asarray(signal["data"]), _pixel_size(signal.get("axes", []))


def _pixel_size(axes: list[dict[str, Any]]) -> float | None:
    """The x-axis scale in metres, if the axis unit is a length."""
    if not axes:
        return None
    axis = axes[-1]
    unit = str(axis.get("units", "")).strip()
    factor = _UNIT_TO_M.get(unit)
    scale = float(axis.get("scale", 0.0) or 0.0)
    if factor is None or scale <= 0:
        return None
    return scale * factor
