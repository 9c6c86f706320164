"""The multislice reference engine: abTEM's own multislice through thin potential slices.

Same specimen, same grid and same incident probe as the fast engine (the probe is built
from `emauto.optics.chi`, which the optics tests check against `abtem.transfer`), but the
wave is propagated by abTEM through slices of ``slice_m`` thickness. This is the reference
the fast engine's error is measured against; it is slow (tens to hundreds of ms a frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emauto.drivers.sim.probe import (
    ProbeOptics,
    RonchigramGrid,
    incident_probe,
    stack_mid_depth_m,
)
from emauto.drivers.sim.specimens import Specimen, load_specimen


def _window(array: np.ndarray, x0: int, y0: int, n: int) -> np.ndarray:
    """A periodic (wrapped) n x n window of a (slices, ny, nx) array starting at (x0, y0)."""
    ny, nx = array.shape[-2:]
    rows = (y0 + np.arange(n)) % ny
    cols = (x0 + np.arange(n)) % nx
    return array[:, rows[:, None], cols[None, :]]


class MultisliceRonchigramEngine:
    """Ronchigrams by abTEM multislice through the specimen's thin slices."""

    def __init__(
        self,
        specimen: str | Path | Specimen,
        grid: RonchigramGrid,
        energy_eV: float,
        *,
        slice_m: float = 2e-10,
        cache_dir: Path | None = None,
    ) -> None:
        self.grid = grid
        self.energy_eV = energy_eV
        if isinstance(specimen, Specimen):
            self.specimen = specimen
        else:
            self.specimen = load_specimen(
                specimen, sampling_m=grid.sampling_m, slab_thickness_m=slice_m, cache_dir=cache_dir
            )
        if not np.isclose(self.specimen.sampling_m, grid.sampling_m, rtol=1e-6):
            raise ValueError(
                f"specimen sampling {self.specimen.sampling_m:.6g} m differs from the grid's "
                f"{grid.sampling_m:.6g} m"
            )

    def exit_wave(self, probe: ProbeOptics, position_m: tuple[float, float]) -> np.ndarray:
        """Exit wave (gpts, gpts) complex, [y, x], of a probe at a specimen position."""
        import abtem

        n = self.grid.gpts
        sampling = self.specimen.sampling_m
        px, py = position_m[0] / sampling, position_m[1] / sampling
        ix, iy = int(np.floor(px)), int(np.floor(py))
        window = _window(self.specimen.projected_potential, ix - n // 2, iy - n // 2, n)
        within = ((n // 2 + px - ix) * sampling, (n // 2 + py - iy) * sampling)
        # the probe at the first slice, its aberrations given at the mid-plane (`probe` module)
        specimen = self.specimen
        depth = stack_mid_depth_m([specimen.slab_thickness_m] * specimen.n_slabs)
        wave = incident_probe(self.grid, probe.at_depth(-depth), within)
        sampling_A = sampling * 1e10
        # abTEM arrays are [x, y] and in Ångström units: transpose and convert V*m -> V*Å.
        potential = abtem.PotentialArray(
            np.ascontiguousarray(np.swapaxes(window, -1, -2) * 1e10).astype(np.float32),
            slice_thickness=self.specimen.slab_thickness_m * 1e10,
            sampling=sampling_A,
        )
        waves = abtem.Waves(
            np.ascontiguousarray(wave.T).astype(np.complex64),
            energy=self.energy_eV,
            sampling=sampling_A,
        )
        exit_wave: Any = waves.multislice(potential)
        return np.asarray(exit_wave.compute(scheduler="synchronous").array).T

    def ronchigram(self, probe: ProbeOptics, position_m: tuple[float, float]) -> np.ndarray:
        """Camera image (float64, [y, x]): the fraction of beam electrons in each pixel."""
        exit_wave = self.exit_wave(probe, position_m)
        far_field = np.fft.fft2(exit_wave, norm="ortho")
        intensity = np.fft.fftshift(np.abs(far_field) ** 2).astype(np.float64)
        return self.grid.camera_from_far_field(intensity)
