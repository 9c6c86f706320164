"""One Microscope contract suite, run against every backend.

- ``twin``: the abTEM twin in-process, behind the safety layer;
- ``zmq-twin``: ZeroMQ to an ``emauto serve --backend sim`` subprocess;
- ``zmq-temscript``: ZeroMQ to a server over temscript's NullMicroscope;
- ``zmq-nion``: ZeroMQ to a server over nionswift-usim's instrument and Ronchigram camera.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from zmq_helpers import ServerProcess, write_server_config

from emauto.drivers.sim import SimulatedMicroscope
from emauto.drivers.sim.config import SimConfig
from emauto.drivers.zmq.client import RemoteMicroscope
from emauto.errors import (
    BeamBlankedError,
    InvalidRequestError,
    NonFiniteSetpointError,
    OutOfLimitsError,
    StepTooLargeError,
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
from emauto.units import load_yaml
from emauto.wrappers.safety import SafeMicroscope, SafetyConfig

BACKENDS = ["twin", "zmq-twin", "zmq-temscript", "zmq-nion"]
NEEDS = {"zmq-temscript": "temscript", "zmq-nion": "nion.usim_device"}
#: What a backend truly cannot do, and why.
CANNOT = {
    ("zmq-temscript", "image"): "temscript's NullMicroscope has no STEM detectors",
    ("zmq-temscript", "positions"): "temscript's NullMicroscope has no STEM detectors",
    ("zmq-temscript", "segments"): "temscript's NullMicroscope has no STEM detectors",
    ("zmq-nion", "positions"): "nionswift-usim scans rasters only",
    ("zmq-nion", "segments"): "nionswift-usim scans rasters only",
}


@pytest.fixture(scope="module", params=BACKENDS)
def scope(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sim_config_file: Path,
) -> Iterator[Microscope]:
    name = request.param
    module = NEEDS.get(name)
    if module is not None and importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module} is not installed (pip install 'emauto[{name[4:]}]')")
    if name == "twin":
        twin = SimulatedMicroscope(load_yaml(sim_config_file, SimConfig))
        safe = SafeMicroscope(twin, SafetyConfig())
        yield safe
        safe.close()
        return
    backend = {"zmq-twin": "sim", "zmq-temscript": "temscript", "zmq-nion": "nion"}[name]
    folder = tmp_path_factory.mktemp(name)
    extra = {"temscript": "null"} if backend == "temscript" else {}
    config = write_server_config(
        folder / "server.yaml", backend, sim_config=sim_config_file, **extra
    )
    server = ServerProcess(config).start()
    remote = RemoteMicroscope(server.endpoint, timeout_s=30.0, retries=1)
    try:
        yield remote
    finally:
        remote.close()
        assert server.stop() == 0


def skip_if_cannot(request: pytest.FixtureRequest, what: str) -> None:
    backend = request.node.callspec.params["scope"]
    reason = CANNOT.get((backend, what))
    if reason:
        pytest.skip(reason)


def unblank(scope: Microscope) -> None:
    if scope.read().beam_blanked:
        scope.set({"beam_blank": 0.0})


def test_is_a_microscope(scope: Microscope) -> None:
    assert isinstance(scope, Microscope)


def test_describe(scope: Microscope) -> None:
    description = scope.describe()
    assert {"C10", "C12a", "C12b", "beam_blank", "stage_x"} <= set(description.knobs)
    assert description.knobs["C10"].unit == "m"
    assert description.knobs["beam_blank"].binary
    assert description.energy_eV > 1e4 and description.beam_current_A > 0
    assert description.detectors["ronchigram"].kind == "camera"


def test_read_has_every_knob_within_limits(scope: Microscope) -> None:
    description = scope.describe()
    state = scope.read()
    assert set(state.knobs) == set(description.knobs)
    for name, value in state.knobs.items():
        spec = description.knobs[name]
        assert spec.lower <= value <= spec.upper, name


def test_set_is_absolute_and_reads_back(scope: Microscope) -> None:
    before = scope.read().knobs["C10"]
    target = before + 0.5e-6 if before < 0 else before - 0.5e-6
    state = scope.set({"C10": target})
    assert math.isclose(state.knobs["C10"], target, rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(scope.read().knobs["C10"], target, rel_tol=1e-9, abs_tol=1e-15)
    again = scope.set({"C10": target})  # absolute: setting twice changes nothing
    assert math.isclose(again.knobs["C10"], target, rel_tol=1e-9, abs_tol=1e-15)


@pytest.mark.parametrize(
    ("setpoints", "error"),
    [
        ({"C10": math.nan}, NonFiniteSetpointError),
        ({"C10": math.inf}, NonFiniteSetpointError),
        ({"C10": -math.inf}, NonFiniteSetpointError),
        ({"C10": 1.0}, OutOfLimitsError),
        ({"C12a": 0.0, "no_such_knob": 1.0}, UnknownKnobError),
        ({"C12a": 0.0, "C10": math.nan}, NonFiniteSetpointError),
        ({"beam_blank": 0.5}, Exception),
    ],
)
def test_invalid_setpoints_change_nothing(
    scope: Microscope, setpoints: dict[str, float], error: type[Exception]
) -> None:
    before = scope.read().knobs
    with pytest.raises(error):
        scope.set(setpoints)
    assert scope.read().knobs == before


def test_step_larger_than_max_step_is_rejected(scope: Microscope) -> None:
    spec = scope.describe().knobs["C10"]
    before = scope.read().knobs
    target = before["C10"] + 1.5 * spec.max_step
    if target > spec.upper:
        target = before["C10"] - 1.5 * spec.max_step
    with pytest.raises(StepTooLargeError, match="maximum step"):
        scope.set({"C10": target})
    assert scope.read().knobs == before


def test_ronchigram(scope: Microscope) -> None:
    unblank(scope)
    frame = scope.acquire(RonchigramRequest(exposure_s=0.01))
    camera = scope.describe().detectors["ronchigram"]
    assert frame.kind == "ronchigram" and frame.data.dtype == np.float32
    assert frame.data.shape == camera.shape
    assert np.all(np.isfinite(frame.data))
    assert frame.dose_e > 0 and frame.exposure_s == pytest.approx(0.01)
    assert len(frame.calibrations) == 2 and frame.calibrations[0].units == "rad"
    assert not frame.state.beam_blanked
    assert scope.read().dose_e >= frame.dose_e


def test_raster_image(scope: Microscope, request: pytest.FixtureRequest) -> None:
    skip_if_cannot(request, "image")
    unblank(scope)
    frame = scope.acquire(ImageRequest(scan=RasterScan(shape=(8, 12)), dwell_s=1e-6))
    assert frame.kind == "image" and frame.data.shape == (8, 12)
    assert frame.dose_e > 0 and frame.calibrations[0].units == "m"


def test_positions_image(scope: Microscope, request: pytest.FixtureRequest) -> None:
    skip_if_cannot(request, "positions")
    unblank(scope)
    positions = np.array([[0.0, 0.0], [1e-10, 0.0], [2e-10, 1e-10]])
    frame = scope.acquire(ImageRequest(scan=PositionsScan(positions_m=positions), dwell_s=1e-6))
    assert frame.data.shape == (3,)
    assert frame.positions_m is not None
    np.testing.assert_array_equal(frame.positions_m, positions)


def test_segments_image(scope: Microscope, request: pytest.FixtureRequest) -> None:
    skip_if_cannot(request, "segments")
    unblank(scope)
    segments = (
        LineSegment(start_m=(0.0, 0.0), end_m=(4e-10, 0.0), n_points=5),
        LineSegment(start_m=(0.0, 1e-10), end_m=(0.0, 3e-10), n_points=3),
    )
    frame = scope.acquire(ImageRequest(scan=SegmentsScan(segments=segments), dwell_s=1e-6))
    assert frame.data.shape == (8,) and frame.positions_m is not None
    assert frame.request.scan == SegmentsScan(segments=segments)


def test_bad_request_is_a_typed_error(scope: Microscope) -> None:
    unblank(scope)
    with pytest.raises(InvalidRequestError, match="exposure"):
        scope.acquire(RonchigramRequest(exposure_s=30.0))
    with pytest.raises(InvalidRequestError):
        scope.acquire(RonchigramRequest(exposure_s=0.01, detector="no-such-camera"))


def test_safe_blanks_the_beam_and_acquisition_refuses(scope: Microscope) -> None:
    unblank(scope)
    scope.safe()
    scope.safe()  # idempotent
    state = scope.read()
    assert state.beam_blanked and not state.stage_moving
    with pytest.raises(BeamBlankedError):
        scope.acquire(RonchigramRequest(exposure_s=0.01))
    scope.set({"beam_blank": 0.0})
    assert not scope.read().beam_blanked
