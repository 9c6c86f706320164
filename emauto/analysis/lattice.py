"""Lattice spacings and orientation from the image's power spectrum.

The image is Hann-windowed and Fourier transformed; Bragg peaks are local maxima of the
power spectrum that stand ``min_snr`` times above the spectrum's median at their radius.
The two strongest non-collinear peaks of shortest length are the reciprocal basis; their
positions are refined by a parabola through the neighbouring pixels. Spacings are
``1 / |g|`` and the orientation is the angle of ``g`` in [0, pi) rad, counter-clockwise from
+x with y pointing up (image row 0 at the top).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emauto.analysis.image import as_image
from emauto.errors import NoLatticeError


@dataclass(frozen=True)
class Lattice:
    """Reciprocal basis ``g_per_px`` (2, 2 as (gx, gy) in 1/px) and what follows from it."""

    g_per_px: np.ndarray
    spacings_px: tuple[float, float]
    angles_rad: tuple[float, float]
    snr: tuple[float, float]
    n_peaks: int
    #: every strong peak's g (M, 2, one of each +-g, strongest first), 1/px
    peaks_g_per_px: np.ndarray | None = None

    def as_dict(self, pixel_m: float | None) -> dict[str, object]:
        """JSON-ready figures; spacings in metres too when ``pixel_m`` is known."""
        out: dict[str, object] = {
            "spacings_px": [round(s, 4) for s in self.spacings_px],
            "angles_rad": [round(a, 5) for a in self.angles_rad],
            "angle_between_rad": round(abs(self.angles_rad[1] - self.angles_rad[0]), 5),
            "snr": [round(s, 1) for s in self.snr],
            "n_peaks": self.n_peaks,
        }
        if pixel_m is not None:
            out["spacings_m"] = [s * pixel_m for s in self.spacings_px]
        return out


def power_spectrum(image: np.ndarray) -> np.ndarray:
    """Centred power spectrum ``[ky, kx]`` of the Hann-windowed, mean-removed image."""
    data = as_image(image)
    ny, nx = data.shape
    window = np.outer(np.hanning(ny), np.hanning(nx))
    spectrum = np.fft.fftshift(np.fft.fft2((data - data.mean()) * window))
    return np.abs(spectrum) ** 2


def _radial_median(power: np.ndarray, radius: np.ndarray) -> np.ndarray:
    bins = radius.astype(int)
    medians = np.zeros(bins.max() + 1)
    order = np.argsort(bins.ravel())
    sorted_bins = bins.ravel()[order]
    values = power.ravel()[order]
    edges = np.searchsorted(sorted_bins, np.arange(bins.max() + 2))
    for b in range(bins.max() + 1):
        chunk = values[edges[b] : edges[b + 1]]
        medians[b] = np.median(chunk) if len(chunk) else 0.0
    return medians[bins]


def _subpixel(power: np.ndarray, ky: int, kx: int) -> tuple[float, float]:
    ny, nx = power.shape

    def vertex(a: float, b: float, c: float) -> float:
        den = a - 2 * b + c
        return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))

    lp = np.log(power + 1e-30)
    dx = vertex(lp[ky, (kx - 1) % nx], lp[ky, kx], lp[ky, (kx + 1) % nx])
    dy = vertex(lp[(ky - 1) % ny, kx], lp[ky, kx], lp[(ky + 1) % ny, kx])
    return kx + dx, ky + dy


def find_lattice(image: np.ndarray, *, min_snr: float = 20.0, min_radius_px: int = 3) -> Lattice:
    """The 2-D lattice of ``image``; raises `NoLatticeError` when fewer than two
    non-collinear Bragg peaks stand ``min_snr`` above the spectrum's radial median."""
    from skimage.feature import peak_local_max

    power = power_spectrum(image)
    ny, nx = power.shape
    ky, kx = np.indices(power.shape)
    cy, cx = ny // 2, nx // 2
    radius = np.hypot((ky - cy) * (nx / ny), kx - cx)
    snr_map = power / np.maximum(_radial_median(power, radius), 1e-30)
    snr_map[radius < min_radius_px] = 0.0
    peaks = peak_local_max(snr_map, min_distance=2, threshold_abs=min_snr, exclude_border=False)
    if len(peaks) < 2:
        raise NoLatticeError(
            f"no lattice: expected at least 2 Bragg peaks with SNR >= {min_snr:g} in the "
            f"power spectrum, found {len(peaks)}"
        )
    g = []
    for py, px in peaks:
        sx, sy = _subpixel(power, int(py), int(px))
        g.append(((sx - cx) / nx, (sy - cy) / ny))
    g_arr = np.array(g)
    snrs = snr_map[peaks[:, 0], peaks[:, 1]]
    upper = (g_arr[:, 1] < 0) | ((g_arr[:, 1] == 0) & (g_arr[:, 0] > 0))  # one of each +-g
    g_arr, snrs = g_arr[upper], snrs[upper]
    strong = np.argsort(-snrs)[:40]
    g_arr, snrs = g_arr[strong], snrs[strong]
    all_g = g_arr
    g_arr, snrs = g_arr[:8], snrs[:8]
    lengths = np.hypot(g_arr[:, 0], g_arr[:, 1])
    first = int(np.argmin(lengths + 1e-9 * -snrs))
    second = None
    for index in np.argsort(lengths):
        if index == first:
            continue
        a, b = g_arr[first], g_arr[index]
        cross = abs(a[0] * b[1] - a[1] * b[0]) / (lengths[first] * lengths[index])
        if cross > math.sin(math.radians(15)):
            second = int(index)
            break
    if second is None:
        raise NoLatticeError(
            "no 2-D lattice: the Bragg peaks found are collinear (one set of fringes only)"
        )
    basis = g_arr[[first, second]]
    spacings = tuple(float(1 / np.hypot(*v)) for v in basis)
    angles = tuple(float(math.atan2(-v[1], v[0]) % math.pi) for v in basis)
    return Lattice(
        g_per_px=basis,
        spacings_px=(spacings[0], spacings[1]),
        angles_rad=(angles[0], angles[1]),
        snr=(float(snrs[first]), float(snrs[second])),
        n_peaks=len(peaks),
        peaks_g_per_px=all_g,
    )
