"""Instrument imperfections of the twin: lens lag, hysteresis, drift, scan jitter, noise,
and the Ronchigram camera's own (rotation, lost contrast, gain map, dark offset).

All randomness comes from one `numpy.random.Generator` owned by the twin (seeded), and all
time is the twin's simulated clock, so the same seed gives the same frames. The camera's
gain map is fixed by its own seed (`RonchigramCameraConfig.gain_map_seed`) and draws
nothing from the twin's generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from emauto.drivers.sim.config import EffectsConfig, RonchigramCameraConfig


@dataclass
class _LensChannel:
    setpoint: float
    band_centre: float  # output of the backlash (play) operator
    start_value: float  # optical value when the last change began
    start_time_s: float


@dataclass
class LensModel:
    """Optical values that trail their setpoints: backlash hysteresis, then exponential lag.

    The backlash (play) operator of width ``w`` keeps its output unless the setpoint leaves
    the band ``[out - w/2, out + w/2]``; so after a move the optics sit ``w/2`` short of the
    setpoint on the side they came from. The optics then approach that output with time
    constant ``tau_s``.
    """

    tau_s: float
    widths: dict[str, float]
    channels: dict[str, _LensChannel] = field(default_factory=dict)

    def reset(self, values: dict[str, float], time_s: float) -> None:
        """Put every channel at rest at ``values``."""
        self.channels = {
            name: _LensChannel(value, value, value, time_s)
            for name, value in values.items()
            if name in self.widths
        }

    def command(self, name: str, setpoint: float, time_s: float) -> None:
        """A new setpoint for one lens channel at simulated time ``time_s``."""
        channel = self.channels[name]
        current = self.value(name, time_s)
        half = self.widths[name] / 2
        centre = min(max(channel.band_centre, setpoint - half), setpoint + half)
        self.channels[name] = _LensChannel(setpoint, centre, current, time_s)

    def value(self, name: str, time_s: float) -> float:
        """The optical value of a channel at ``time_s``."""
        channel = self.channels[name]
        if self.tau_s <= 0:
            return channel.band_centre
        elapsed = max(time_s - channel.start_time_s, 0.0)
        decay = math.exp(-elapsed / self.tau_s)
        return channel.band_centre + (channel.start_value - channel.band_centre) * decay

    def values(self, time_s: float) -> dict[str, float]:
        """Every channel's optical value at ``time_s``."""
        return {name: self.value(name, time_s) for name in self.channels}


class Effects:
    """Seeded imperfections applied by the twin; each can be switched off in the config."""

    def __init__(self, config: EffectsConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        angle = rng.uniform(0.0, 2.0 * math.pi)
        speed = config.drift_speed_m_per_s if config.drift else 0.0
        self.drift_velocity_m_per_s = np.array([math.cos(angle), math.sin(angle)]) * speed

    def drift_offset(self, times_s: np.ndarray) -> np.ndarray:
        """Specimen displacement (N, 2) in m at the given simulated times."""
        return np.outer(np.asarray(times_s, dtype=np.float64), self.drift_velocity_m_per_s)

    def jitter(self, positions_m: np.ndarray) -> np.ndarray:
        """Positions with Gaussian scan noise added (a copy)."""
        if not self.config.scan_jitter or self.config.scan_jitter_m == 0:
            return positions_m
        noise = self.rng.normal(0.0, self.config.scan_jitter_m, size=positions_m.shape)
        return positions_m + noise

    def detect(
        self,
        expected_e: np.ndarray,
        gain_counts_per_e: float,
        read_noise_counts: float,
        *,
        gain_map: np.ndarray | None = None,
        dark_offset_counts: float = 0.0,
    ) -> np.ndarray:
        """Detector counts (float32) for an expected number of electrons per pixel.

        ``gain_map`` (relative, the shape of the frame) multiplies each pixel's gain;
        ``dark_offset_counts`` is added to every pixel after the read noise. Both are the
        camera's, applied whatever the effects switches say (None and 0: nothing done).
        """
        expected = np.clip(np.asarray(expected_e, dtype=np.float64), 0.0, None)
        electrons = self.rng.poisson(expected) if self.config.poisson else expected
        if gain_map is None:
            counts = (gain_counts_per_e * electrons).astype(np.float32)
        else:
            counts = (gain_counts_per_e * gain_map * electrons).astype(np.float32)
        if self.config.detector_noise and read_noise_counts > 0:
            noise = self.rng.standard_normal(size=counts.shape, dtype=np.float32)
            counts += np.float32(read_noise_counts) * noise
        if dark_offset_counts != 0.0:
            counts += np.float32(dark_offset_counts)
        return counts


def camera_gain_map(camera: RonchigramCameraConfig) -> np.ndarray | None:
    """The camera's relative pixel gains (float64, ``camera.shape``), or None when uniform.

    ``1 + rms z``: ``z`` is Gaussian white noise from ``gain_map_seed``, smoothed (periodic
    Gaussian of ``gain_correlation_px`` pixels, 0: not smoothed) and scaled to zero mean and
    unit variance; gains below zero are clipped to zero.
    """
    if camera.gain_nonuniformity_rms == 0.0:
        return None
    rng = np.random.default_rng(camera.gain_map_seed)
    field = rng.standard_normal(camera.shape)
    if camera.gain_correlation_px > 0:
        field = ndimage.gaussian_filter(field, camera.gain_correlation_px, mode="wrap")
    field = (field - field.mean()) / max(float(field.std()), 1e-12)
    gains = np.clip(1.0 + camera.gain_nonuniformity_rms * field, 0.0, None)
    gains.flags.writeable = False
    return gains


def rotate_on_camera(
    image: np.ndarray, rotation_rad: float, centre_px: tuple[float, float]
) -> np.ndarray:
    """``image`` [y, x] as a camera turned counter-clockwise by ``rotation_rad`` sees it.

    The camera pixel at (u, v) from ``centre_px`` (column, row offsets) sees the angle
    ``(u cos r - v sin r, u sin r + v cos r)`` of ``image``: bilinear interpolation, edge
    values beyond the image. Sums are kept to interpolation error.
    """
    c, s = math.cos(rotation_rad), math.sin(rotation_rad)
    # (row, col) of the output -> (row, col) of the input: row_in = c v + s u, col_in = -s v + c u
    matrix = np.array([[c, s], [-s, c]])
    centre = np.array([centre_px[1], centre_px[0]])  # (row, col)
    offset = centre - matrix @ centre
    return ndimage.affine_transform(
        np.asarray(image, dtype=np.float64), matrix, offset=offset, order=1, mode="nearest"
    )


def reduce_contrast(probability: np.ndarray, contrast_scale: float) -> np.ndarray:
    """``c p + (1 - c) mean(p)``: the modulation scaled by ``contrast_scale``, the rest flat
    over the camera; the sum (electrons) is kept."""
    flat = float(np.mean(probability))
    return contrast_scale * probability + (1.0 - contrast_scale) * flat
