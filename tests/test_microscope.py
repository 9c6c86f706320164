"""The contract's models and setpoint validation, independent of any backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from emauto.drivers.sim.knobs import default_values, twin_knobs
from emauto.microscope import (
    ImageRequest,
    InvalidSetpointError,
    KnobSpec,
    LineSegment,
    MicroscopeDescription,
    NonFiniteSetpointError,
    OutOfLimitsError,
    PositionsScan,
    RasterScan,
    RonchigramRequest,
    ScanLimits,
    SegmentsScan,
    UnknownKnobError,
    validate_setpoints,
)


@pytest.fixture
def description() -> MicroscopeDescription:
    return MicroscopeDescription(
        backend="test",
        energy_eV=200e3,
        beam_current_A=1e-11,
        knobs=twin_knobs(),
        detectors={},
        scan=ScanLimits(
            max_fov_m=1e-6,
            max_offset_m=1e-6,
            min_dwell_s=1e-7,
            max_dwell_s=1e-3,
            max_positions=100,
            min_exposure_s=1e-4,
            max_exposure_s=1.0,
            settle_s=0,
            flyback_s=0,
        ),
    )


def test_valid_setpoints_come_back_as_floats(description: MicroscopeDescription) -> None:
    checked = validate_setpoints(description, default_values(), {"C10": 1e-8, "beam_blank": 1})
    assert checked == {"C10": 1e-8, "beam_blank": 1.0}
    assert all(type(v) is float for v in checked.values())


@pytest.mark.parametrize(
    ("setpoints", "error", "fragment"),
    [
        ({"C99": 0.0}, UnknownKnobError, "unknown knob 'C99'"),
        ({"C10": math.nan}, NonFiniteSetpointError, "finite"),
        ({"C10": math.inf}, NonFiniteSetpointError, "finite"),
        ({"C10": -math.inf}, NonFiniteSetpointError, "finite"),
        ({"C10": "1e-9"}, NonFiniteSetpointError, "real number"),
        ({"C10": None}, NonFiniteSetpointError, "real number"),
        ({"C10": True}, NonFiniteSetpointError, "real number"),
        ({"C10": 1.0}, OutOfLimitsError, "outside the limits"),
        ({"convergence_angle": 0.0}, OutOfLimitsError, "outside the limits"),
        ({"beam_blank": 0.5}, InvalidSetpointError, "expected 0 or 1"),
    ],
)
def test_bad_setpoints_raise_typed_errors(
    description: MicroscopeDescription, setpoints: dict, error: type, fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        validate_setpoints(description, default_values(), setpoints)


def test_setpoints_must_be_a_mapping(description: MicroscopeDescription) -> None:
    with pytest.raises(InvalidSetpointError, match="mapping"):
        validate_setpoints(description, default_values(), [("C10", 0.0)])  # type: ignore[arg-type]


def test_knob_limits_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="lower"):
        KnobSpec(name="x", unit="m", lower=1.0, upper=0.0, max_step=1.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"exposure_s": 0.0},
        {"exposure_s": -1.0},
        {"exposure_s": math.nan},
        {"exposure_s": 0.1, "probe_position_m": (math.inf, 0.0)},
        {"exposure_s": 0.1, "colour": "red"},
    ],
)
def test_bad_ronchigram_requests_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        RonchigramRequest(**bad)


def test_positions_are_checked() -> None:
    scan = PositionsScan(positions_m=[[0.0, 1e-9], [2e-9, 3e-9]])
    assert scan.positions_m.shape == (2, 2)
    for bad in ([[0.0, math.nan]], [[0.0, 1.0, 2.0]], [], "abc"):
        with pytest.raises(ValidationError):
            PositionsScan(positions_m=bad)


def test_segments_expand_in_order() -> None:
    scan = SegmentsScan(
        segments=(
            LineSegment(start_m=(0.0, 0.0), end_m=(1e-9, 0.0), n_points=3),
            LineSegment(start_m=(0.0, 1e-9), end_m=(0.0, 1e-9), n_points=1),
        )
    )
    np.testing.assert_allclose(
        scan.positions(), [[0, 0], [0.5e-9, 0], [1e-9, 0], [0, 1e-9]], atol=1e-20
    )


def test_image_request_discriminates_scan_modes() -> None:
    request = ImageRequest.model_validate({"scan": {"mode": "raster", "shape": [4, 8]}})
    assert isinstance(request.scan, RasterScan)
    with pytest.raises(ValidationError):
        ImageRequest.model_validate({"scan": {"mode": "spiral"}})
    with pytest.raises(ValidationError):
        ImageRequest(scan=RasterScan(shape=(0, 4)))
