"""The simulated microscope: the Microscope contract over the abTEM digital twin.

The twin keeps a simulated clock: commands cost ``command_latency_s``, acquisitions cost
their exposure, dwell, settling and flyback time. Lens lag, drift and stage motion follow
that clock, so the same seed and the same command sequence give the same frames.

Ground truth for training (``true_aberrations``, ``true_probe``) is twin-only: it reads
the optics as they are, after lag and hysteresis, not as they were set.

A real instrument's imperfections (a rotated or miscalibrated camera, lost contrast, dark
offset, gain map, an off-centre aperture, a corrector axis of the wrong sign) are
`SimConfig` fields, off by default (docs/twin.md); the named perturbed twins of the
robustness suite are `emauto.drivers.sim.perturbations`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emauto import optics
from emauto.drivers.sim.adf import FastADFEngine
from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.effects import (
    Effects,
    LensModel,
    camera_gain_map,
    reduce_contrast,
    rotate_on_camera,
)
from emauto.drivers.sim.fast import FastRonchigramEngine
from emauto.drivers.sim.knobs import ABERRATION_KNOBS, HYSTERESIS_WIDTH, default_values, twin_knobs
from emauto.drivers.sim.probe import ProbeOptics, RonchigramGrid
from emauto.drivers.sim.specimens import Specimen, load_specimen
from emauto.errors import BeamBlankedError, ClosedError, InvalidRequestError
from emauto.microscope import (
    Calibration,
    DetectorSpec,
    Frame,
    ImageRequest,
    MicroscopeDescription,
    MicroscopeState,
    PositionsScan,
    RasterScan,
    RonchigramRequest,
    ScanLimits,
    SegmentsScan,
    validate_setpoints,
)
from emauto.units import ELECTRON_CHARGE_C

#: Lens time constants after which the lenses count as settled (`settling_time_s`).
SETTLING_TIME_CONSTANTS = 5.0
#: Knobs whose optical value lags and shows hysteresis (lenses and deflectors).
LENS_KNOBS = (
    *ABERRATION_KNOBS,
    "beam_shift_x",
    "beam_shift_y",
    "beam_tilt_x",
    "beam_tilt_y",
)


@dataclass(frozen=True, eq=False)
class RonchigramExposure:
    """A Ronchigram begun by `SimulatedMicroscope.begin_ronchigram`, not yet detected."""

    request: RonchigramRequest
    state: MicroscopeState  # the state the frame reports (read before the exposure)
    probe: ProbeOptics  # the true optics at mid-exposure (after lag and hysteresis)
    point_m: tuple[float, float]  # specimen point (x, y) under the probe (m)


class SimulatedMicroscope:
    """An abTEM digital twin behind the Microscope contract (`sim://`)."""

    def __init__(self, config: SimConfig | None = None, *, specimen: Specimen | None = None):
        self.config = config or SimConfig()
        cfg = self.config
        self._knob_specs = twin_knobs()
        sampling = RonchigramGrid.requested_sampling(cfg.ronchigram, cfg.energy_eV)
        self.specimen = specimen or load_specimen(
            cfg.specimen, sampling_m=sampling, n_slabs=cfg.fast_slabs, cache_dir=cfg.cache_dir
        )
        self.grid = RonchigramGrid.for_camera(
            cfg.ronchigram, cfg.energy_eV, self.specimen.sampling_m
        )
        self._ronchigram_engine: Any = self._make_ronchigram_engine()
        self._adf_engine: Any = self._make_adf_engine()
        self._gain_map = camera_gain_map(cfg.ronchigram)  # the camera's: kept over restarts
        self._flipped = frozenset(cfg.flipped_knobs)
        self._description = self._describe()
        self._closed = False
        self.restart(cfg.seed)

    def restart(self, seed: int) -> None:
        """Power-cycle the twin: start knobs, clock, drift and noise from ``seed``. Twin-only.

        Specimen and engines are kept; everything random or time-dependent starts again, so
        the same seed and the same commands give the same frames.
        """
        cfg = self.config
        self._rng = np.random.default_rng(seed)
        values = default_values()
        values.update(validate_setpoints(self._description, values, cfg.initial))
        self._knobs = values
        self._time_s = 0.0
        self._dose_e = 0.0
        self._effects = Effects(cfg.effects, self._rng)
        scale = cfg.effects.hysteresis_scale if cfg.effects.hysteresis else 0.0
        widths = {name: scale * HYSTERESIS_WIDTH[name] for name in LENS_KNOBS}
        tau = cfg.effects.lens_tau_s if cfg.effects.lens_lag else 0.0
        self._lenses = LensModel(tau_s=tau, widths=widths)
        self._lenses.reset({name: self._optical(name, v) for name, v in values.items()}, 0.0)
        self._stage = np.array([values["stage_x"], values["stage_y"]])
        self._stage_target = self._stage.copy()
        self._stage_time_s = 0.0
        self._pending_ronchigram: RonchigramExposure | None = None

    # ------------------------------------------------------------------ engines

    def _make_ronchigram_engine(self) -> Any:
        if self.config.fidelity == "multislice":
            from emauto.drivers.sim.multislice import MultisliceRonchigramEngine

            return MultisliceRonchigramEngine(
                self.config.specimen,
                self.grid,
                self.config.energy_eV,
                slice_m=self.config.multislice_slice_m,
                cache_dir=self.config.cache_dir,
            )
        return FastRonchigramEngine(self.specimen, self.grid, self.config.energy_eV)

    def _make_adf_engine(self) -> Any:
        adf = self.config.adf
        return FastADFEngine(
            self.specimen,
            self.config.energy_eV,
            adf.inner_angle_rad,
            adf.outer_angle_rad,
            source_fwhm_m=adf.source_fwhm_m,
        )

    # ------------------------------------------------------------------ contract

    def _describe(self) -> MicroscopeDescription:
        cfg = self.config
        camera = cfg.ronchigram
        return MicroscopeDescription(
            backend=f"sim:{cfg.fidelity}:{self.specimen.name}",
            energy_eV=cfg.energy_eV,
            beam_current_A=cfg.beam_current_A,
            knobs=self._knob_specs,
            detectors={
                "ronchigram": DetectorSpec(
                    name="ronchigram",
                    kind="camera",
                    shape=camera.shape,
                    pixel_angle_rad=self._reported_pixel_rad(),
                    gain_counts_per_e=camera.gain_counts_per_e,
                    read_noise_counts=camera.read_noise_counts,
                ),
                "adf": DetectorSpec(
                    name="adf",
                    kind="scan",
                    inner_angle_rad=cfg.adf.inner_angle_rad,
                    outer_angle_rad=cfg.adf.outer_angle_rad,
                    gain_counts_per_e=cfg.adf.gain_counts_per_e,
                    read_noise_counts=cfg.adf.read_noise_counts,
                ),
            },
            scan=ScanLimits(
                max_fov_m=self._knob_specs["scan_fov"].upper,
                max_offset_m=self._knob_specs["scan_fov"].upper,
                min_dwell_s=self._knob_specs["scan_dwell"].lower,
                max_dwell_s=self._knob_specs["scan_dwell"].upper,
                max_positions=4096 * 4096,
                min_exposure_s=1e-4,
                max_exposure_s=10.0,
                settle_s=2e-6,
                flyback_s=20e-6,
            ),
        )

    def _reported_pixel_rad(self) -> float:
        """The camera's angular pixel as describe() and the frames report it: the true one
        times ``1 + pixel_angle_error`` (`RonchigramCameraConfig`)."""
        error = self.config.ronchigram.pixel_angle_error
        pixel = self.grid.camera_pixel_rad
        return pixel * (1.0 + error) if error != 0.0 else pixel

    def describe(self) -> MicroscopeDescription:
        """Knobs, detectors, scan limits and beam of the twin."""
        return self._description

    def read(self) -> MicroscopeState:
        """Knob setpoints, beam and stage status, simulated time, delivered dose."""
        self._check_open()
        self._advance_stage(self._time_s)
        moving = bool(np.any(self._stage != self._stage_target))
        knobs = dict(self._knobs)
        knobs["stage_x"], knobs["stage_y"] = (float(v) for v in self._stage)
        return MicroscopeState(
            knobs=knobs,
            beam_blanked=self._knobs["beam_blank"] == 1.0,
            stage_moving=moving,
            time_s=self._time_s,
            dose_e=self._dose_e,
        )

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Apply absolute setpoints atomically; invalid input raises and changes nothing."""
        self._check_open()
        checked = validate_setpoints(self._description, self._knobs, setpoints)
        self._time_s += self.config.command_latency_s
        for name, value in checked.items():
            if name in self._lenses.channels:
                self._lenses.command(name, self._optical(name, value), self._time_s)
            if name in ("stage_x", "stage_y"):
                self._advance_stage(self._time_s)
                self._stage_target[0 if name == "stage_x" else 1] = value
            self._knobs[name] = value
        return self.read()

    def safe(self) -> None:
        """Blank the beam and stop the stage where it is."""
        if self._closed:
            return
        self._advance_stage(self._time_s)
        self._stage_target = self._stage.copy()
        self._knobs["stage_x"], self._knobs["stage_y"] = (float(v) for v in self._stage)
        self._knobs["beam_blank"] = 1.0

    def close(self) -> None:
        """Go safe and release the twin."""
        self.safe()
        self._closed = True

    def __enter__(self) -> SimulatedMicroscope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Take a Ronchigram or a scanned ADF image (see `emauto.microscope`)."""
        self._check_open()
        if not isinstance(request, RonchigramRequest | ImageRequest):
            raise InvalidRequestError(
                f"expected a RonchigramRequest or ImageRequest, got {type(request).__name__}"
            )
        if self._knobs["beam_blank"] == 1.0:
            raise BeamBlankedError("the beam is blanked; set beam_blank to 0 to acquire")
        if isinstance(request, RonchigramRequest):
            return self._acquire_ronchigram(request)
        return self._acquire_image(request)

    # ------------------------------------------------------------------ twin-only truth

    def true_aberrations(self) -> optics.Aberrations:
        """The optical aberrations now (after lag and hysteresis). Twin-only ground truth."""
        lens = self._lenses.values(self._time_s)
        return optics.Aberrations.from_mapping({name: lens[name] for name in ABERRATION_KNOBS})

    def true_probe(self, time_s: float | None = None) -> ProbeOptics:
        """The probe-forming optics at ``time_s`` (default: now), the aperture's offset
        (`SimConfig.aperture_offset_rad`) included. Twin-only ground truth."""
        lens = self._lenses.values(self._time_s if time_s is None else time_s)
        coefficients = tuple(lens.get(name, 0.0) for name in optics.ABERRATION_NAMES)
        tilt = (lens["beam_tilt_x"], lens["beam_tilt_y"])
        offset = self.config.aperture_offset_rad
        if offset != (0.0, 0.0):  # the aperture off the axis moves it as a tilt does
            tilt = (tilt[0] + offset[0], tilt[1] + offset[1])
        return ProbeOptics(
            coefficients_m=coefficients,
            convergence_rad=self._knobs["convergence_angle"],
            tilt_rad=tilt,
        )

    def strehl_ratio(self) -> float:
        """Strehl ratio of the true probe over the probe-forming aperture. Twin-only."""
        return optics.strehl_ratio(
            self.true_aberrations(), self.grid.wavelength_m, self._knobs["convergence_angle"]
        )

    def aberrations_after(self, wait_s: float) -> optics.Aberrations:
        """The true aberrations ``wait_s`` (s) from now with no further command: the lenses
        settle towards their setpoints (lag), hysteresis stays. Twin-only."""
        if not (math.isfinite(wait_s) and wait_s >= 0):
            raise InvalidRequestError(f"wait_s must be finite and >= 0, got {wait_s!r}")
        lens = self._lenses.values(self._time_s + wait_s)
        return optics.Aberrations.from_mapping({n: lens[n] for n in ABERRATION_KNOBS})

    def aberrations_after_move(
        self, changes: Mapping[str, float], wait_s: float
    ) -> optics.Aberrations:
        """The true aberrations ``wait_s`` (s) after the knobs ``changes`` (name: m, added to
        their setpoints) were commanded now, with lag and hysteresis as `set` would give;
        nothing is changed. Twin-only: what a move *would* leave (training labels)."""
        if not (math.isfinite(wait_s) and wait_s >= 0):
            raise InvalidRequestError(f"wait_s must be finite and >= 0, got {wait_s!r}")
        lenses = copy.deepcopy(self._lenses)
        time_s = self._time_s + self.config.command_latency_s
        for name, change in changes.items():
            if name not in ABERRATION_KNOBS:
                raise InvalidRequestError(f"{name!r} is not an aberration knob")
            lenses.command(name, lenses.channels[name].setpoint + float(change), time_s)
        lens = lenses.values(time_s + wait_s)
        return optics.Aberrations.from_mapping({n: lens[n] for n in ABERRATION_KNOBS})

    def settling_time_s(self) -> float:
        """Five lens time constants (s; 0 without lens lag): the lenses within e^-5 (0.7 %)
        of a step. Twin-only: scoring waits this long (the default twin's 0.1 s, the
        frames' own wait)."""
        return SETTLING_TIME_CONSTANTS * self._lenses.tau_s

    def strehl_ratio_after(self, wait_s: float) -> float:
        """The Strehl ratio of `aberrations_after` ``wait_s``. Twin-only."""
        return optics.strehl_ratio(
            self.aberrations_after(wait_s), self.grid.wavelength_m, self._knobs["convergence_angle"]
        )

    # ------------------------------------------------------------------ internals

    def _optical(self, name: str, setpoint: float) -> float:
        """The optical value a lens channel's setpoint asks for (`SimConfig.flipped_knobs`:
        the opposite sign)."""
        return -setpoint if name in self._flipped else setpoint

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this simulated microscope has been closed")

    def _advance_stage(self, time_s: float) -> None:
        """Move the stage towards its target at the configured speed up to ``time_s``."""
        elapsed = time_s - self._stage_time_s
        self._stage_time_s = time_s
        delta = self._stage_target - self._stage
        distance = float(np.hypot(*delta))
        if distance == 0.0:
            return
        step = self.config.stage_speed_m_per_s * max(elapsed, 0.0)
        if step >= distance:
            self._stage = self._stage_target.copy()
        else:
            self._stage = self._stage + delta * (step / distance)

    def _specimen_points(self, scan_positions_m: np.ndarray, times_s: np.ndarray) -> np.ndarray:
        """Specimen coordinates (N, 2) under the probe for scan-frame positions and times."""
        rotation = self._knobs["scan_rotation"]
        c, s = math.cos(rotation), math.sin(rotation)
        rotated = scan_positions_m @ np.array([[c, s], [-s, c]])
        lens = self._lenses.values(self._time_s)
        shift = np.array([lens["beam_shift_x"], lens["beam_shift_y"]])
        drift = self._effects.drift_offset(times_s)
        return self._effects.jitter(rotated + self._stage + shift - drift)

    def _check_count(self, request: ImageRequest) -> None:
        """Refuse a scan with more positions than `ScanLimits.max_positions`, counted from the
        request's declared shape (raster, segments) before any position array exists."""
        scan = request.scan
        if isinstance(scan, RasterScan):
            count = scan.shape[0] * scan.shape[1]
        elif isinstance(scan, PositionsScan):
            count = len(scan.positions_m)
        else:
            count = sum(segment.n_points for segment in scan.segments)
        if count > self._description.scan.max_positions:
            raise InvalidRequestError(
                f"{count} positions requested, at most "
                f"{self._description.scan.max_positions} allowed"
            )

    def _check_positions(self, positions_m: np.ndarray) -> None:
        limit = self._description.scan.max_offset_m
        if positions_m.shape[0] > self._description.scan.max_positions:
            raise InvalidRequestError(
                f"{positions_m.shape[0]} positions requested, at most "
                f"{self._description.scan.max_positions} allowed"
            )
        worst = float(np.max(np.abs(positions_m)))
        if worst > limit:
            raise InvalidRequestError(
                f"scan position {worst:.3g} m from the centre exceeds the limit {limit:.3g} m"
            )

    def _acquire_ronchigram(self, request: RonchigramRequest) -> Frame:
        exposure = self.begin_ronchigram(request)
        x, y = exposure.point_m
        probability = self._ronchigram_engine.ronchigram(exposure.probe, (x, y))
        return self.finish_ronchigram(exposure, probability)

    def check_ronchigram(self, request: RonchigramRequest) -> None:
        """Raise the error `acquire` would raise for this Ronchigram request; change nothing."""
        self._check_open()
        if not isinstance(request, RonchigramRequest):
            raise InvalidRequestError(f"expected a RonchigramRequest, got {type(request).__name__}")
        if self._knobs["beam_blank"] == 1.0:
            raise BeamBlankedError("the beam is blanked; set beam_blank to 0 to acquire")
        if request.detector != "ronchigram":
            raise InvalidRequestError(
                f"unknown camera {request.detector!r}; this twin has 'ronchigram'"
            )
        limits = self._description.scan
        if not limits.min_exposure_s <= request.exposure_s <= limits.max_exposure_s:
            raise InvalidRequestError(
                f"exposure {request.exposure_s:g} s outside "
                f"[{limits.min_exposure_s:g}, {limits.max_exposure_s:g}] s"
            )
        self._check_positions(np.array([request.probe_position_m], dtype=np.float64))

    def begin_ronchigram(self, request: RonchigramRequest) -> RonchigramExposure:
        """First half of a Ronchigram acquisition: check the request, then fix the state,
        the probe and the specimen point at mid-exposure (scan jitter draws from the twin's
        RNG). The clock does not move until `finish_ronchigram`. `acquire` is begin, the
        engine's Ronchigram, finish; `BatchedTwin` runs the engine step for many twins."""
        self.check_ronchigram(request)
        limits = self._description.scan
        parked = np.array([request.probe_position_m], dtype=np.float64)
        self._advance_stage(self._time_s)
        state = self.read()
        start_s = self._time_s + request.wait_s + limits.settle_s
        mid_time = start_s + request.exposure_s / 2
        point = self._specimen_points(parked, np.array([mid_time]))[0]
        exposure = RonchigramExposure(
            request=request,
            state=state,
            probe=self.true_probe(mid_time),
            point_m=(float(point[0]), float(point[1])),
        )
        self._pending_ronchigram = exposure
        return exposure

    def finish_ronchigram(self, exposure: RonchigramExposure, probability: np.ndarray) -> Frame:
        """Second half: detect ``probability`` (the fraction of beam electrons per camera
        pixel for ``exposure``) at the request's dose (shot and read noise from the twin's
        RNG), advance the clock and the dose, return the frame."""
        if exposure is not self._pending_ronchigram:
            raise InvalidRequestError("finish_ronchigram: not this twin's latest begun exposure")
        camera = self.config.ronchigram
        if np.shape(probability) != camera.shape:
            raise InvalidRequestError(
                f"probability image of shape {np.shape(probability)}, the camera's is "
                f"{camera.shape}"
            )
        self._pending_ronchigram = None
        request, probe = exposure.request, exposure.probe
        limits = self._description.scan
        electrons = self.config.beam_current_A * request.exposure_s / ELECTRON_CHARGE_C
        true_pixel = self.grid.camera_pixel_rad
        offset = ((self.grid.oversample - 1) / 2 - self.grid.crop / 2) * self.grid.angular_pixel_rad
        if camera.rotation_rad != 0.0:  # about the optic axis's pixel
            axis_px = -offset / true_pixel
            probability = rotate_on_camera(probability, camera.rotation_rad, (axis_px, axis_px))
        if camera.contrast_scale != 1.0:
            probability = reduce_contrast(probability, camera.contrast_scale)
        data = self._effects.detect(
            probability * electrons,
            camera.gain_counts_per_e,
            camera.read_noise_counts,
            gain_map=self._gain_map,
            dark_offset_counts=camera.dark_offset_counts,
        )
        duration = request.wait_s + limits.settle_s + request.exposure_s
        self._time_s += duration
        self._dose_e += electrons
        pixel = self._reported_pixel_rad()
        if camera.pixel_angle_error != 0.0:  # the calibration's error scales every angle
            offset *= 1.0 + camera.pixel_angle_error
        radius = max(
            abs(probe.coefficients_m[0]) * probe.convergence_rad, self.grid.wavelength_m / 0.03
        )
        return Frame(
            kind="ronchigram",
            detector=request.detector,
            data=data,
            calibrations=(
                Calibration(name="theta_y", units="rad", scale=pixel, offset=offset),
                Calibration(name="theta_x", units="rad", scale=pixel, offset=offset),
            ),
            dose_e=electrons,
            dose_e_per_m2=electrons / (math.pi * radius**2),
            exposure_s=request.exposure_s,
            duration_s=duration,
            state=exposure.state,
            request=request,
        )

    def _scan_positions(self, request: ImageRequest) -> tuple[np.ndarray, np.ndarray, float]:
        """Scan-frame positions (N, 2), their beam-on start times (N,), and the pixel size."""
        limits = self._description.scan
        fov = self._knobs["scan_fov"]
        dwell = request.dwell_s if request.dwell_s is not None else self._knobs["scan_dwell"]
        if not limits.min_dwell_s <= dwell <= limits.max_dwell_s:
            raise InvalidRequestError(
                f"dwell {dwell:g} s outside [{limits.min_dwell_s:g}, {limits.max_dwell_s:g}] s"
            )
        scan = request.scan
        if isinstance(scan, RasterScan):
            ny, nx = scan.shape
            pixel = fov / nx
            positions = scan.positions(fov)
            line = nx * dwell + limits.flyback_s
            times = (np.arange(ny)[:, None] * line + np.arange(nx)[None, :] * dwell).ravel()
            return positions, times + limits.settle_s, pixel
        if isinstance(scan, PositionsScan):
            positions = np.asarray(scan.positions_m)
            jumps = np.r_[0.0, np.hypot(*np.diff(positions, axis=0).T)]
            settle = np.where(jumps > 0, limits.settle_s, 0.0)
            settle[0] = limits.settle_s
            times = np.cumsum(settle) + np.arange(len(positions)) * dwell
            pixel = self._typical_spacing(positions, fov)
            return positions, times, pixel
        assert isinstance(scan, SegmentsScan)
        positions = scan.positions()
        starts = np.cumsum([0] + [s.n_points for s in scan.segments[:-1]])
        settle = np.zeros(len(positions))
        settle[starts] = limits.settle_s
        times = np.cumsum(settle) + np.arange(len(positions)) * dwell
        return positions, times, self._typical_spacing(positions, fov)

    @staticmethod
    def _typical_spacing(positions: np.ndarray, fov: float) -> float:
        """A pixel size for sparse positions: their median step, at most the field of view."""
        if len(positions) < 2:
            return fov / 256
        steps = np.hypot(*np.diff(positions, axis=0).T)
        steps = steps[steps > 0]
        return float(min(np.median(steps), fov)) if len(steps) else fov / 256

    def _acquire_image(self, request: ImageRequest) -> Frame:
        if request.detector != "adf":
            raise InvalidRequestError(
                f"unknown scan detector {request.detector!r}; this twin has 'adf'"
            )
        self._check_count(request)  # from the declared shape, before anything is allocated
        positions, times, pixel = self._scan_positions(request)
        self._check_positions(positions)
        dwell = request.dwell_s if request.dwell_s is not None else self._knobs["scan_dwell"]
        self._advance_stage(self._time_s)
        state = self.read()
        absolute_times = self._time_s + times + dwell / 2
        points = self._specimen_points(positions, absolute_times)
        probe = self.true_probe(float(absolute_times[len(absolute_times) // 2]))
        fraction = self._adf_engine.signal(probe, points, pixel)
        per_position_e = self.config.beam_current_A * dwell / ELECTRON_CHARGE_C
        adf = self.config.adf
        data = self._effects.detect(
            fraction * per_position_e, adf.gain_counts_per_e, adf.read_noise_counts
        )
        electrons = per_position_e * len(positions)
        duration = float(times[-1] + dwell)
        self._time_s += duration
        self._dose_e += electrons
        scan = request.scan
        if isinstance(scan, RasterScan):
            data = data.reshape(scan.shape)
            ny, nx = scan.shape
            area = (pixel * nx) * (pixel * ny)
            calibrations: tuple[Calibration, ...] = (
                Calibration(name="y", units="m", scale=pixel, offset=-(ny - 1) / 2 * pixel),
                Calibration(name="x", units="m", scale=pixel, offset=-(nx - 1) / 2 * pixel),
            )
            frame_positions = None
        else:
            span = np.ptp(positions, axis=0)
            area = max(float(span[0] * span[1]), pixel**2 * len(positions))
            calibrations = (Calibration(name="index", units="", scale=1.0),)
            frame_positions = positions
        return Frame(
            kind="image",
            detector=request.detector,
            data=data,
            calibrations=calibrations,
            positions_m=frame_positions,
            dose_e=electrons,
            dose_e_per_m2=electrons / area,
            exposure_s=len(positions) * dwell,
            duration_s=duration,
            state=state,
            request=request,
        )
