"""Probe optics shared by the twin's engines: the simulation grid and the incident probe.

The incident probe in the aperture plane is ``A(alpha - tilt) * exp(-i chi(alpha))``: the
illumination tilt moves the probe-forming aperture in angle space while the aberration
function stays centred on the optic axis (so a tilt induces off-axis aberrations, as on a
real column). ``chi`` is `emauto.optics.chi` (Krivanek Cartesian, abTEM sign).

Reference plane: the twin's aberrations (its knobs and its ground truth) describe the probe
at the specimen's *mid-plane*, the middle of its stack of phase screens. An engine that
propagates through several screens starts the wave at the first screen with the probe
described there (`probe_at_depth` with ``-stack_mid_depth_m``); a one-screen engine (the
fast twin's default) puts the whole specimen in that plane. Without this, a 3 nm film in
15 multislice screens would be focused 1.4 nm above its middle at C1 = 0, while every
Ronchigram-based measurement focuses the probe near the middle (near focus, the fast
twin's error against multislice is smallest with the multislice probe described at the
middle: 2.7 % against 5.8 % at the entrance and at the bottom;
`benchmarks/experiments/reference_plane.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from emauto import optics
from emauto.drivers.sim.config import RonchigramCameraConfig

ArrayT = TypeVar("ArrayT", bound=Any)

_C1_INDEX = optics.ABERRATION_NAMES.index("C10")


def stack_mid_depth_m(slice_thicknesses_m: Sequence[float]) -> float:
    """Depth (m) below the first phase screen of the middle of a stack of screens, one at
    the top of each slice (transmit, then propagate by the slice's thickness): the twin's
    reference plane. 0 for a single screen."""
    thicknesses = [float(t) for t in slice_thicknesses_m]
    if not thicknesses or min(thicknesses) < 0:
        raise ValueError(f"need >= 1 slice of thickness >= 0 m, got {thicknesses}")
    return 0.5 * sum(thicknesses[:-1])


@dataclass(frozen=True)
class ProbeOptics:
    """The optical state that forms the probe, in SI units."""

    coefficients_m: tuple[float, ...]  # in the order of `optics.ABERRATION_NAMES`
    convergence_rad: float
    tilt_rad: tuple[float, float]

    def aberrations(self) -> optics.Aberrations:
        """The coefficients as an `optics.Aberrations` model."""
        return optics.Aberrations.from_mapping(
            dict(zip(optics.ABERRATION_NAMES, self.coefficients_m, strict=True))
        )

    def at_depth(self, depth_m: float) -> ProbeOptics:
        """The same beam described in a plane ``depth_m`` further along the beam (m;
        negative = upstream). Free-space propagation by ``dz`` multiplies the spectrum by
        ``exp(-i pi lambda dz k^2)``, which is ``chi``'s C1 term with C1 = dz: only C1
        changes, by ``+depth_m`` (Krivanek: positive C1 = overfocus)."""
        if depth_m == 0.0:
            return self
        coefficients = list(self.coefficients_m)
        coefficients[_C1_INDEX] += depth_m
        return ProbeOptics(tuple(coefficients), self.convergence_rad, self.tilt_rad)


@dataclass(frozen=True)
class RonchigramGrid:
    """The square FFT grid behind the Ronchigram camera.

    The grid's Nyquist angle is 1.5 x the camera half-angle; the camera reads the central
    ``2/3`` of the far field (abTEM's anti-aliasing cut-off), binned by ``oversample``.
    """

    gpts: int
    sampling_m: float
    wavelength_m: float
    oversample: int
    camera_pixels: int

    @staticmethod
    def requested_sampling(camera: RonchigramCameraConfig, energy_eV: float) -> float:
        """Real-space pixel (m) that puts the camera at 2/3 of the grid's Nyquist angle."""
        return optics.wavelength(energy_eV) / (3.0 * camera.half_angle_rad)

    @classmethod
    def for_camera(
        cls, camera: RonchigramCameraConfig, energy_eV: float, sampling_m: float
    ) -> RonchigramGrid:
        """The grid for a camera, given the specimen's actual pixel size."""
        crop = camera.shape[0] * camera.oversample
        return cls(
            gpts=2 * math.ceil(crop * 3 / 4),  # even, >= 1.5 x the camera crop
            sampling_m=sampling_m,
            wavelength_m=optics.wavelength(energy_eV),
            oversample=camera.oversample,
            camera_pixels=camera.shape[0],
        )

    @property
    def crop(self) -> int:
        """Far-field pixels read by the camera (before binning)."""
        return self.camera_pixels * self.oversample

    @property
    def angular_pixel_rad(self) -> float:
        """Angular size of one far-field grid pixel."""
        return self.wavelength_m / (self.gpts * self.sampling_m)

    @property
    def camera_pixel_rad(self) -> float:
        """Angular size of one camera pixel."""
        return self.angular_pixel_rad * self.oversample

    @property
    def extent_m(self) -> float:
        """Real-space window of the grid."""
        return self.gpts * self.sampling_m

    def angles(self) -> tuple[np.ndarray, np.ndarray]:
        """Scattering angles (alpha_x, alpha_y) of the unshifted FFT grid, each [y, x]."""
        freq = np.fft.fftfreq(self.gpts, d=self.sampling_m) * self.wavelength_m
        alpha_x, alpha_y = np.meshgrid(freq, freq, indexing="xy")
        return alpha_x, alpha_y

    def camera_from_far_field(self, intensity_shifted: ArrayT) -> ArrayT:
        """Crop the centred far field to the camera and bin it: (gpts, gpts) -> camera.

        Works on numpy arrays and torch tensors alike.
        """
        start = (self.gpts - self.crop) // 2
        cropped = intensity_shifted[start : start + self.crop, start : start + self.crop]
        n, b = self.camera_pixels, self.oversample
        return cropped.reshape(n, b, n, b).sum(3).sum(1)


def aperture_pixels(
    alpha_x: np.ndarray, alpha_y: np.ndarray, convergence_rad: float, tilt_rad: tuple[float, float]
) -> np.ndarray:
    """Flat indices of the grid points inside the (tilted) probe-forming aperture."""
    inside = (alpha_x - tilt_rad[0]) ** 2 + (alpha_y - tilt_rad[1]) ** 2 <= convergence_rad**2
    return np.flatnonzero(inside.ravel())


def incident_probe(
    grid: RonchigramGrid, probe: ProbeOptics, position_m: tuple[float, float]
) -> np.ndarray:
    """The incident probe wave (gpts, gpts) complex128, unit total intensity, at a position.

    ``position_m`` is measured from the grid origin (pixel 0), in m.
    """
    alpha_x, alpha_y = grid.angles()
    wave_k = np.zeros(alpha_x.shape, dtype=np.complex128)
    inside = aperture_pixels(alpha_x, alpha_y, probe.convergence_rad, probe.tilt_rad)
    ax, ay = alpha_x.ravel()[inside], alpha_y.ravel()[inside]
    phase = optics.chi(ax, ay, probe.aberrations(), grid.wavelength_m)
    kx, ky = ax / grid.wavelength_m, ay / grid.wavelength_m
    phase = phase + 2 * math.pi * (kx * position_m[0] + ky * position_m[1])
    wave_k.ravel()[inside] = np.exp(-1j * phase)
    wave = np.fft.ifft2(wave_k)
    return wave / math.sqrt(float(np.sum(np.abs(wave) ** 2)))
