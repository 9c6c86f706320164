"""Fit the twin's instrument parameters from a recorded calibration session.

`fit_session` reads a session written by `emauto.calibration.plan.record_calibration` (or
by the daemon running the same plan), finds each role's frames by their label, runs the
estimators and returns a `CalibrationResult`: every estimate with its uncertainty, and the
partial `SimConfig` (`CalibrationResult.sim_config`) that ``sim://?config=FILE`` accepts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from emauto.calibration import estimators as est
from emauto.calibration.plan import PLAN_METADATA_KEY, ROLE_PREFIX, CalibrationPlan
from emauto.errors import CalibrationDataError, ConfigError, MeasurementRefusedError
from emauto.microscope import Frame, RonchigramRequest
from emauto.sessions.reader import Session, Step
from emauto.tasks.probe_tuning.policies.probe_shift import fit_aberrations, shift_jacobians
from emauto.units import validate_model
from emauto.wrappers.calibrated import InstrumentCalibration

#: Lens time constants waited after a knob change before a frame (`instrument_calibration`):
#: e^-5, under 1 % of a step left.
SETTLE_TIME_CONSTANTS = 5.0
#: The aberrations measured to read each corrector axis's sign.
SIGN_NAMES = ("C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b")
#: An axis's sign is called only when its measured response is at least this many standard
#: uncertainties from zero (set from the measurement's stated precision, not from the
#: validation seeds).
SIGN_SIGMAS = 3.0


@dataclass
class CalibrationResult:
    """Every fitted parameter (name -> `Estimate`), the axes' signs, and notes."""

    estimates: dict[str, est.Estimate] = field(default_factory=dict)
    signs: dict[str, int] = field(default_factory=dict)  # +1, -1, or 0 (undetermined)
    responses: dict[str, est.Estimate] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    camera_shape: tuple[int, int] = (0, 0)
    energy_eV: float = 0.0
    #: the camera's relative pixel gains, when the frames show a non-uniformity
    flat_field: np.ndarray | None = None

    def sim_config(self) -> dict[str, Any]:
        """The partial `SimConfig` (a mapping of the fields fitted, nothing else)."""
        e = self.estimates
        camera: dict[str, Any] = {"shape": list(self.camera_shape)}
        if "camera_pixel_rad" in e:
            camera["half_angle_rad"] = e["camera_pixel_rad"].value * self.camera_shape[0] / 2
            camera["pixel_angle_error"] = e["pixel_angle_error"].value
        for name, key in (
            ("camera_rotation_rad", "rotation_rad"),
            ("gain_counts_per_e", "gain_counts_per_e"),
            ("read_noise_counts", "read_noise_counts"),
            ("dark_offset_counts", "dark_offset_counts"),
        ):
            if name in e:
                camera[key] = e[name].value
        if "dark_offset_counts" in e:
            camera["dark_offset_counts"] = max(e["dark_offset_counts"].value, 0.0)
        if "contrast_scale" in e:
            camera["contrast_scale"] = min(max(e["contrast_scale"].value, 1e-6), 1.0)
        config: dict[str, Any] = {"energy_eV": self.energy_eV, "ronchigram": camera}
        if "beam_current_A" in e:
            config["beam_current_A"] = e["beam_current_A"].value
        if "aperture_offset_x_rad" in e:
            config["aperture_offset_rad"] = [
                e["aperture_offset_x_rad"].value,
                e["aperture_offset_y_rad"].value,
            ]
        effects: dict[str, Any] = {}
        if "lens_tau_s" in e:
            effects["lens_tau_s"] = e["lens_tau_s"].value
        if "drift_speed_m_per_s" in e:
            effects["drift_speed_m_per_s"] = e["drift_speed_m_per_s"].value
        if effects:
            config["effects"] = effects
        config["flipped_knobs"] = sorted(k for k, s in self.signs.items() if s < 0)
        return config

    def instrument_calibration(self, flat_field_file: str | None = None) -> InstrumentCalibration:
        """What the driver reports wrong, for `CalibratedMicroscope`: the camera's true over
        reported angular pixel (``1 / (1 + pixel_angle_error)``), the corrector axes read
        as flipped, and a settling wait of `SETTLE_TIME_CONSTANTS` lens time constants
        after a knob change. What was not fitted stays as the driver reports it. C1's sign
        (read with the camera's rotation, ambiguous by 180 degrees) is not used.
        ``flat_field_file``: where `flat_field` is saved (`write_instrument_calibration`)."""
        e = self.estimates
        scale = 1.0 / (1.0 + e["pixel_angle_error"].value) if "pixel_angle_error" in e else 1.0
        settle = SETTLE_TIME_CONSTANTS * e["lens_tau_s"].value if "lens_tau_s" in e else 0.0
        flipped = tuple(sorted(k for k, s in self.signs.items() if s < 0 and k != "C10"))
        return validate_model(
            {
                "camera_pixel_scale": scale,
                "flipped_knobs": flipped,
                "lens_settle_s": min(max(settle, 0.0), 60.0),
                "flat_field": flat_field_file,
                "dark_offset_counts": (
                    max(e["dark_offset_counts"].value, 0.0) if "dark_offset_counts" in e else 0.0
                ),
            },
            InstrumentCalibration,
            source="the fitted calibration",
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON."""
        return {
            "estimates": {k: v.to_dict() for k, v in self.estimates.items()},
            "axis_signs": dict(self.signs),
            "axis_responses": {k: v.to_dict() for k, v in self.responses.items()},
            "notes": list(self.notes),
            "sim_config": self.sim_config(),
        }


def write_instrument_calibration(result: CalibrationResult, path: str | Path) -> Path:
    """Write `CalibrationResult.instrument_calibration` as YAML (for
    `emauto.wrappers.calibrated.CalibratedMicroscope`, e.g. `bench robustness
    --calibrations`)."""
    path = Path(path)
    header = "# What `emauto calibrate` found the driver reports wrong (InstrumentCalibration).\n"
    flat_file = None
    if result.flat_field is not None:  # beside the YAML: NAME.flat.npy (float32, no pickle)
        flat_file = f"{path.stem}.flat.npy"
        np.save(path.parent / flat_file, result.flat_field.astype(np.float32), allow_pickle=False)
    body = result.instrument_calibration(flat_file).model_dump(mode="json")
    path.write_text(header + yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def write_sim_config(result: CalibrationResult, path: str | Path) -> Path:
    """Write the partial `SimConfig` as YAML, after checking that it loads as one (a
    `ConfigError` naming the bad field, and nothing written, if not)."""
    from emauto.drivers.sim.config import SimConfig

    config = result.sim_config()
    validate_model(config, SimConfig, source="the fitted calibration")
    path = Path(path)
    header = (
        "# The twin's instrument parameters fitted by `emauto calibrate` (a partial SimConfig).\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------- reading the session


class _Frames:
    """The session's calibration frames and set steps, by role."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.steps: dict[str, list[Step]] = {}
        for step in session.steps:
            if step.task.startswith(ROLE_PREFIX) and step.kind in ("acquire", "set"):
                self.steps.setdefault(step.task[len(ROLE_PREFIX) :], []).append(step)
        if not any(s.kind == "acquire" for steps in self.steps.values() for s in steps):
            raise CalibrationDataError(
                f"{session.path}: no calibration frames (steps labelled {ROLE_PREFIX!r}); "
                "record the plan with `emauto calibrate SESSION --record URI`"
            )
        self._cache: dict[int, Frame] = {}

    def frames(self, role: str, minimum: int = 1) -> list[Frame]:
        steps = [s for s in self.steps.get(role, []) if s.kind == "acquire"]
        if len(steps) < minimum:
            raise CalibrationDataError(
                f"{self.session.path}: {len(steps)} frame(s) for {role!r}, need {minimum}"
            )
        out = []
        for step in steps:
            if step.seq not in self._cache:
                frame = self.session.frame(step)
                if frame.kind != "ronchigram" or not isinstance(frame.request, RonchigramRequest):
                    raise CalibrationDataError(f"{role!r}: step {step.seq} is not a Ronchigram")
                if np.ndim(frame.data) != 2:
                    raise CalibrationDataError(f"{role!r}: step {step.seq} is not a 2-D frame")
                self._cache[step.seq] = frame
            out.append(self._cache[step.seq])
        return out

    def data(self, role: str, minimum: int = 1) -> list[np.ndarray]:
        return [np.asarray(f.data, dtype=np.float64) for f in self.frames(role, minimum)]

    def one(self, role: str) -> np.ndarray:
        return self.data(role)[0]

    def set_time(self, role: str) -> float:
        steps = [s for s in self.steps.get(role, []) if s.kind == "set"]
        if not steps:
            raise CalibrationDataError(f"{self.session.path}: no set step for {role!r}")
        return float(steps[-1].data["time_s"])

    def has(self, role: str) -> bool:
        return role in self.steps


def _pixel_and_axis(frame: Frame) -> tuple[float, tuple[float, float]]:
    """The frame's reported angular pixel (rad) and the optic axis's pixel (column, row)."""
    cals = {c.name: c for c in frame.calibrations if c.units == "rad"}
    if "theta_x" not in cals or "theta_y" not in cals:
        raise CalibrationDataError("the Ronchigram frames carry no theta_x/theta_y calibration")
    x, y = cals["theta_x"], cals["theta_y"]
    return float(x.scale), (-x.offset / x.scale, -y.offset / y.scale)


def _mid_exposure(frame: Frame, settle_s: float) -> float:
    """Simulated/instrument time (s) at the middle of a frame's exposure."""
    request = frame.request
    assert isinstance(request, RonchigramRequest)
    return float(frame.state.time_s) + request.wait_s + settle_s + request.exposure_s / 2


def _defocus(frame: Frame, nominal_m: float) -> float:
    """The over-focus (m) a frame was taken at: its C10 setpoint where that is at least the
    plan's ``nominal_m`` (a microscope that started over-focused, as usim does at 500 nm),
    else the plan's (the start taken as focus)."""
    setpoint = float(frame.state.knobs.get("C10", 0.0))
    return setpoint if setpoint >= nominal_m else nominal_m


def _plan(session: Session) -> CalibrationPlan:
    """The plan's settings: the start document's ``calibration_plan`` (`record_calibration`)
    or the daemon's ``calibrate`` step in its ``plan``."""
    raw = session.start.get(PLAN_METADATA_KEY)
    steps = session.start.get("plan")
    if raw is None and isinstance(steps, list):
        found = [
            s.get("plan") for s in steps if isinstance(s, dict) and s.get("kind") == "calibrate"
        ]
        raw = found[0] if len(found) == 1 else None
    if raw is None:
        raise CalibrationDataError(
            f"{session.path}: the start document has no {PLAN_METADATA_KEY!r} (not a "
            "calibration session)"
        )
    try:
        return validate_model(raw, CalibrationPlan, source=f"{session.path} start document")
    except ConfigError as exc:
        raise CalibrationDataError(str(exc)) from exc


# ---------------------------------------------------------------------- the fit


def fit_session(path: str | Path | Session) -> CalibrationResult:
    """Fit every parameter the session's calibration frames allow; a
    `CalibrationDataError` when the frames the camera fit needs (the flat frames) are
    missing. Later parts (lag, drift, axis signs) that lack their frames are left out with
    a note."""
    session = path if isinstance(path, Session) else Session(path)
    plan = _plan(session)
    frames = _Frames(session)
    result = CalibrationResult(energy_eV=float(session.description.energy_eV))
    settle_s = float(session.description.scan.settle_s)
    t_low, t_high = plan.flat_exposures_s
    low = frames.data(f"flat/{t_low:.6g}", 2)
    high = frames.data(f"flat/{t_high:.6g}", 2)
    first = frames.frames(f"flat/{t_low:.6g}")[0]
    reported, axis = _pixel_and_axis(first)
    result.camera_shape = (int(low[0].shape[0]), int(low[0].shape[1]))
    e = result.estimates

    disc: est.Disc | None = None
    try:
        disc = est.fit_disc(np.mean(high, axis=0))
    except CalibrationDataError as exc:  # e.g. an aperture larger than the camera
        result.notes.append(f"camera scale, aperture and contrast not fitted: {exc}")
    outer = None
    if disc is not None:
        rows, cols = np.mgrid[0 : low[0].shape[0], 0 : low[0].shape[1]]
        beyond = np.hypot(cols - disc.centre_x_px.value, rows - disc.centre_y_px.value)
        outer = beyond > 1.25 * disc.radius_px.value
        outer = outer if outer.sum() >= 200 else None
    transfer = est.photon_transfer(low, high, (t_low, t_high), outer)
    e["gain_counts_per_e"] = transfer.gain_counts_per_e
    e["read_noise_counts"] = transfer.read_noise_counts
    e["dark_offset_counts"] = transfer.dark_offset_counts
    dark = transfer.dark_offset_counts.value
    e["beam_current_A"] = est.beam_current(high, t_high, transfer.gain_counts_per_e, dark)
    mean_image = np.mean(high, axis=0) - dark
    if disc is not None:
        convergence = float(first.state.knobs.get("convergence_angle", float("nan")))
        if not math.isfinite(convergence):
            raise CalibrationDataError("the frames' state has no convergence_angle knob")
        scale = est.camera_scale(disc, convergence)
        e["camera_pixel_rad"] = scale
        e["pixel_angle_error"] = est.Estimate(
            reported / scale.value - 1.0, reported * scale.sigma / scale.value**2, ""
        )
        e["aperture_radius_reported_rad"] = est.Estimate(
            disc.radius_px.value * reported, disc.radius_px.sigma * reported, "rad"
        )
        e["contrast_scale"] = est.contrast(mean_image, disc)
        window = est.inner_square(disc)
    else:  # the reported scale, and a window about the optic axis
        scale = est.Estimate(reported, math.nan, "rad/px")
        half = max(8, min(result.camera_shape) // 4)
        cx, cy = round(axis[0]), round(axis[1])
        window = (slice(cy - half, cy + half), slice(cx - half, cx + half))

    # camera rotation from the pattern's shifts under probe shifts
    rotation = est.Estimate(0.0, math.pi, "rad")
    try:
        reference = frames.frames("shift/ref")[0]
        shifts, probes = [], []
        for name in ("x+", "y+", "x-", "y-"):
            moved = frames.frames(f"shift/{name}")[0]
            assert isinstance(moved.request, RonchigramRequest)
            probe = moved.request.probe_position_m
            # the plan's expectation (no rotation): -delta / D, in reported pixels
            guess = -np.asarray(probe) / (_defocus(moved, plan.rotation_defocus_m) * reported)
            inside = window if disc is None else est.inner_square(disc, shift_px=np.hypot(*guess))
            shifts.append(est.pattern_shift(moved.data, reference.data, inside, guess))
            probes.append(probe)
        rotation, c10_reversed = est.camera_rotation(shifts, probes)
        e["camera_rotation_rad"] = rotation
        result.signs["C10"] = -1 if c10_reversed else 1
        result.responses["C10"] = est.Estimate(-1.0 if c10_reversed else 1.0, 0.0, "")
        if c10_reversed:
            result.notes.append(
                "the pattern moved opposite to over-focus: C10 is read as acting with the "
                "wrong sign (or the camera is turned by more than 90 degrees)"
            )
    except CalibrationDataError as exc:
        result.notes.append(f"camera rotation not fitted: {exc}")
    if disc is not None:
        ax, ay = est.aperture_offset(
            disc,
            axis,
            scale,
            rotation,
            (first.state.knobs.get("beam_tilt_x", 0.0), first.state.knobs.get("beam_tilt_y", 0.0)),
        )
        e["aperture_offset_x_rad"], e["aperture_offset_y_rad"] = ax, ay

    # drift: each frame against the one before (the waits grow, each guessed from the
    # velocity so far), the shifts summed
    drift_px_per_s = np.zeros(2)
    try:
        drift = [frames.frames(f"drift/{i}")[0] for i in range(len(plan.drift_waits_s) + 1)]
        times = [_mid_exposure(f, settle_s) for f in drift]
        shifts = [np.zeros(2)]
        for before, after, t0, t1 in zip(drift, drift[1:], times, times[1:], strict=False):
            step = est.pattern_shift(after.data, before.data, window, drift_px_per_s * (t1 - t0))
            shifts.append(shifts[-1] + step)
            drift_px_per_s = shifts[-1] / (t1 - times[0])
        defocus = _defocus(drift[0], plan.defocus_m)
        e["drift_speed_m_per_s"] = est.drift_speed(shifts, times, scale, defocus)
    except CalibrationDataError as exc:
        result.notes.append(f"drift not fitted: {exc}")

    # lens lag: the fraction of the C10 step still to go at each delay. At each delay two
    # cycles, the probe at 0 and at +x: the pattern's shift between them is delta / D, so
    # ratios of shifts are ratios of defocus; the drift between the cycles is the same for
    # the high, delayed and settled pairs (the same timing) and cancels in the ratios. The
    # settled and high shifts are the medians over the cycles; a delayed pair whose shift
    # is not along the settled one (a wrong correlation peak) is left out.
    try:
        e.update(_lens_lag(frames, plan, window, disc, reported, drift_px_per_s, settle_s, result))
    except CalibrationDataError as exc:
        result.notes.append(f"lens lag not fitted: {exc}")

    # corrector axes' signs
    _fit_signs(result, frames, plan, rotation, scale, axis)
    _fit_flat_field(result, frames, dark, disc)
    result.notes.append(
        "not fitted: hysteresis (the twin's default C10 band, 0.2 nm, is below the "
        "measurement's precision)"
    )
    return result


def _fit_flat_field(
    result: CalibrationResult, frames: _Frames, dark: float, disc: est.Disc | None
) -> None:
    """The camera's pixel gains from the flat-field frames; kept (``result.flat_field``)
    when the non-uniformity is `FLAT_FIELD_MIN_SNR` times the estimate's noise."""
    if not frames.has("flatfield") or disc is None:
        result.notes.append("gain non-uniformity not fitted: no flat-field frames or no disc")
        return
    try:
        flat = est.flat_field(frames.data("flatfield", 4), dark, disc)
    except CalibrationDataError as exc:
        result.notes.append(f"gain non-uniformity not fitted: {exc}")
        return
    result.estimates["gain_nonuniformity_rms"] = est.Estimate(flat.signal_rms, flat.noise_rms, "")
    if flat.signal_rms >= est.FLAT_FIELD_MIN_SNR * flat.noise_rms:
        result.flat_field = flat.gains
    else:
        result.notes.append(
            f"no flat field: the pixel gains' non-uniformity ({flat.signal_rms:.2%} rms) is "
            f"below {est.FLAT_FIELD_MIN_SNR:g} x its estimate's noise ({flat.noise_rms:.2%})"
        )


def _lens_lag(
    frames: _Frames,
    plan: CalibrationPlan,
    window: tuple[slice, slice],
    disc: est.Disc | None,
    reported: float,
    drift_px_per_s: np.ndarray,
    settle_s: float,
    result: CalibrationResult,
) -> dict[str, est.Estimate]:
    cycles = [i for i in range(len(plan.lag_delays_s)) if frames.has(f"lag/{i}/b/settled")]
    if len(cycles) < 4:
        raise CalibrationDataError(f"{len(cycles)} lens-lag cycles in the session, need 4")
    low_defocus = _defocus(frames.frames(f"lag/{cycles[0]}/a/settled")[0], plan.defocus_m)
    low_guess = np.array([-plan.lag_shift_m / (low_defocus * reported), 0.0])
    high_guess = low_guess * low_defocus / (low_defocus + plan.lag_step_m)
    if disc is not None:
        window = est.inner_square(disc, shift_px=float(np.hypot(*low_guess)))
    pairs: dict[str, list[np.ndarray]] = {"high": [], "settled": []}
    delays: list[float] = []
    exposures: list[float] = []
    delayed_frames: list[int] = []
    for index in cycles:
        apart_s = float(
            frames.frames(f"lag/{index}/b/settled")[0].state.time_s
            - frames.frames(f"lag/{index}/a/settled")[0].state.time_s
        )
        drifted = drift_px_per_s * apart_s  # the drift between the two cycles
        for name, guess in (("high", high_guess), ("settled", low_guess)):
            pairs[name].append(
                est.pattern_shift(
                    frames.one(f"lag/{index}/b/{name}"),
                    frames.one(f"lag/{index}/a/{name}"),
                    window,
                    guess + drifted,
                )
            )
        delayed_frames.append(index)
        delayed = frames.frames(f"lag/{index}/a/delayed")[0]
        delays.append(_mid_exposure(delayed, settle_s) - frames.set_time(f"lag/{index}/a/step"))
        exposures.append(delayed.exposure_s)
    settled = np.median(np.array(pairs["settled"]), axis=0)
    high = np.median(np.array(pairs["high"]), axis=0)
    norm = float(settled @ settled)
    if norm < 1.0:
        raise CalibrationDataError("the probe shift did not move the pattern")
    ratio_high = norm / float(high @ settled)  # D_high / D_settled
    step = ratio_high - 1.0
    if abs(step) < 0.02:
        raise CalibrationDataError("the C10 step did not change the pattern")
    # each delayed pair's shift lies between the high and the settled one (the optics move
    # monotonically from one to the other): searched on that segment, a little beyond
    margin = 0.15 * (settled - high)
    for index in delayed_frames:
        pairs.setdefault("delayed", []).append(
            est.pattern_shift_between(
                frames.one(f"lag/{index}/b/delayed"),
                frames.one(f"lag/{index}/a/delayed"),
                window,
                high - margin,
                settled + margin,
            )
        )
    unit = settled / math.sqrt(norm)
    kept_t, kept_f, kept_exposure = [], [], []
    longest = max(exposures)
    for delay, exposure, shift in zip(delays, exposures, pairs["delayed"], strict=True):
        along = float(shift @ unit)
        across = abs(float(shift[0] * unit[1] - shift[1] * unit[0]))
        if along <= 0 or across > 0.25 * math.sqrt(norm):
            continue
        remaining = (math.sqrt(norm) / along - 1.0) / step
        if -0.5 <= remaining <= 1.5:
            kept_t.append(delay)
            kept_f.append(remaining)
            kept_exposure.append(exposure / longest)
    left_out = len(delays) - len(kept_t)
    if left_out:
        result.notes.append(f"lens lag: {left_out} of {len(delays)} delayed readings left out")
    # each reading's uncertainty: d remaining / d along (relative units) over the signal (a
    # shorter exposure reads the shift less precisely), taken at the shift a first fit
    # predicts, not at the one read (a misread would weigh itself)
    t = np.asarray(kept_t)
    signal = np.sqrt(np.asarray(kept_exposure))
    first, _ = est.lens_lag(kept_t, kept_f, 1.0 / signal)
    predicted = math.sqrt(norm) / (1.0 + step * np.exp(-t / first.value))
    tau, amplitude = est.lens_lag(kept_t, kept_f, norm / predicted**2 / signal)
    return {"lens_tau_s": tau, "lens_lag_amplitude": amplitude}


def _measure(
    data: Sequence[np.ndarray],
    rotation: est.Estimate,
    scale: est.Estimate,
    axis: tuple[float, float],
    delta_m: float,
) -> tuple[dict[str, float], float]:
    turned = [est.derotate(d, rotation.value, axis) for d in data]
    theta, jacobians = shift_jacobians(
        turned[0],
        turned[1],
        turned[2],
        scale.value,
        delta_m,
        0.029,
        patch=max(8, round(0.030 / scale.value)),
        stride=max(1, round(3.75e-3 / scale.value)),
    )
    return fit_aberrations(theta, jacobians, SIGN_NAMES)


def _fit_signs(
    result: CalibrationResult,
    frames: _Frames,
    plan: CalibrationPlan,
    rotation: est.Estimate,
    scale: est.Estimate,
    axis: tuple[float, float],
) -> None:
    for knob, step in plan.sign_steps_m.items():
        if not frames.has(f"signs/{knob}/+/ref"):
            continue
        try:
            readings, misfits = [], []
            for symbol in ("+", "-"):
                data = [frames.one(f"signs/{knob}/{symbol}/{n}") for n in ("ref", "x", "y")]
                fit, misfit = _measure(data, rotation, scale, axis, plan.probe_shift_m)
                readings.append(fit.get(knob, float("nan")))
                misfits.append(misfit)
        except (CalibrationDataError, MeasurementRefusedError) as exc:
            result.notes.append(f"{knob}: sign not read: {exc}")
            continue
        response = (readings[0] - readings[1]) / (2 * step)
        # the fit's Hessian misfit (m) as the reading's uncertainty, scaled by the basis'
        # order: coefficients of order n carry the misfit over theta^(n-1)
        order = int(knob[1]) + 1 - 2
        sigma_reading = math.hypot(*misfits) / max(0.029 / 2, 1e-3) ** order
        sigma = sigma_reading / (2 * step)
        result.responses[knob] = est.Estimate(response, sigma, "")
        if abs(response) >= SIGN_SIGMAS * sigma:
            result.signs[knob] = 1 if response > 0 else -1
        else:
            result.signs[knob] = 0
            result.notes.append(
                f"{knob}: sign undetermined (response {response:.2g} ± {sigma:.2g})"
            )
