"""A resolution estimate from the power spectrum: the finest detail above the noise.

Shot noise is white, so the power spectrum's noise floor is flat; it is estimated as the
median power in the outer band (0.8-1.0 of Nyquist along the shorter axis). The resolution
is ``1 / k_max`` where ``k_max`` is the largest spatial frequency at which some power
spectrum pixel (a Bragg spot or other structure) stands ``min_snr`` times above that floor.
An exponential noise power exceeds ``t x floor`` with probability ``exp(-t / ln 2)``; the
default ``min_snr = 25`` leaves about one false pixel in 10^15.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emauto.analysis.lattice import power_spectrum


@dataclass(frozen=True)
class Resolution:
    """Finest resolved period (pixels, and metres when the pixel is known)."""

    resolution_px: float
    nyquist_px: float = 2.0
    #: half a frequency bin of the power spectrum, as a period (px): res^2 / (2 N)
    sigma_px: float = 0.0

    def as_dict(self, pixel_m: float | None) -> dict[str, object]:
        out: dict[str, object] = {
            "resolution_px": round(self.resolution_px, 4),
            "resolution_sigma_px": round(self.sigma_px, 4),
        }
        if pixel_m is not None:
            out["resolution_m"] = self.resolution_px * pixel_m
            out["resolution_sigma_m"] = self.sigma_px * pixel_m
        return out


def estimate_resolution(image: np.ndarray, *, min_snr: float = 25.0) -> Resolution:
    """The finest period (px) with power ``min_snr`` above the white-noise floor."""
    power = power_spectrum(image)
    ny, nx = power.shape
    ky, kx = np.indices(power.shape)
    fx = (kx - nx // 2) / nx
    fy = (ky - ny // 2) / ny
    frequency = np.hypot(fx, fy)  # cycles per pixel
    outer = (frequency > 0.4) & (frequency <= 0.5)
    floor = float(np.median(power[outer])) if np.any(outer) else float(np.median(power))
    floor = max(floor, 1e-30)
    significant = (power > min_snr * floor) & (frequency > 2.0 / max(ny, nx))
    if not np.any(significant):
        return Resolution(resolution_px=float(max(ny, nx)), sigma_px=float(max(ny, nx)) / 2)
    k_max = float(frequency[significant].max())
    return Resolution(resolution_px=1.0 / k_max, sigma_px=1.0 / (k_max**2 * 2 * max(ny, nx)))
