"""The calibration plan recorded on a twin with hidden parameters, read back and fitted:
each parameter is recovered (a flipped sign or a wrong unit fails), the CLI writes a YAML
that loads as a SimConfig, and sessions without the plan's frames give typed errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from emauto.calibration.fit import fit_session, write_instrument_calibration, write_sim_config
from emauto.calibration.plan import CalibrationPlan, record_calibration, run_calibration_plan
from emauto.cli import main
from emauto.drivers.sim.config import EffectsConfig, RonchigramCameraConfig, SimConfig
from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.drivers.sim.uri import sim_config_from_uri
from emauto.errors import CalibrationDataError, SessionError
from emauto.microscope import RonchigramRequest
from emauto.wrappers.recording import RecordingMicroscope

#: A shorter plan than the default (fewer repeats, delays and axes), for the tests.
PLAN = CalibrationPlan(
    flat_frames=6,
    lag_delays_s=(2e-3, 0.01, 0.03, 0.06, 0.12, 0.25, 0.5, 1.5),
    drift_waits_s=(2.0, 4.0, 8.0),
    sign_steps_m={"C12a": 6e-9, "C21b": 150e-9},
)

HIDDEN = SimConfig(
    seed=5,
    beam_current_A=25e-12,
    aperture_offset_rad=(1.5e-3, -1.0e-3),
    flipped_knobs=("C12a",),
    ronchigram=RonchigramCameraConfig(
        rotation_rad=math.radians(7.0),
        pixel_angle_error=0.06,
        gain_counts_per_e=2.0,
        read_noise_counts=3.0,
        dark_offset_counts=20.0,
        contrast_scale=0.7,
    ),
    effects=EffectsConfig(lens_tau_s=0.08, drift_speed_m_per_s=1e-11),
)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "session"
    record_calibration(SimulatedMicroscope(HIDDEN), path, PLAN)
    return path


@pytest.fixture(scope="module")
def fitted(session: Path):  # type: ignore[no-untyped-def]
    return fit_session(session)


def test_camera_scale_within_one_percent_and_the_reported_error(fitted) -> None:  # type: ignore[no-untyped-def]
    true_pixel = 2 * HIDDEN.ronchigram.half_angle_rad / HIDDEN.ronchigram.shape[0]
    assert fitted.estimates["camera_pixel_rad"].value == pytest.approx(true_pixel, rel=0.01)
    assert fitted.estimates["pixel_angle_error"].value == pytest.approx(0.06, abs=0.012)


def test_camera_rotation_within_one_degree(fitted) -> None:  # type: ignore[no-untyped-def]
    rotation = fitted.estimates["camera_rotation_rad"]
    assert rotation.unit == "rad"
    assert math.degrees(rotation.value) == pytest.approx(7.0, abs=1.0)


def test_lens_lag_time_constant(fitted) -> None:  # type: ignore[no-untyped-def]
    assert fitted.estimates["lens_tau_s"].value == pytest.approx(0.08, rel=0.2)


def test_detector_dose_contrast_drift_and_aperture(fitted) -> None:  # type: ignore[no-untyped-def]
    e = {k: v.value for k, v in fitted.estimates.items()}
    assert e["gain_counts_per_e"] == pytest.approx(2.0, rel=0.05)
    assert e["read_noise_counts"] == pytest.approx(3.0, rel=0.1)
    assert e["dark_offset_counts"] == pytest.approx(20.0, abs=1.0)
    assert e["beam_current_A"] == pytest.approx(25e-12, rel=0.05)
    assert e["contrast_scale"] == pytest.approx(0.7, abs=0.02)
    assert e["drift_speed_m_per_s"] == pytest.approx(1e-11, rel=0.25)
    assert e["aperture_offset_x_rad"] == pytest.approx(1.5e-3, abs=0.3e-3)
    assert e["aperture_offset_y_rad"] == pytest.approx(-1.0e-3, abs=0.3e-3)


def test_corrector_axis_signs(fitted) -> None:  # type: ignore[no-untyped-def]
    assert fitted.signs == {"C10": 1, "C12a": -1, "C21b": 1}
    assert fitted.sim_config()["flipped_knobs"] == ["C12a"]


def test_the_plan_puts_back_every_knob_it_moved(tmp_path: Path) -> None:
    twin = SimulatedMicroscope(SimConfig(effects=EffectsConfig.none()))
    twin.set({"C10": 5e-9, "C12a": 1e-9})
    before = twin.read().knobs
    short = PLAN.model_copy(update={"lag_delays_s": (0.0, 0.1, 0.2, 0.3)})
    run_calibration_plan(twin, short)
    after = twin.read().knobs
    assert {k: after[k] for k in ("C10", "C12a", "C21b")} == {
        k: before[k] for k in ("C10", "C12a", "C21b")
    }


def test_the_cli_writes_a_sim_config_that_sim_uris_accept(
    session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim.yaml"
    assert main(["calibrate", str(session), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"] == str(out)
    assert "camera_rotation_rad" in printed["estimates"]
    config = sim_config_from_uri(f"sim://?config={out}")
    assert math.degrees(config.ronchigram.rotation_rad) == pytest.approx(7.0, abs=1.0)
    assert config.flipped_knobs == ("C12a",)
    assert config.effects.lens_tau_s == pytest.approx(0.08, rel=0.2)
    assert config.specimen == SimConfig().specimen  # only the fitted fields are set


def test_the_cli_prints_a_table(session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", str(session)]) == 0
    text = capsys.readouterr().out
    assert "camera_rotation_rad" in text and "±" in text and "axis C12a" in text


def test_a_session_without_calibration_frames_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain"
    twin = SimulatedMicroscope(SimConfig(effects=EffectsConfig.none()))
    with RecordingMicroscope.open(twin, path) as recording:
        recording.acquire(RonchigramRequest(exposure_s=1e-3))
    with pytest.raises(CalibrationDataError, match="calibration_plan"):
        fit_session(path)
    assert main(["calibrate", str(path)]) == 2
    assert "calibration_plan" in capsys.readouterr().err


def test_a_session_missing_the_flat_frames_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "partial"
    twin = SimulatedMicroscope(SimConfig(effects=EffectsConfig.none()))
    meta = {"calibration_plan": PLAN.model_dump(mode="json")}
    with RecordingMicroscope.open(twin, path, metadata=meta) as recording:
        recording.recorder.task = "calibration/shift/ref"
        recording.acquire(RonchigramRequest(exposure_s=1e-3))
    with pytest.raises(CalibrationDataError, match=r"flat/0\.001"):
        fit_session(path)
    assert issubclass(CalibrationDataError, SessionError)


def test_an_out_of_range_fit_is_not_written(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from emauto.calibration.estimators import Estimate
    from emauto.errors import ConfigError

    broken = replace(fitted, estimates={**fitted.estimates})
    broken.estimates["pixel_angle_error"] = Estimate(0.9, 0.01, "")
    out = tmp_path / "bad.yaml"
    with pytest.raises(ConfigError, match="pixel_angle_error"):
        write_sim_config(broken, out)
    assert not out.exists()


def test_the_daemon_step_records_a_session_that_fits(tmp_path: Path) -> None:
    from emauto.agent.plans import STEP_KINDS, DaemonConfig
    from emauto.calibration.step import CalibrateTask, planned_frames
    from emauto.tasks.steps import StepContext

    assert STEP_KINDS.load("calibrate") is CalibrateTask
    short = PLAN.model_copy(
        update={"flat_frames": 3, "lag_delays_s": (0.0, 0.05, 0.1, 0.2), "sign_steps_m": {}}
    )
    task = CalibrateTask(plan=short)
    config = DaemonConfig.model_validate({"plan": [task.model_dump(mode="json")]})
    assert isinstance(config.plan[0], CalibrateTask)
    path = tmp_path / "daemon"
    twin = SimulatedMicroscope(SimConfig(ronchigram=RonchigramCameraConfig(rotation_rad=0.1)))
    reports: list[tuple[int, int]] = []
    meta = {"plan": [task.model_dump(mode="json")]}  # as the daemon writes it
    with RecordingMicroscope.open(twin, path, metadata=meta) as recording:
        recording.recorder.task = task.name
        out = task.run(
            recording, StepContext(recording.recorder, False, lambda d, t: reports.append((d, t)))
        )
        assert recording.recorder.task == task.name
    assert out["frames"] == planned_frames(short, twin.describe().knobs) == reports[-1][0]
    fitted = fit_session(path)
    assert fitted.estimates["camera_rotation_rad"].value == pytest.approx(0.1, abs=0.02)


def test_the_cli_records_and_fits_and_refuses_a_plan_without_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "flat_frames: 3\nlag_delays_s: [0.0, 0.05, 0.1, 0.2]\nsign_steps_m: {}\n", encoding="utf-8"
    )
    session = tmp_path / "recorded"
    assert main(["calibrate", str(session), "--plan", str(plan)]) == 2
    assert "--plan goes with --record" in capsys.readouterr().err
    args = ["calibrate", str(session), "--record", "sim://?seed=3", "--plan", str(plan), "--json"]
    assert main(args) == 0
    assert "camera_pixel_rad" in json.loads(capsys.readouterr().out)["estimates"]
    assert main(args) == 2  # the session folder exists now: nothing is overwritten


def test_the_cli_writes_what_the_driver_reports_wrong(
    session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--instrument`: the InstrumentCalibration that `CalibratedMicroscope` applies; with it
    the hidden twin's frames report the true angular pixel and C12a follows its setpoint."""
    from emauto.drivers.sim.twin import SimulatedMicroscope
    from emauto.microscope import RonchigramRequest
    from emauto.units import load_yaml
    from emauto.wrappers.calibrated import CalibratedMicroscope, InstrumentCalibration

    out = tmp_path / "instrument.yaml"
    assert main(["calibrate", str(session), "--instrument", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["instrument"] == str(out)
    calibration = load_yaml(out, InstrumentCalibration)
    assert calibration.flipped_knobs == ("C12a",)
    assert calibration.camera_pixel_scale == pytest.approx(1 / 1.06, rel=0.01)
    assert calibration.lens_settle_s == pytest.approx(5 * 0.08, rel=0.2)
    twin = SimulatedMicroscope(HIDDEN)
    scope = CalibratedMicroscope(twin, calibration)
    frame = scope.acquire(RonchigramRequest(exposure_s=1e-3))
    pixel = next(c.scale for c in frame.calibrations if c.units == "rad")
    assert pixel == pytest.approx(twin.grid.camera_pixel_rad, rel=0.01)
    scope.set({"C12a": 4e-9})
    scope.acquire(RonchigramRequest(exposure_s=1e-3))  # waits for the lens to settle
    assert twin.true_aberrations().C12a == pytest.approx(4e-9, abs=0.3e-9)


def test_the_flat_field_corrects_a_gain_map_and_is_left_out_when_uniform(
    tmp_path: Path,
) -> None:
    """A camera with 10 % rms pixel gains (correlated over 3 px; not a map anything was
    chosen on): the fitted flat field leaves under half of it. A uniform camera gets no flat
    field (its speckle is not mistaken for gains)."""
    from emauto.drivers.sim.effects import camera_gain_map
    from emauto.wrappers.calibrated import load_instrument_calibration

    short = CalibrationPlan(
        flat_frames=2,
        lag_delays_s=(2e-3, 0.03, 0.25, 1.5),
        drift_waits_s=(2.0,),
        sign_steps_m={},
    )
    camera = RonchigramCameraConfig(
        gain_nonuniformity_rms=0.1, gain_correlation_px=3.0, gain_map_seed=11
    )
    uneven = SimConfig(seed=2, ronchigram=camera)
    record_calibration(SimulatedMicroscope(uneven), tmp_path / "uneven", short)
    out = write_instrument_calibration(fit_session(tmp_path / "uneven"), tmp_path / "i.yaml")
    calibration = load_instrument_calibration(out)
    assert calibration.flat_field == str(tmp_path / "i.flat.npy")
    fitted = np.load(tmp_path / "i.flat.npy")
    truth = camera_gain_map(camera)
    assert truth is not None
    inside = fitted != 1.0
    true_gains = truth[inside] / truth[inside].mean()
    assert np.std(true_gains / fitted[inside]) < 0.5 * np.std(true_gains)

    record_calibration(SimulatedMicroscope(SimConfig(seed=2)), tmp_path / "even", short)
    result = fit_session(tmp_path / "even")
    assert result.flat_field is None and any("no flat field" in n for n in result.notes)
    out = write_instrument_calibration(result, tmp_path / "even.yaml")
    assert load_instrument_calibration(out).flat_field is None
