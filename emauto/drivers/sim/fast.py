"""The fast Ronchigram engine: cached transmission functions, FFT propagation, torch on CPU.

Physics: the specimen is a stack of ``n_slabs`` phase objects (abTEM projected potentials,
cached on disk), band-limited to abTEM's 2/3 anti-aliasing cut-off; with the probe inside
the 1/3 of Nyquist that remains, the exit wave is alias-free up to the grid's Nyquist angle.
Between slabs the wave is Fresnel-propagated. With one slab this is the projection
(phase-object) approximation. The camera records the far-field intensity.

Speed: the aberration phase is one matrix-vector product over the pixels inside the
aperture (a precomputed `optics.chi_basis`), then two (or 2 x n_slabs) complex64 FFTs.
`PaddedTransmission`, `ApertureBasis` and `fresnel_propagator` are shared with the batched
engine (`emauto.drivers.sim.batched`), which computes many Ronchigrams in one FFT call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional

from emauto import optics
from emauto.drivers.sim.probe import (
    ProbeOptics,
    RonchigramGrid,
    aperture_pixels,
    stack_mid_depth_m,
)
from emauto.drivers.sim.specimens import Specimen


def band_limit(transmission: np.ndarray, cutoff_fraction: float = 2.0 / 3.0) -> np.ndarray:
    """Zero a transmission function's spatial frequencies above ``cutoff x`` Nyquist."""
    ny, nx = transmission.shape[-2:]
    fy = np.fft.fftfreq(ny)[:, None] * 2
    fx = np.fft.fftfreq(nx)[None, :] * 2
    keep = (fx**2 + fy**2) <= cutoff_fraction**2
    spectrum = np.fft.fft2(transmission, axes=(-2, -1))
    return np.fft.ifft2(spectrum * keep, axes=(-2, -1)).astype(np.complex64)


@dataclass(frozen=True, eq=False)
class PaddedTransmission:
    """A specimen's band-limited transmission functions, wrap-padded so that the window
    under any probe position is one slice.

    ``padded`` is complex64 (n_slabs, ny + 2 pad, nx + 2 pad), [y, x]; its last slab is
    multiplied by (-1)^(i+j), which centres the far field (an fftshift for free; a window's
    offset only flips the sign of the whole wave). Compared by identity.
    """

    padded: torch.Tensor
    specimen_gpts: tuple[int, int]  # (ny, nx) of the periodic specimen
    sampling_m: float  # square pixel (m)
    slab_thickness_m: float
    pad: int

    @classmethod
    def build(
        cls, transmission: np.ndarray, sampling_m: float, slab_thickness_m: float, gpts: int
    ) -> PaddedTransmission:
        """Pad (n_slabs, ny, nx) transmission functions (already band-limited) for windows
        of ``gpts`` x ``gpts`` pixels."""
        pad = gpts // 2 + 1
        padded = np.pad(transmission, ((0, 0), (pad, pad), (pad, pad)), mode="wrap")
        rows, cols = np.indices(padded.shape[1:])
        padded[-1] *= (1 - 2 * ((rows + cols) % 2)).astype(padded.real.dtype)
        ny, nx = transmission.shape[-2:]
        return cls(
            padded=torch.from_numpy(np.ascontiguousarray(padded, dtype=np.complex64)),
            specimen_gpts=(int(ny), int(nx)),
            sampling_m=float(sampling_m),
            slab_thickness_m=float(slab_thickness_m),
            pad=pad,
        )

    @property
    def n_slabs(self) -> int:
        """Number of slabs."""
        return int(self.padded.shape[0])

    def locate(self, position_m: tuple[float, float], gpts: int) -> tuple[int, int, float, float]:
        """The ``gpts`` window around a specimen point (x, y) (m): its first row and column
        in ``padded``, and the probe position (x, y) within the window (m)."""
        ny, nx = self.specimen_gpts
        px, py = position_m[0] / self.sampling_m, position_m[1] / self.sampling_m
        ix, iy = math.floor(px), math.floor(py)
        x0 = (ix % nx) + self.pad - gpts // 2
        y0 = (iy % ny) + self.pad - gpts // 2
        wx = (gpts // 2 + px - ix) * self.sampling_m
        wy = (gpts // 2 + py - iy) * self.sampling_m
        return y0, x0, wx, wy


@dataclass(frozen=True, eq=False)
class ApertureBasis:
    """The grid pixels inside a (tilted) probe-forming aperture and chi's basis there.

    float32 basis: phases are scaled in float64 first (see `FastRonchigramEngine.ronchigram`),
    then the float32 product keeps ~1e-4 rad accuracy at 1000 rad of aberration phase.
    """

    key: tuple[float, float, float]  # (convergence_rad, tilt_x_rad, tilt_y_rad)
    inside: np.ndarray  # int64 (n_in,): flat indices into the (gpts, gpts) spectrum
    basis: torch.Tensor  # float32 (n_aberrations, n_in): chi basis (rad^(n+1))
    wavenumbers: torch.Tensor  # float32 (2, n_in): (kx, ky) in 1/m
    amplitude: torch.Tensor  # float32 (n_in,): 1/sqrt(n_in), a unit-norm spectrum

    @classmethod
    def build(
        cls,
        alpha: tuple[np.ndarray, np.ndarray],
        basis_full: np.ndarray,
        wavelength_m: float,
        convergence_rad: float,
        tilt_rad: tuple[float, float],
    ) -> ApertureBasis:
        """From the grid's flat angles ``alpha`` (rad) and ``chi_basis`` over all of them."""
        alpha_x, alpha_y = alpha
        inside = aperture_pixels(alpha_x, alpha_y, convergence_rad, tilt_rad)
        wavenumbers = np.stack([alpha_x[inside], alpha_y[inside]]) / wavelength_m
        return cls(
            key=(convergence_rad, *tilt_rad),
            inside=inside,
            basis=torch.from_numpy(basis_full[:, inside].astype(np.float32)),
            wavenumbers=torch.from_numpy(wavenumbers).float(),
            amplitude=torch.full((len(inside),), 1.0 / math.sqrt(max(len(inside), 1))),
        )


@lru_cache(maxsize=8)
def grid_chi_basis(grid: RonchigramGrid) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The grid's flat angles (alpha_x, alpha_y) (rad) and `optics.chi_basis` over them
    (float64 (n_aberrations, gpts^2)); read-only, cached per grid: shared by every engine
    on that grid (14 MB at 384^2, once instead of once per twin of a batch)."""
    alpha_x, alpha_y = grid.angles()
    alpha = (alpha_x.ravel(), alpha_y.ravel())
    basis = optics.chi_basis(*alpha).astype(np.float64)
    for array in (*alpha, basis):
        array.flags.writeable = False
    return alpha, basis


def fresnel_propagator(grid: RonchigramGrid, slab_thickness_m: float) -> torch.Tensor:
    """Fresnel propagator over one slab (complex64 (gpts, gpts), unshifted), zero beyond the
    2/3 anti-aliasing cut-off."""
    alpha_x, alpha_y = grid.angles()
    k2 = (alpha_x**2 + alpha_y**2) / grid.wavelength_m**2
    nyquist = 1.0 / (2.0 * grid.sampling_m)
    antialias = k2 <= (2.0 / 3.0 * nyquist) ** 2
    propagator = np.exp(-1j * math.pi * grid.wavelength_m * slab_thickness_m * k2) * antialias
    return torch.from_numpy(propagator.astype(np.complex64))


class FastRonchigramEngine:
    """Ronchigrams of a cached specimen at any probe position, about 1 ms each."""

    def __init__(self, specimen: Specimen, grid: RonchigramGrid, energy_eV: float) -> None:
        self.grid = grid
        n = grid.gpts
        if min(specimen.gpts) < 1:
            raise ValueError("empty specimen")
        if n % 2:
            raise ValueError(f"the simulation grid must have an even size, got {n}")
        self._slab_thickness_m = specimen.slab_thickness_m
        self._sampling = specimen.sampling_m
        self.load_transmission(band_limit(specimen.transmission(energy_eV)))
        self._alpha, self._basis_full = grid_chi_basis(grid)
        self._aperture_basis: ApertureBasis | None = None
        self._propagator = fresnel_propagator(grid, specimen.slab_thickness_m)
        self.n_slabs = self.transmission.n_slabs

    def load_transmission(self, transmission: np.ndarray) -> None:
        """Use these (n_slabs, ny, nx) transmission functions (already band-limited)."""
        self.share_transmission(
            PaddedTransmission.build(
                transmission, self._sampling, self._slab_thickness_m, self.grid.gpts
            )
        )

    def share_transmission(self, transmission: PaddedTransmission) -> None:
        """Use an already padded transmission (shared, not copied: e.g. one specimen for
        many twins of a batch). Its grid and slab thickness must be this engine's."""
        self.transmission = transmission
        self.n_slabs = transmission.n_slabs

    def aperture_basis(self, probe: ProbeOptics) -> ApertureBasis:
        """The aperture pixels and chi basis for this probe (cached for the last aperture)."""
        key = (probe.convergence_rad, *probe.tilt_rad)
        cached = self._aperture_basis
        if cached is None or cached.key != key:
            cached = ApertureBasis.build(
                self._alpha,
                self._basis_full,
                self.grid.wavelength_m,
                probe.convergence_rad,
                probe.tilt_rad,
            )
            self._aperture_basis = cached
            # the probe's spectrum: zero outside the aperture, rewritten inside on every call
            n = self.grid.gpts
            self._wave_k = torch.zeros(n * n, dtype=torch.complex64)
            self._index = torch.from_numpy(cached.inside)
        return cached

    def ronchigram(self, probe: ProbeOptics, position_m: tuple[float, float]) -> np.ndarray:
        """Camera image (float64, [y, x]): the fraction of beam electrons in each pixel.

        ``position_m`` is the specimen point (x, y) under the probe, in m.
        """
        t = self.transmission
        probe = probe.at_depth(-stack_mid_depth_m([t.slab_thickness_m] * t.n_slabs))
        aperture = self.aperture_basis(probe)
        n = self.grid.gpts
        y0, x0, wx, wy = self.transmission.locate(position_m, n)
        window = self.transmission.padded[:, y0 : y0 + n, x0 : x0 + n]
        scale = 2 * math.pi / self.grid.wavelength_m
        coefficients = np.asarray(probe.coefficients_m, dtype=np.float64)
        used = np.flatnonzero(coefficients)
        weights = torch.from_numpy((scale * coefficients[used]).astype(np.float32))
        phase = weights @ aperture.basis[torch.from_numpy(used)]
        # sub-pixel position of the probe within the window: a linear phase ramp
        shift = torch.tensor([2 * math.pi * wx, 2 * math.pi * wy], dtype=torch.float32)
        phase += shift @ aperture.wavenumbers
        self._wave_k.index_put_((self._index,), torch.polar(aperture.amplitude, -phase))
        # a unit-norm spectrum and orthonormal FFTs give a unit-norm wave
        wave = torch.fft.ifft2(self._wave_k.reshape(n, n), norm="ortho")
        for slab in range(self.n_slabs):
            wave = wave * window[slab]
            if slab < self.n_slabs - 1:
                wave = torch.fft.ifft2(torch.fft.fft2(wave) * self._propagator)
        far_field = torch.fft.fft2(wave, norm="ortho")  # centred, see PaddedTransmission
        start, crop = (n - self.grid.crop) // 2, self.grid.crop
        camera_field = torch.view_as_real(far_field[start : start + crop, start : start + crop])
        intensity = camera_field.square().sum(-1)
        b = self.grid.oversample
        binned = functional.avg_pool2d(intensity[None, None], b)[0, 0] * (b * b)
        return binned.numpy().astype(np.float64)
