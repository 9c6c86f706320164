"""The fast ADF engine: incoherent imaging with kinematic annular cross-sections.

The ADF signal at probe position r is ``I(r) = (|P|^2 * O)(r)``: the probe intensity
(unit integral, from the same chi as the Ronchigram) convolved with an object function
``O = sum_atoms sigma_Z delta(r - r_atom)``, where ``sigma_Z`` is the kinematic cross-section
of one atom for scattering into the detector's annulus, from abTEM's Lobato scattering
factors (relativistically corrected). The result is the fraction of beam electrons that
reach the detector. This neglects channelling and multiple scattering: the error against
abTEM multislice is measured in the tests and stated in the README.

The probe intensity is blurred by a Gaussian effective source (``source_fwhm_m``, finite
source size and thermal vibration together), as in every real HAADF image.

The specimen is periodic, so the convolution is done over one period with FFTs and
sampled at any probe position by bilinear interpolation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import integrate, ndimage

from emauto import optics
from emauto.drivers.sim.probe import ProbeOptics, aperture_pixels
from emauto.drivers.sim.specimens import Specimen

#: Largest FFT grid (per side) of the object map before the probe is treated as a Gaussian.
MAX_GRID = 3072


@lru_cache(maxsize=256)
def annular_cross_section(
    atomic_number: int, energy_eV: float, inner_rad: float, outer_rad: float
) -> float:
    """Kinematic cross-section (m^2) of one atom for scattering into [inner, outer] rad."""
    from abtem.parametrizations import LobatoParametrization
    from ase.data import chemical_symbols

    f = LobatoParametrization().scattering_factor(chemical_symbols[atomic_number])
    wavelength_A = optics.wavelength(energy_eV) * 1e10
    gamma = 1.0 + energy_eV / 510998.95

    def integrand(theta: float) -> float:
        k = theta / wavelength_A  # 1/Å, the Lobato argument is k^2
        amplitude = gamma * float(f(np.array([k**2]))[0])  # Å
        return amplitude**2 * 2 * math.pi * theta

    value, _ = integrate.quad(integrand, inner_rad, outer_rad, limit=200)
    return value * 1e-20  # Å^2 -> m^2


class FastADFEngine:
    """ADF signals of a periodic specimen for any probe optics and positions."""

    def __init__(
        self,
        specimen: Specimen,
        energy_eV: float,
        inner_rad: float,
        outer_rad: float,
        source_fwhm_m: float = 0.5e-10,
    ) -> None:
        self.specimen = specimen
        self.source_sigma_m = source_fwhm_m / (2 * math.sqrt(2 * math.log(2)))
        self.wavelength_m = optics.wavelength(energy_eV)
        numbers = specimen.numbers.astype(int)
        table = {
            int(z): annular_cross_section(int(z), energy_eV, inner_rad, outer_rad)
            for z in np.unique(numbers)
        }
        self._weights = np.array([table[int(z)] for z in numbers])
        self._positions = specimen.positions_m[:, :2]
        self._map_key: tuple[object, ...] | None = None
        self._map = np.zeros((1, 1))
        self._map_sampling = (1.0, 1.0)

    def _object_spectrum(self, gpts: tuple[int, int]) -> np.ndarray:
        """FFT of the object function deposited on a periodic grid (bilinear, m^2/pixel)."""
        ny, nx = gpts
        lx, ly = self.specimen.extent_m
        fx = (self._positions[:, 0] / lx % 1.0) * nx
        fy = (self._positions[:, 1] / ly % 1.0) * ny
        x0, y0 = np.floor(fx).astype(int), np.floor(fy).astype(int)
        dx, dy = fx - x0, fy - y0
        grid = np.zeros(ny * nx)
        for ox, oy, w in (
            (0, 0, (1 - dx) * (1 - dy)),
            (1, 0, dx * (1 - dy)),
            (0, 1, (1 - dx) * dy),
            (1, 1, dx * dy),
        ):
            flat = ((y0 + oy) % ny) * nx + (x0 + ox) % nx
            grid += np.bincount(flat, weights=w * self._weights, minlength=ny * nx)
        return np.fft.rfft2(grid.reshape(ny, nx))

    def _probe_spectrum(self, probe: ProbeOptics, gpts: tuple[int, int]) -> np.ndarray:
        """rFFT of the probe intensity on the periodic grid, normalised to sum 1."""
        ny, nx = gpts
        lx, ly = self.specimen.extent_m
        ax = np.fft.fftfreq(nx, d=lx / nx) * self.wavelength_m
        ay = np.fft.fftfreq(ny, d=ly / ny) * self.wavelength_m
        alpha_x, alpha_y = np.meshgrid(ax, ay, indexing="xy")
        inside = aperture_pixels(alpha_x, alpha_y, probe.convergence_rad, probe.tilt_rad)
        wave_k = np.zeros(ny * nx, dtype=np.complex128)
        chi = optics.chi(
            alpha_x.ravel()[inside], alpha_y.ravel()[inside], probe.aberrations(), self.wavelength_m
        )
        wave_k[inside] = np.exp(-1j * chi)
        intensity = np.abs(np.fft.ifft2(wave_k.reshape(ny, nx))) ** 2
        return np.fft.rfft2(intensity / intensity.sum())

    def _gaussian_probe_spectrum(self, probe: ProbeOptics, gpts: tuple[int, int]) -> np.ndarray:
        """The probe as a Gaussian of the same 50% diameter, for coarse (survey) grids."""
        ny, nx = gpts
        lx, ly = self.specimen.extent_m
        d50 = optics.probe_size(probe.aberrations(), self.wavelength_m, probe.convergence_rad)
        sigma = d50 / (2 * math.sqrt(2 * math.log(2)))
        qx = np.fft.rfftfreq(nx, d=lx / nx)[None, :]
        qy = np.fft.fftfreq(ny, d=ly / ny)[:, None]
        return np.exp(-2 * math.pi**2 * sigma**2 * (qx**2 + qy**2))

    def _signal_map(self, probe: ProbeOptics, pixel_m: float) -> None:
        alpha_max = probe.convergence_rad + math.hypot(*probe.tilt_rad)
        fine = self.wavelength_m / (4.4 * alpha_max)  # resolves the probe intensity spectrum
        sampling = min(fine, pixel_m / 2)
        lx, ly = self.specimen.extent_m
        exact = max(lx, ly) / sampling <= MAX_GRID
        if not exact:
            sampling = max(max(lx, ly) / MAX_GRID, pixel_m / 2)
        gpts = (max(math.ceil(ly / sampling), 8), max(math.ceil(lx / sampling), 8))
        key = (probe, gpts, exact)
        if key == self._map_key:
            return
        object_k = self._object_spectrum(gpts)
        probe_k = (
            self._probe_spectrum(probe, gpts)
            if exact
            else self._gaussian_probe_spectrum(probe, gpts)
        )
        qx = np.fft.rfftfreq(gpts[1], d=lx / gpts[1])[None, :]
        qy = np.fft.fftfreq(gpts[0], d=ly / gpts[0])[:, None]
        probe_k = probe_k * np.exp(-2 * math.pi**2 * self.source_sigma_m**2 * (qx**2 + qy**2))
        area_per_pixel = (lx / gpts[1]) * (ly / gpts[0])
        self._map = np.fft.irfft2(object_k * probe_k, s=gpts) / area_per_pixel
        self._map_sampling = (lx / gpts[1], ly / gpts[0])
        self._map_key = key

    def signal(self, probe: ProbeOptics, positions_m: np.ndarray, pixel_m: float) -> np.ndarray:
        """Fraction of beam electrons reaching the detector at each specimen position (N,)."""
        self._signal_map(probe, pixel_m)
        coords = np.stack(
            [positions_m[:, 1] / self._map_sampling[1], positions_m[:, 0] / self._map_sampling[0]]
        )
        values = ndimage.map_coordinates(self._map, coords, order=1, mode="grid-wrap")
        return np.clip(values, 0.0, 1.0)
