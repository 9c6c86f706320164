"""The fast Ronchigram engine: cached transmission functions, FFT propagation, torch on CPU.

Physics: the specimen is a stack of ``n_slabs`` phase objects (abTEM projected potentials,
cached on disk), band-limited to abTEM's 2/3 anti-aliasing cut-off; with the probe inside
the 1/3 of Nyquist that remains, the exit wave is alias-free up to the grid's Nyquist angle.
Between slabs the wave is Fresnel-propagated. With one slab this is the projection
(phase-object) approximation. The camera records the far-field intensity.

Speed: the aberration phase is one matrix-vector product over the pixels inside the
aperture (a precomputed `optics.chi_basis`), then two (or 2 x n_slabs) complex64 FFTs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional

from emauto import optics
from emauto.drivers.sim.probe import ProbeOptics, RonchigramGrid, aperture_pixels
from emauto.drivers.sim.specimens import Specimen


def band_limit(transmission: np.ndarray, cutoff_fraction: float = 2.0 / 3.0) -> np.ndarray:
    """Zero a transmission function's spatial frequencies above ``cutoff x`` Nyquist."""
    ny, nx = transmission.shape[-2:]
    fy = np.fft.fftfreq(ny)[:, None] * 2
    fx = np.fft.fftfreq(nx)[None, :] * 2
    keep = (fx**2 + fy**2) <= cutoff_fraction**2
    spectrum = np.fft.fft2(transmission, axes=(-2, -1))
    return np.fft.ifft2(spectrum * keep, axes=(-2, -1)).astype(np.complex64)


class FastRonchigramEngine:
    """Ronchigrams of a cached specimen at any probe position, about 1 ms each."""

    def __init__(self, specimen: Specimen, grid: RonchigramGrid, energy_eV: float) -> None:
        self.grid = grid
        n = grid.gpts
        if min(specimen.gpts) < 1:
            raise ValueError("empty specimen")
        if n % 2:
            raise ValueError(f"the simulation grid must have an even size, got {n}")
        self._pad = n // 2 + 1
        self.load_transmission(band_limit(specimen.transmission(energy_eV)))
        self._specimen_gpts = specimen.gpts
        self._sampling = specimen.sampling_m
        alpha_x, alpha_y = grid.angles()
        self._alpha = (alpha_x.ravel(), alpha_y.ravel())
        self._basis_full = optics.chi_basis(alpha_x.ravel(), alpha_y.ravel()).astype(np.float64)
        self._aperture_key: tuple[float, float, float] | None = None
        self._inside = np.zeros(0, dtype=np.int64)
        self._basis = torch.zeros((len(optics.ABERRATION_NAMES), 0), dtype=torch.float64)
        k2 = (alpha_x**2 + alpha_y**2) / grid.wavelength_m**2
        nyquist = 1.0 / (2.0 * grid.sampling_m)
        antialias = k2 <= (2.0 / 3.0 * nyquist) ** 2
        dz = specimen.slab_thickness_m
        propagator = np.exp(-1j * math.pi * grid.wavelength_m * dz * k2) * antialias
        self._propagator = torch.from_numpy(propagator.astype(np.complex64))
        self.n_slabs = self._padded.shape[0]

    def load_transmission(self, transmission: np.ndarray) -> None:
        """Use these (n_slabs, ny, nx) transmission functions (already band-limited)."""
        pad = self._pad
        padded = np.pad(transmission, ((0, 0), (pad, pad), (pad, pad)), mode="wrap")
        # (-1)^(i+j) on the last slab moves the far field's zero frequency to the centre
        # (an fftshift for free); a window's offset only flips the sign of the whole wave
        rows, cols = np.indices(padded.shape[1:])
        padded[-1] *= (1 - 2 * ((rows + cols) % 2)).astype(padded.real.dtype)
        self._padded = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.complex64))

    def _aperture(self, probe: ProbeOptics) -> None:
        key = (probe.convergence_rad, *probe.tilt_rad)
        if key != self._aperture_key:
            alpha_x, alpha_y = self._alpha
            self._inside = aperture_pixels(alpha_x, alpha_y, probe.convergence_rad, probe.tilt_rad)
            # float32 basis: phases are scaled in float64 first (see `ronchigram`), then the
            # float32 product keeps ~1e-4 rad accuracy at 1000 rad of aberration phase
            self._basis = torch.from_numpy(self._basis_full[:, self._inside].astype(np.float32))
            wavenumbers = np.stack([alpha_x[self._inside], alpha_y[self._inside]])
            self._k_inside32 = torch.from_numpy(wavenumbers / self.grid.wavelength_m).float()
            self._index = torch.from_numpy(self._inside)
            self._amplitude = torch.full(
                (len(self._inside),), 1.0 / math.sqrt(max(len(self._inside), 1))
            )
            self._aperture_key = key
            # the probe's spectrum: zero outside the aperture, rewritten inside on every call
            n = self.grid.gpts
            self._wave_k = torch.zeros(n * n, dtype=torch.complex64)

    def _window(self, position_m: tuple[float, float]) -> tuple[torch.Tensor, float, float]:
        """Transmission window (n_slabs, gpts, gpts) around a position, and the sub-grid offset.

        Returns the window and the probe position within the window (m).
        """
        ny, nx = self._specimen_gpts
        n = self.grid.gpts
        px, py = position_m[0] / self._sampling, position_m[1] / self._sampling
        ix, iy = math.floor(px), math.floor(py)
        x0 = (ix % nx) + self._pad - n // 2
        y0 = (iy % ny) + self._pad - n // 2
        window = self._padded[:, y0 : y0 + n, x0 : x0 + n]
        return window, (n // 2 + px - ix) * self._sampling, (n // 2 + py - iy) * self._sampling

    def ronchigram(self, probe: ProbeOptics, position_m: tuple[float, float]) -> np.ndarray:
        """Camera image (float64, [y, x]): the fraction of beam electrons in each pixel.

        ``position_m`` is the specimen point (x, y) under the probe, in m.
        """
        self._aperture(probe)
        window, wx, wy = self._window(position_m)
        n = self.grid.gpts
        scale = 2 * math.pi / self.grid.wavelength_m
        coefficients = np.asarray(probe.coefficients_m, dtype=np.float64)
        used = np.flatnonzero(coefficients)
        weights = torch.from_numpy((scale * coefficients[used]).astype(np.float32))
        phase = weights @ self._basis[torch.from_numpy(used)]
        # sub-pixel position of the probe within the window: a linear phase ramp
        shift = torch.tensor([2 * math.pi * wx, 2 * math.pi * wy], dtype=torch.float32)
        phase += shift @ self._k_inside32
        self._wave_k.index_put_((self._index,), torch.polar(self._amplitude, -phase))
        # a unit-norm spectrum and orthonormal FFTs give a unit-norm wave
        wave = torch.fft.ifft2(self._wave_k.reshape(n, n), norm="ortho")
        for slab in range(self.n_slabs):
            wave = wave * window[slab]
            if slab < self.n_slabs - 1:
                wave = torch.fft.ifft2(torch.fft.fft2(wave) * self._propagator)
        far_field = torch.fft.fft2(wave, norm="ortho")  # centred, see __init__
        start, crop = (n - self.grid.crop) // 2, self.grid.crop
        camera_field = torch.view_as_real(far_field[start : start + crop, start : start + crop])
        intensity = camera_field.square().sum(-1)
        b = self.grid.oversample
        binned = functional.avg_pool2d(intensity[None, None], b)[0, 0] * (b * b)
        return binned.numpy().astype(np.float64)
