"""Configuration of the simulated microscope (``sim://``): camera, detector, effects."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from emauto.units import StrictModel


class RonchigramCameraConfig(StrictModel):
    """The Ronchigram camera of the twin.

    The camera covers ``±half_angle_rad`` in ``shape`` pixels. The simulation grid is
    ``oversample`` times finer in angle and its Nyquist angle is 1.5 x ``half_angle_rad``,
    so that the camera sits inside abTEM's 2/3 anti-aliasing cut-off.
    """

    shape: tuple[int, int] = (128, 128)
    half_angle_rad: float = Field(default=0.060, gt=0.005, lt=0.5)
    oversample: int = Field(default=2, ge=1, le=8)
    gain_counts_per_e: float = Field(default=1.0, gt=0)
    read_noise_counts: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _square(self) -> RonchigramCameraConfig:
        if self.shape[0] != self.shape[1] or self.shape[0] < 16 or self.shape[0] % 2:
            raise ValueError(f"shape must be square, even and >= 16 pixels, got {self.shape}")
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
    """The simulated microscope (``sim://``)."""

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
