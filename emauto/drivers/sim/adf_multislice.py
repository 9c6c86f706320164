"""The multislice ADF reference: abTEM's probe scanned through the specimen's atoms.

The reference the fast (incoherent, kinematic) ADF engine is measured against: abTEM builds
the Lobato potential of the same atoms in thin slices, propagates a probe with the same
aberrations (`optics.to_abtem_polar`, hard aperture) to each position, and integrates the
exit wave's far field over the annular detector. Elastic scattering only, like the fast
engine (no frozen phonons, so no thermal diffuse scattering in either). The probe sees the
whole periodic cell, so this is practical only for small cells (a few nm): each position
costs one multislice run, ~10-100 ms.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from emauto import optics
from emauto.drivers.sim.probe import ProbeOptics, stack_mid_depth_m
from emauto.drivers.sim.specimens import Specimen

#: Fraction of the grid's Nyquist angle that abTEM keeps after anti-aliasing.
ANTIALIAS_FRACTION = 2.0 / 3.0


def reference_sampling(energy_eV: float, outer_rad: float, margin: float = 1.05) -> float:
    """Real-space pixel (m) at which abTEM's anti-aliased far field reaches ``outer_rad``."""
    wavelength = optics.wavelength(energy_eV)
    return ANTIALIAS_FRACTION * wavelength / (2 * outer_rad * margin)


class MultisliceADFEngine:
    """ADF signals by abTEM multislice for a small periodic specimen."""

    def __init__(
        self,
        specimen: Specimen,
        energy_eV: float,
        inner_rad: float,
        outer_rad: float,
        *,
        slice_m: float = 2e-10,
    ) -> None:
        import abtem
        from ase import Atoms

        self.energy_eV = energy_eV
        self.inner_rad, self.outer_rad = inner_rad, outer_rad
        lx, ly = specimen.extent_m
        atoms = Atoms(
            numbers=specimen.numbers,
            positions=specimen.positions_m * 1e10,
            cell=[lx * 1e10, ly * 1e10, specimen.thickness_m * 1e10],
            pbc=True,
        )
        sampling_A = reference_sampling(energy_eV, outer_rad) * 1e10
        self.potential = abtem.Potential(
            atoms,
            sampling=sampling_A,
            slice_thickness=slice_m * 1e10,
            projection="infinite",
            parametrization="lobato",
        )
        self._mid_depth_m = stack_mid_depth_m([t * 1e-10 for t in self.potential.slice_thickness])

    def signal(self, probe: ProbeOptics, positions_m: np.ndarray) -> np.ndarray:
        """Fraction of beam electrons reaching the detector at each (x, y) position (N,)."""
        import abtem

        if probe.tilt_rad != (0.0, 0.0):
            raise ValueError("the multislice ADF reference models an untilted probe only")
        abtem_probe = abtem.Probe(
            energy=self.energy_eV,
            semiangle_cutoff=probe.convergence_rad * 1e3,
            soft=False,
            # aberrations at the mid-plane, the probe built at the entrance (`probe` module)
            aberrations=optics.to_abtem_polar(probe.at_depth(-self._mid_depth_m).aberrations()),
        )
        abtem_probe.grid.match(self.potential)
        detector = abtem.AnnularDetector(
            inner=self.inner_rad * 1e3, outer=self.outer_rad * 1e3, to_cpu=True
        )
        scan = abtem.CustomScan(np.asarray(positions_m, dtype=np.float64) * 1e10)
        measurement: Any = abtem_probe.scan(self.potential, scan=scan, detectors=detector)
        values = np.asarray(measurement.compute(progress_bar=False).array, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ArithmeticError("abTEM returned a non-finite ADF signal")
        return values.reshape(len(positions_m))


def relative_error(approx: np.ndarray, reference: np.ndarray) -> float:
    """||approx - reference||_2 / ||reference||_2."""
    return float(np.linalg.norm(approx - reference) / np.linalg.norm(reference))


def shape_error(approx: np.ndarray, reference: np.ndarray) -> float:
    """Relative L2 error after the best single scale factor (contrast shape only)."""
    scale = float(np.dot(approx, reference) / max(np.dot(approx, approx), math.ulp(1.0)))
    return relative_error(scale * approx, reference)


def unit_cell_positions(lattice_constant_m: float, per_side: int) -> np.ndarray:
    """(per_side^2, 2) probe positions (x, y), m, on a grid over one square unit cell."""
    ticks = np.arange(per_side) / per_side * lattice_constant_m  # includes the corner columns
    x, y = np.meshgrid(ticks, ticks, indexing="xy")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def adf_fidelity(
    specimen: Specimen,
    probe: ProbeOptics,
    positions_m: np.ndarray,
    energy_eV: float,
    inner_rad: float,
    outer_rad: float,
    pixel_m: float,
) -> dict[str, float]:
    """Fast (point source) vs multislice ADF at the same positions (``pixel_m`` apart).

    Returns ``rel_error`` (absolute signals), ``shape_error`` (after the best scale) and
    ``intensity_ratio`` (mean fast / mean multislice).
    """
    from emauto.drivers.sim.adf import FastADFEngine

    fast = FastADFEngine(specimen, energy_eV, inner_rad, outer_rad, source_fwhm_m=0.0)
    approx = fast.signal(probe, positions_m, pixel_m=pixel_m)
    reference = MultisliceADFEngine(specimen, energy_eV, inner_rad, outer_rad).signal(
        probe, positions_m
    )
    return {
        "rel_error": relative_error(approx, reference),
        "shape_error": shape_error(approx, reference),
        "intensity_ratio": float(approx.mean() / reference.mean()),
    }
