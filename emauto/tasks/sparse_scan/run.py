"""`emauto scan`: a sparse scan on any Microscope backend, reconstructed and written out.

The plan's positions (or line segments) go to the backend as one acquisition per batch
(static strategies: one acquisition; adaptive ones: one per batch), over a ``size x size``
raster of the field of view (``--fov`` or the backend's ``scan_fov`` knob). The samples are
min-max normalised (by the samples' own range) for the reconstruction and scaled back to
detector counts afterwards. ``time_fraction`` in the summary is the scan system's time (the
model of `strategies.scan_cost`) plus the computing between batches (``compute_s``, wall
clock), over a full raster's; ``scan_time_fraction`` the first alone. The default
reconstruction, ``validated``, chooses the method from held-out samples (`validation`); the
summary names it and its validation error (% of the samples' range). Written to ``out``:
``reconstruction.npy`` (counts), ``reconstruction.png``, ``mask.npy``, ``samples.npy`` and
``summary.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from emauto.errors import ConfigError
from emauto.microscope import Microscope
from emauto.tasks.sparse_scan.adaptive import Measure
from emauto.tasks.sparse_scan.pictures import save_image_png
from emauto.tasks.sparse_scan.reconstruct import reconstruct
from emauto.tasks.sparse_scan.registry import (
    ADAPTIVE_STRATEGIES,
    CHOOSING_RECONSTRUCTIONS,
    DEFAULT_RECONSTRUCTION,
    STATIC_STRATEGIES,
)
from emauto.tasks.sparse_scan.strategies import (
    ScanPlan,
    check_coverage,
    make_plan,
    pixel_positions_m,
    scan_cost,
    to_request,
)
from emauto.tasks.sparse_scan.validation import validate

__all__ = ["microscope_measure", "run_scan"]


class _Acquirer:
    """Measures pixels by acquiring them on a microscope; totals dose and time, and the
    wall-clock computing between acquisitions (``compute_s``: from the end of one to the
    start of the next)."""

    def __init__(
        self, scope: Microscope, shape: tuple[int, int], fov_m: float, dwell_s: float | None
    ) -> None:
        self.scope = scope
        self.shape = shape
        self.fov_m = fov_m
        self.dwell_s = dwell_s
        self.dose_e = 0.0
        self.duration_s = 0.0
        self.acquisitions = 0
        self.compute_s = 0.0
        self._last_end: float | None = None

    def plan(self, plan: ScanPlan) -> np.ndarray:
        start = time.perf_counter()
        if self._last_end is not None:
            self.compute_s += start - self._last_end
        frame = self.scope.acquire(to_request(plan, self.fov_m, self.dwell_s))
        self._last_end = time.perf_counter()
        self._count(frame.dose_e, frame.duration_s)
        return np.asarray(frame.data, dtype=np.float64)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.plan(ScanPlan("batch", self.shape, pixels))

    def _count(self, dose: float, duration: float) -> None:
        self.dose_e += dose
        self.duration_s += duration
        self.acquisitions += 1


def microscope_measure(
    scope: Microscope, shape: tuple[int, int], fov_m: float, dwell_s: float | None = None
) -> Measure:
    """A `Measure` that acquires pixels of a ``shape`` raster over ``fov_m`` on ``scope``."""
    return _Acquirer(scope, shape, fov_m, dwell_s)


def run_scan(
    microscope: str | Microscope,
    coverage: float,
    strategy: str,
    out: str | Path,
    shape: tuple[int, int] = (256, 256),
    fov_m: float | None = None,
    dwell_s: float | None = None,
    reconstruction: str = DEFAULT_RECONSTRUCTION,
    seed: int = 0,
) -> dict[str, Any]:
    """Scan, reconstruct, write the files; return the summary."""
    from emauto.drivers import connect

    coverage = check_coverage(coverage)
    scope = connect(microscope) if isinstance(microscope, str) else microscope
    try:
        state = scope.read()
        fov = float(fov_m if fov_m is not None else state.knobs.get("scan_fov", 0.0))
        if not fov > 0:
            raise ConfigError("no field of view: pass --fov (m); the backend has no scan_fov")
        acquirer = _Acquirer(scope, shape, fov, dwell_s)
        if strategy in STATIC_STRATEGIES:
            plan = make_plan(strategy, shape, coverage, seed)
            values = np.zeros(shape)
            values[plan.pixels[:, 0], plan.pixels[:, 1]] = acquirer.plan(plan)
        else:
            scan = ADAPTIVE_STRATEGIES.load(strategy)
            plan, values = scan(shape, coverage, acquirer, seed=seed)
        description = scope.describe()
    finally:
        if isinstance(microscope, str):
            scope.close()
    mask = plan.mask()
    low, high = float(values[mask].min()), float(values[mask].max())
    span = high - low if high > low else 1.0
    normalised = np.where(mask, (values - low) / span, 0.0)
    method, validation = reconstruction, None
    if reconstruction in CHOOSING_RECONSTRUCTIONS:
        choice = validate(normalised, mask, seed=seed)
        method, validation = choice.method, choice.summary()
    image = reconstruct(method, normalised, mask) * span + low
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "reconstruction.npy", image.astype(np.float32))
    np.save(folder / "mask.npy", mask)
    np.save(folder / "samples.npy", np.where(mask, values, np.nan).astype(np.float32))
    save_image_png(
        image,
        folder / "reconstruction.png",
        f"{strategy}, coverage {coverage:g}, {method} ({fov * 1e9:.3g} nm)",
        pixel_m=fov / image.shape[1],
    )
    dwell = dwell_s if dwell_s is not None else state.knobs.get("scan_dwell", 1e-6)
    cost = scan_cost(plan, description.scan, dwell, description.beam_current_A)
    summary = {
        "microscope": description.backend,
        "strategy": strategy,
        "coverage": plan.coverage,
        "positions": plan.n,
        "acquisitions": acquirer.acquisitions,
        "fov_m": fov,
        "pixel_m": fov / shape[1],
        "first_position_m": pixel_positions_m(plan.pixels[:1], shape, fov)[0].tolist(),
        "dose_e": acquirer.dose_e,
        "backend_duration_s": acquirer.duration_s,
        "model_time_s": cost.time_s,
        "compute_s": acquirer.compute_s,
        "dose_fraction": cost.dose_fraction,
        "time_fraction": (cost.time_s + acquirer.compute_s) / cost.full_raster_time_s,
        "scan_time_fraction": cost.time_fraction,
        "reconstruction": reconstruction,
        "reconstructed_with": method,
        **({"validation": validation} if validation is not None else {}),
        "files": sorted({*(str(p) for p in folder.iterdir()), str(folder / "summary.json")}),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[emauto scan] wrote {folder}", file=sys.stderr, flush=True)
    return summary
