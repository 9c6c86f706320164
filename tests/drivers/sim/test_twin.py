"""The Microscope contract on the twin: describe, read, set, acquire, safe; determinism."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from emauto.drivers.sim import SimulatedMicroscope
from emauto.drivers.sim.config import EffectsConfig, SimConfig
from emauto.drivers.sim.knobs import HYSTERESIS_WIDTH
from emauto.errors import (
    BeamBlankedError,
    ClosedError,
    InvalidRequestError,
    InvalidSetpointError,
    NonFiniteSetpointError,
    OutOfLimitsError,
    UnknownKnobError,
)
from emauto.microscope import (
    ImageRequest,
    LineSegment,
    Microscope,
    PositionsScan,
    RasterScan,
    RonchigramRequest,
    SegmentsScan,
)

RONCHIGRAM = RonchigramRequest(exposure_s=0.01)


def make_scope(recipe: Path, cache: Path, **overrides: object) -> SimulatedMicroscope:
    config = SimConfig.model_validate(
        {"specimen": str(recipe), "cache_dir": cache, "seed": 1, **overrides}
    )
    return SimulatedMicroscope(config)


@pytest.fixture
def scope(tiny_carbon: Path, specimen_cache: Path) -> SimulatedMicroscope:
    return make_scope(tiny_carbon, specimen_cache)


def test_is_a_microscope(scope: SimulatedMicroscope) -> None:
    assert isinstance(scope, Microscope)


def test_describe_lists_knobs_detectors_and_scan(scope: SimulatedMicroscope) -> None:
    description = scope.describe()
    for name in (
        "C10",
        "C12a",
        "C12b",
        "C21a",
        "C23b",
        "C30",
        "C32a",
        "C34b",
        "beam_shift_x",
        "beam_tilt_y",
        "convergence_angle",
        "stage_x",
        "scan_fov",
        "scan_rotation",
        "scan_dwell",
        "beam_blank",
    ):
        spec = description.knobs[name]
        assert spec.lower < spec.upper and spec.max_step > 0
    assert description.knobs["C10"].unit == "m"
    assert description.knobs["beam_tilt_x"].unit == "rad"
    camera = description.detectors["ronchigram"]
    assert camera.shape == (128, 128) and camera.pixel_angle_rad is not None
    assert description.detectors["adf"].kind == "scan"


def test_set_then_read(scope: SimulatedMicroscope) -> None:
    state = scope.set({"C10": -20e-9, "C12a": 5e-9})
    assert state.knobs["C10"] == -20e-9 and scope.read().knobs["C12a"] == 5e-9


@pytest.mark.parametrize(
    ("setpoints", "error"),
    [
        ({"C10": math.nan}, NonFiniteSetpointError),
        ({"C10": math.inf}, NonFiniteSetpointError),
        ({"C10": 1e-9, "C12a": math.nan}, NonFiniteSetpointError),
        ({"C10": 1e-9, "nonsense": 0.0}, UnknownKnobError),
        ({"C10": 1e-9, "C30": 1.0}, OutOfLimitsError),
        ({"C10": "a"}, InvalidSetpointError),
        ({"C10": [1e-9]}, InvalidSetpointError),
    ],
)
def test_bad_setpoints_change_nothing(
    scope: SimulatedMicroscope, setpoints: dict, error: type
) -> None:
    before = scope.read()
    truth = scope.true_aberrations()
    with pytest.raises(error):
        scope.set(setpoints)
    assert scope.read() == before
    assert scope.true_aberrations() == truth


def test_ronchigram_frame(scope: SimulatedMicroscope) -> None:
    frame = scope.acquire(RONCHIGRAM)
    assert frame.kind == "ronchigram" and frame.data.shape == (128, 128)
    assert frame.data.dtype == np.float32
    assert frame.dose_e == pytest.approx(20e-12 * 0.01 / 1.602176634e-19)
    assert frame.state.knobs["C10"] == 0.0
    assert [c.units for c in frame.calibrations] == ["rad", "rad"]
    # the camera centre is at zero scattering angle
    cal = frame.calibrations[1]
    assert abs(cal.offset + cal.scale * 63.75) < cal.scale


def test_ronchigram_conserves_electrons_without_noise(tiny_carbon: Path, specimen_cache) -> None:  # type: ignore[no-untyped-def]
    scope = make_scope(tiny_carbon, specimen_cache, effects=EffectsConfig.none().model_dump())
    frame = scope.acquire(RONCHIGRAM)
    # a thin carbon film scatters only a little outside the camera's 60 mrad
    assert 0.9 * frame.dose_e < frame.data.sum() <= 1.0001 * frame.dose_e


def test_adf_raster_positions_and_segments(scope: SimulatedMicroscope) -> None:
    raster = scope.acquire(ImageRequest(scan=RasterScan(shape=(16, 24))))
    assert raster.data.shape == (16, 24)
    assert raster.calibrations[1].scale == pytest.approx(scope.read().knobs["scan_fov"] / 24)
    sparse = scope.acquire(ImageRequest(scan=PositionsScan(positions_m=[[0, 0], [1e-10, 2e-10]])))
    assert sparse.data.shape == (2,) and sparse.positions_m is not None
    lines = scope.acquire(
        ImageRequest(
            scan=SegmentsScan(segments=(LineSegment(start_m=(0, 0), end_m=(1e-9, 0), n_points=5),)),
            dwell_s=1e-6,
        )
    )
    assert lines.data.shape == (5,)
    assert lines.exposure_s == pytest.approx(5e-6)


def test_bad_requests(scope: SimulatedMicroscope) -> None:
    with pytest.raises(InvalidRequestError, match="exposure"):
        scope.acquire(RonchigramRequest(exposure_s=100.0))
    with pytest.raises(InvalidRequestError, match="limit"):
        scope.acquire(ImageRequest(scan=PositionsScan(positions_m=[[1.0, 0.0]])))
    with pytest.raises(InvalidRequestError, match="dwell"):
        scope.acquire(ImageRequest(scan=RasterScan(shape=(2, 2)), dwell_s=1.0))
    with pytest.raises(InvalidRequestError, match="detector"):
        scope.acquire(ImageRequest(detector="eels", scan=RasterScan(shape=(2, 2))))
    with pytest.raises(InvalidRequestError):
        scope.acquire("ronchigram")  # type: ignore[arg-type]


def test_safe_blanks_and_stops_the_stage(scope: SimulatedMicroscope) -> None:
    scope.set({"stage_x": 50e-6})
    assert scope.read().stage_moving
    scope.acquire(RonchigramRequest(exposure_s=0.5))  # 0.5 s at 20 um/s: 10 um travelled
    scope.safe()
    state = scope.read()
    assert state.beam_blanked and not state.stage_moving
    assert state.knobs["stage_x"] == pytest.approx(10e-6, rel=0.01)
    with pytest.raises(BeamBlankedError):
        scope.acquire(RONCHIGRAM)
    scope.set({"beam_blank": 0.0})
    scope.acquire(RONCHIGRAM)


def test_close_goes_safe_and_refuses_work(scope: SimulatedMicroscope) -> None:
    scope.close()
    with pytest.raises(ClosedError):
        scope.read()
    scope.safe()  # idempotent, never raises


def test_same_seed_same_frames(tiny_carbon: Path, specimen_cache: Path) -> None:
    def run(seed: int) -> list[np.ndarray]:
        scope = make_scope(tiny_carbon, specimen_cache, seed=seed)
        scope.set({"C10": -10e-9, "C21a": 100e-9})
        frames = [scope.acquire(RONCHIGRAM).data, scope.acquire(RONCHIGRAM).data]
        frames.append(scope.acquire(ImageRequest(scan=RasterScan(shape=(8, 8)))).data)
        return frames

    first, again, other = run(3), run(3), run(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_ronchigram_responds_to_aberrations(tiny_carbon: Path, specimen_cache: Path) -> None:
    scope = make_scope(tiny_carbon, specimen_cache, effects=EffectsConfig.none().model_dump())
    flat = scope.acquire(RONCHIGRAM).data
    scope.set({"C12a": 40e-9})
    astig = scope.acquire(RONCHIGRAM).data
    assert np.linalg.norm(astig - flat) > 0.05 * np.linalg.norm(flat)


def test_lens_lag_and_hysteresis(tiny_carbon: Path, specimen_cache: Path) -> None:
    effects = EffectsConfig.none().model_copy(
        update={"lens_lag": True, "hysteresis": True, "lens_tau_s": 0.05}
    )
    scope = make_scope(tiny_carbon, specimen_cache, effects=effects.model_dump())
    scope.set({"C10": 100e-9})
    assert scope.true_aberrations().C10 == 0.0  # not moved yet
    soon = scope.true_probe(scope.read().time_s + 0.05).coefficients_m[0]
    width = HYSTERESIS_WIDTH["C10"]
    assert soon == pytest.approx((1 - math.exp(-1)) * (100e-9 - width / 2), rel=1e-6)
    for _ in range(10):
        scope.acquire(RonchigramRequest(exposure_s=0.1))
    assert pytest.approx(100e-9 - width / 2, rel=1e-3) == scope.true_aberrations().C10
    scope.set({"C10": 0.0})
    for _ in range(10):
        scope.acquire(RonchigramRequest(exposure_s=0.1))
    assert pytest.approx(width / 2, rel=1e-3) == scope.true_aberrations().C10


def test_drift_moves_the_specimen(tiny_carbon: Path, specimen_cache: Path) -> None:
    effects = EffectsConfig.none().model_copy(update={"drift": True, "drift_speed_m_per_s": 1e-9})
    scope = make_scope(tiny_carbon, specimen_cache, effects=effects.model_dump())
    scope.set({"C10": -30e-9})
    first = scope.acquire(RonchigramRequest(exposure_s=0.01)).data
    for _ in range(3):
        scope.acquire(RonchigramRequest(exposure_s=1.0))
    later = scope.acquire(RonchigramRequest(exposure_s=0.01)).data
    assert not np.allclose(first, later)
