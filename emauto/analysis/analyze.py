"""One call that analyses an acquired image: atom columns, lattice, resolution, drift.

Meant to run between acquisitions: a 256x256 image takes tens of milliseconds on one core
(measured by `emauto bench analysis`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emauto.analysis.atoms import find_atom_columns
from emauto.analysis.drift import measure_drift
from emauto.analysis.image import as_image
from emauto.analysis.lattice import Lattice, find_lattice
from emauto.analysis.resolution import estimate_resolution
from emauto.errors import AnalysisError, NoLatticeError

#: Column separation assumed without a lattice: 1.5 Å (in pixels if the pixel size is known).
DEFAULT_MIN_SEPARATION_M = 1.5e-10
DEFAULT_MIN_SEPARATION_PX = 4.0


@dataclass
class AnalysisResult:
    """What `analyze_image` found; `as_dict` is the JSON of ``emauto analyze --json``."""

    shape: tuple[int, int]
    pixel_m: float | None
    atoms_xy_px: list[list[float]]
    lattice: Lattice | None
    resolution: dict[str, object]
    drift: dict[str, object] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "pixel_m": self.pixel_m,
            "n_atoms": len(self.atoms_xy_px),
            "atoms_xy_px": self.atoms_xy_px,
            "lattice": None if self.lattice is None else self.lattice.as_dict(self.pixel_m),
            "resolution": self.resolution,
            "drift": self.drift,
            "notes": self.notes,
        }


def analyze_image(
    data: np.ndarray,
    *,
    pixel_m: float | None = None,
    previous: np.ndarray | None = None,
    dt_s: float | None = None,
) -> AnalysisResult:
    """Analyse one HAADF image ``[y, x]``; ``pixel_m`` is the pixel size (m) if known.

    Atom columns are searched with a minimum separation of 0.36x the shortest lattice spacing
    when a lattice is found, else 1.5 Å (or 4 px). An image without a lattice is analysed
    all the same: ``lattice`` is None and ``notes`` says why. ``previous`` (same shape)
    adds the drift between the two frames; ``dt_s`` (s) turns it into a velocity.
    """
    image = as_image(data)
    if pixel_m is not None and not (np.isfinite(pixel_m) and pixel_m > 0):
        raise AnalysisError(f"pixel_m: expected a positive pixel size in metres, got {pixel_m}")
    notes: list[str] = []
    lattice: Lattice | None
    try:
        lattice = find_lattice(image)
        separation = 0.36 * min(lattice.spacings_px)
    except NoLatticeError as exc:
        lattice = None
        notes.append(str(exc))
        separation = (
            DEFAULT_MIN_SEPARATION_M / pixel_m if pixel_m is not None else DEFAULT_MIN_SEPARATION_PX
        )
    columns = find_atom_columns(image, max(separation, 1.5))
    resolution = estimate_resolution(image).as_dict(pixel_m)
    drift: dict[str, object] | None = None
    if previous is not None:
        measured = measure_drift(previous, image, pixel_m=pixel_m, dt_s=dt_s)
        drift = {
            "shift_px": list(measured.shift_px),
            "velocity_m_per_s": measured.velocity_m_per_s,
        }
    return AnalysisResult(
        shape=(image.shape[0], image.shape[1]),
        pixel_m=pixel_m,
        atoms_xy_px=np.round(columns.xy_px, 3).tolist(),
        lattice=lattice,
        resolution=resolution,
        drift=drift,
        notes=notes,
    )
