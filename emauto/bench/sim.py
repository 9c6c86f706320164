"""`emauto bench sim`: speed of the twin and the fast path's error against multislice.

Figures (one run, one machine, medians over repeats):

- ``fast_ronchigram_per_s``: 128x128 Ronchigrams per second through `Microscope.acquire`
  on the fast twin (noise, drift, lag and all), optics changed before every frame.
- ``multislice_ronchigram_per_s``: the same frame by the abTEM multislice reference engine.
- ``speedup``: the ratio of the two.
- ``fast_vs_multislice_rel_error``: median over random aberration states of
  ||I_fast - I_multislice||_2 / ||I_multislice||_2 on noise-free camera images.
- ``adf_image_256_per_s``: 256x256 ADF rasters per second through `acquire`, the probe
  changed before every image so nothing is reused from the previous one.
- ``adf_fast_vs_multislice_*``: the fast (incoherent, kinematic) ADF engine against abTEM
  multislice ADF on a 4x4x10-cell SrTiO3 [001] cell, 8x8 positions over one unit cell,
  aligned 30 mrad probe, point source: relative L2 error of the signals, the error after
  the best scale factor (contrast shape), and the ratio of mean signals.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np

from emauto.drivers.sim import SimulatedMicroscope
from emauto.drivers.sim.adf_multislice import adf_fidelity, unit_cell_positions
from emauto.drivers.sim.config import EffectsConfig, SimConfig
from emauto.drivers.sim.multislice import MultisliceRonchigramEngine
from emauto.drivers.sim.probe import ProbeOptics
from emauto.drivers.sim.specimens import load_specimen, recipe_dir
from emauto.microscope import ImageRequest, RasterScan, RonchigramRequest
from emauto.optics import ABERRATION_NAMES

#: The small SrTiO3 cell on which the fast ADF engine is compared with multislice.
ADF_REFERENCE = recipe_dir() / "srtio3_adf_reference.yaml"


def _progress(message: str) -> None:
    print(f"[bench sim] {message}", file=sys.stderr, flush=True)


def _rate(timings: list[float]) -> float:
    return 1.0 / statistics.median(timings)


def _adf_fidelity(seed: int) -> dict[str, float]:
    """Fast vs multislice ADF over one SrTiO3 unit cell, 8x8 positions, aligned probe."""
    config = SimConfig(specimen=str(ADF_REFERENCE), seed=seed)
    specimen = load_specimen(ADF_REFERENCE, sampling_m=0.1e-10, n_slabs=1)
    lattice = 3.905e-10
    probe = ProbeOptics(
        coefficients_m=(0.0,) * len(ABERRATION_NAMES), convergence_rad=0.03, tilt_rad=(0.0, 0.0)
    )
    return adf_fidelity(
        specimen,
        probe,
        unit_cell_positions(lattice, 8),
        config.energy_eV,
        config.adf.inner_angle_rad,
        config.adf.outer_angle_rad,
        pixel_m=lattice / 8,
    )


def run_sim_benchmark(seed: int = 0, repeats: int | None = None) -> dict[str, Any]:
    """Measure the twin; return the figures as one JSON-ready dict."""
    rng = np.random.default_rng(seed)
    n_fast = repeats or 300
    n_multi = max(3, (repeats or 300) // 60)
    n_adf = max(3, (repeats or 300) // 30)

    _progress("loading the amorphous-carbon twin ...")
    scope = SimulatedMicroscope(SimConfig(specimen="amorphous_carbon", seed=seed))
    request = RonchigramRequest(exposure_s=0.01)
    scope.acquire(request)
    _progress(f"{n_fast} fast Ronchigrams through acquire() ...")
    fast_times = []
    for _ in range(n_fast):
        scope.set({"C10": float(rng.uniform(-50e-9, 50e-9))})
        start = time.perf_counter()
        scope.acquire(request)
        fast_times.append(time.perf_counter() - start)

    _progress("loading the multislice reference (thin slices, cached after the first run) ...")
    ideal = SimConfig(specimen="amorphous_carbon", seed=seed, effects=EffectsConfig.none())
    twin = SimulatedMicroscope(ideal)
    fast_engine = twin._ronchigram_engine
    multi_engine = MultisliceRonchigramEngine(
        "amorphous_carbon", twin.grid, ideal.energy_eV, slice_m=ideal.multislice_slice_m
    )
    lx, ly = twin.specimen.extent_m
    multi_times, errors = [], []
    _progress(f"{n_multi} multislice Ronchigrams and their fast twins ...")
    for _ in range(n_multi):
        probe = random_probe(rng)
        position = (float(rng.uniform(0, lx)), float(rng.uniform(0, ly)))
        start = time.perf_counter()
        reference = multi_engine.ronchigram(probe, position)
        multi_times.append(time.perf_counter() - start)
        approx = fast_engine.ronchigram(probe, position)
        errors.append(float(np.linalg.norm(approx - reference) / np.linalg.norm(reference)))

    _progress("loading the SrTiO3 twin for ADF images ...")
    adf_scope = SimulatedMicroscope(SimConfig(specimen="srtio3", seed=seed))
    adf_scope.set({"scan_fov": 4e-9})
    adf_request = ImageRequest(detector="adf", scan=RasterScan(shape=(256, 256)))
    adf_scope.acquire(adf_request)
    adf_times = []
    _progress(f"{n_adf} 256x256 ADF images ...")
    for _ in range(n_adf):
        adf_scope.set({"C10": float(rng.uniform(-5e-9, 5e-9))})
        start = time.perf_counter()
        adf_scope.acquire(adf_request)
        adf_times.append(time.perf_counter() - start)

    _progress("ADF: fast vs abTEM multislice on a 4x4x10-cell SrTiO3 reference (~20 s) ...")
    adf_errors = _adf_fidelity(seed)

    fast_rate = _rate(fast_times)
    multi_rate = _rate(multi_times)
    return {
        "fast_ronchigram_per_s": round(fast_rate, 1),
        "multislice_ronchigram_per_s": round(multi_rate, 3),
        "speedup": round(fast_rate / multi_rate, 1),
        "fast_vs_multislice_rel_error": round(statistics.median(errors), 4),
        "fast_vs_multislice_rel_error_max": round(max(errors), 4),
        "adf_image_256_per_s": round(_rate(adf_times), 2),
        "adf_fast_vs_multislice_rel_error": round(adf_errors["rel_error"], 4),
        "adf_fast_vs_multislice_shape_error": round(adf_errors["shape_error"], 4),
        "adf_fast_vs_multislice_intensity_ratio": round(adf_errors["intensity_ratio"], 3),
        "ronchigram_shape": list(scope.describe().detectors["ronchigram"].shape or ()),
        "simulation_grid": scope.grid.gpts,
        "specimen_thickness_m": twin.specimen.thickness_m,
        "multislice_slice_m": ideal.multislice_slice_m,
        "repeats": {"fast": n_fast, "multislice": n_multi, "adf": n_adf},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def random_probe(rng: np.random.Generator, convergence_rad: float = 0.03) -> ProbeOptics:
    """A probe detuned exactly as a probe-tuning episode starts (`draw_start` on the
    default `ProbeTuningConfig`: C1 and C3 from intervals, A1, B2, A2 from discs)."""
    from emauto.tasks.probe_tuning.config import ProbeTuningConfig
    from emauto.tasks.probe_tuning.env import draw_start

    values = draw_start(ProbeTuningConfig(), rng)
    coefficients = tuple(float(values.get(name, 0.0)) for name in ABERRATION_NAMES)
    return ProbeOptics(coefficients, convergence_rad, (0.0, 0.0))
