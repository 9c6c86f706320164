"""Configuration of the simulated microscope (``sim://``): camera, detector, effects."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from emauto.drivers.sim.knobs import HYSTERESIS_WIDTH
from emauto.units import StrictModel

#: The twin's lens channels (corrector, deflectors): the knobs that `SimConfig.flipped_knobs`
#: may name.
LENS_CHANNELS = tuple(HYSTERESIS_WIDTH)


class RonchigramCameraConfig(StrictModel):
    """The Ronchigram camera of the twin.

    The camera covers ``±half_angle_rad`` in ``shape`` pixels. The simulation grid is
    ``oversample`` times finer in angle and its Nyquist angle is 1.5 x ``half_angle_rad``,
    so that the camera sits inside abTEM's 2/3 anti-aliasing cut-off.

    Imperfections of a real camera (the defaults: none, every frame as without them):

    - ``rotation_rad``: the camera's axes are turned counter-clockwise by this angle from
      the corrector's x/y axes (a feature at azimuth phi in angle space is seen at
      ``phi - rotation_rad`` on the camera); describe() and the frames do not say so.
    - ``pixel_angle_error``: the angular pixel that describe() and each frame's calibration
      report is ``(1 + pixel_angle_error)`` x the true one (a miscalibrated mrad/pixel).
    - ``contrast_scale``: the fraction of the Ronchigram's modulation that reaches the
      camera; the rest is spread flat over it (a diffuse background: inelastic scattering,
      veiling glare). Electrons are conserved: ``p -> c p + (1 - c) mean(p)``.
    - ``dark_offset_counts``: a constant added to every pixel (counts), on top of the
      Gaussian read noise ``read_noise_counts``.
    - ``gain_nonuniformity_rms``: each pixel's gain is ``gain_counts_per_e x (1 + rms z)``,
      ``z`` a fixed zero-mean, unit-variance Gaussian field (seed ``gain_map_seed``,
      correlation length ``gain_correlation_px`` pixels, 0 = independent pixels), clipped at
      zero gain; the map is the camera's, the same after every restart.

    The order on the camera: rotation, contrast, then detection (shot noise, gain map, read
    noise, dark offset).
    """

    shape: tuple[int, int] = (128, 128)
    half_angle_rad: float = Field(default=0.060, gt=0.005, lt=0.5)
    oversample: int = Field(default=2, ge=1, le=8)
    gain_counts_per_e: float = Field(default=1.0, gt=0)
    read_noise_counts: float = Field(default=0.5, ge=0, le=1e6)
    rotation_rad: float = Field(default=0.0, ge=-math.pi, le=math.pi)
    pixel_angle_error: float = Field(default=0.0, gt=-0.5, lt=0.5, description="fraction")
    contrast_scale: float = Field(default=1.0, gt=0.0, le=1.0)
    dark_offset_counts: float = Field(default=0.0, ge=0.0, le=1e6)
    gain_nonuniformity_rms: float = Field(default=0.0, ge=0.0, le=0.5, description="fraction")
    gain_correlation_px: float = Field(default=0.0, ge=0.0, le=64.0)
    gain_map_seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _square(self) -> RonchigramCameraConfig:
        if self.shape[0] != self.shape[1] or self.shape[0] < 16 or self.shape[0] % 2:
            raise ValueError(f"shape must be square, even and >= 16 pixels, got {self.shape}")
        if self.shape[0] > 4096:
            raise ValueError(f"shape must be at most 4096 pixels a side, got {self.shape}")
        return self


class ScanDetectorConfig(StrictModel):
    """An annular scanned detector (ADF/HAADF), collection angles in rad."""

    inner_angle_rad: float = Field(default=0.080, ge=0)
    outer_angle_rad: float = Field(default=0.200, gt=0)
    gain_counts_per_e: float = Field(default=1.0, gt=0)
    read_noise_counts: float = Field(default=0.2, ge=0)
    source_fwhm_m: float = Field(default=0.5e-10, ge=0, description="effective source blur")

    @model_validator(mode="after")
    def _ordered(self) -> ScanDetectorConfig:
        if not self.inner_angle_rad < self.outer_angle_rad:
            raise ValueError("inner_angle_rad must be < outer_angle_rad")
        return self


class EffectsConfig(StrictModel):
    """Instrument imperfections of the twin; each is switchable and seeded.

    - ``poisson``: electron counting (shot) noise at the delivered dose.
    - ``detector_noise``: detector gain and Gaussian read noise.
    - ``drift``: constant specimen drift at ``drift_speed_m_per_s`` in a seeded direction.
    - ``lens_lag``: optics settle exponentially to a new setpoint with ``lens_tau_s``.
    - ``hysteresis``: backlash of width ``hysteresis_scale`` x the knob's band in
      `emauto.drivers.sim.knobs.HYSTERESIS_WIDTH`; the optical value trails the setpoint on
      the side it was approached from.
    - ``scan_jitter``: Gaussian probe-position noise ``scan_jitter_m`` (rms, per axis).
    """

    poisson: bool = True
    detector_noise: bool = True
    drift: bool = True
    lens_lag: bool = True
    hysteresis: bool = True
    scan_jitter: bool = True
    drift_speed_m_per_s: float = Field(default=5e-12, ge=0)
    lens_tau_s: float = Field(default=0.02, ge=0)
    hysteresis_scale: float = Field(default=1.0, ge=0, le=100)
    scan_jitter_m: float = Field(default=5e-12, ge=0)

    @classmethod
    def none(cls) -> EffectsConfig:
        """An ideal instrument: every effect off."""
        return cls(
            poisson=False,
            detector_noise=False,
            drift=False,
            lens_lag=False,
            hysteresis=False,
            scan_jitter=False,
        )


class SimConfig(StrictModel):
    """The simulated microscope (``sim://``).

    Column imperfections (the defaults: none, every frame as without them):

    - ``aperture_offset_rad``: the probe-forming aperture sits off the optic axis by
      (x, y) rad in angle space (added to the beam tilt, which moves the aperture the same
      way); the aberrations stay centred on the axis. Ground truth (Strehl ratio) is still
      taken over the centred aperture.
    - ``flipped_knobs``: lens channels whose optics move opposite to their setpoint (a
      corrector axis with the wrong sign in the driver's calibration): the optical value is
      ``-setpoint``; read() reports the setpoint, ground truth the optics.
    """

    specimen: str = "amorphous_carbon"
    fidelity: Literal["fast", "multislice"] = "fast"
    seed: int = Field(default=0, ge=0)
    energy_eV: float = Field(default=200e3, ge=20e3, le=1.5e6)
    beam_current_A: float = Field(default=20e-12, gt=0, le=1e-6)
    ronchigram: RonchigramCameraConfig = RonchigramCameraConfig()
    adf: ScanDetectorConfig = ScanDetectorConfig()
    effects: EffectsConfig = EffectsConfig()
    fast_slabs: int = Field(default=1, ge=1, le=64, description="slabs in the fast path")
    multislice_slice_m: float = Field(default=2e-10, gt=0, le=2e-9)
    stage_speed_m_per_s: float = Field(default=20e-6, gt=0)
    command_latency_s: float = Field(default=1e-3, ge=0, description="sim time per command")
    initial: dict[str, float] = Field(default_factory=dict, description="initial knob values")
    cache_dir: Path | None = None
    aperture_offset_rad: tuple[float, float] = (0.0, 0.0)
    flipped_knobs: tuple[str, ...] = ()

    @field_validator("aperture_offset_rad")
    @classmethod
    def _small_offset(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(v) and abs(v) <= 0.02 for v in value):
            raise ValueError(f"each component must be finite and within ±0.02 rad, got {value}")
        return value

    @field_validator("flipped_knobs")
    @classmethod
    def _lens_channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in LENS_CHANNELS]
        if unknown:
            raise ValueError(f"unknown lens channel(s) {unknown}; expected some of {LENS_CHANNELS}")
        if len(set(value)) != len(value):
            raise ValueError(f"a knob is named twice in {value}")
        return value
