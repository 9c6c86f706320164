"""The Nion adapter, headless against nionswift-usim: controls, signs, Ronchigram, safe."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("nion.usim_device")

from emauto.drivers.vendors.nion import CONTROLS, NionMicroscope
from emauto.errors import BeamBlankedError, InvalidRequestError, UnknownKnobError
from emauto.microscope import ImageRequest, RasterScan, RonchigramRequest


@pytest.fixture
def scope() -> Iterator[NionMicroscope]:
    microscope = NionMicroscope(camera_pixels=128)
    yield microscope
    microscope.close()


def test_aberrations_are_krivanek_cartesian_metres(scope: NionMicroscope) -> None:
    values = {"C10": 1e-6, "C12a": 2e-8, "C12b": -3e-8, "C21b": 4e-7, "C30": 5e-6}
    scope.set(values)
    instrument = scope.instrument
    assert instrument.get_value("C10") == 1e-6
    assert instrument.get_value("C12.x") == 2e-8 and instrument.get_value("C12.y") == -3e-8
    assert instrument.get_value("C21.y") == 4e-7 and instrument.get_value("C30") == 5e-6
    # the simulator's optics see the same numbers (C10Control = C10 + tuning offset 0)
    assert instrument.get_value("C10Control") == 1e-6
    state = scope.read()
    assert all(state.knobs[name] == value for name, value in values.items())


def test_every_control_exists(scope: NionMicroscope) -> None:
    for control in CONTROLS.values():
        assert scope.instrument.get_value(control) is not None, control


def test_invalid_set_writes_nothing(scope: NionMicroscope) -> None:
    before = scope.instrument.get_value("C10")
    with pytest.raises(UnknownKnobError):
        scope.set({"C10": 1e-6, "C99": 1.0})
    assert scope.instrument.get_value("C10") == before


def test_ronchigram_follows_defocus(scope: NionMicroscope) -> None:
    request = RonchigramRequest(exposure_s=0.01)
    first = scope.acquire(request)
    assert first.data.shape == (128, 128) and first.calibrations[0].units == "rad"
    noise = np.abs(scope.acquire(request).data - first.data).mean()  # same optics, new noise
    scope.set({"C10": 0.5e-6 + 1.5e-6})
    second = scope.acquire(request)
    assert np.abs(second.data - first.data).mean() > 2 * noise


def test_raster_and_safe(scope: NionMicroscope) -> None:
    image = scope.acquire(ImageRequest(scan=RasterScan(shape=(6, 10)), dwell_s=2e-6))
    assert image.data.shape == (6, 10) and np.all(image.data >= 0)
    scope.safe()
    assert scope.instrument.get_value("C_Blank") == 1.0
    with pytest.raises(BeamBlankedError):
        scope.acquire(RonchigramRequest(exposure_s=0.01))
    scope.set({"beam_blank": 0.0})
    assert scope.instrument.get_value("C_Blank") == 0.0


def _mean_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_parked_probe_position_moves_the_ronchigram(scope: NionMicroscope) -> None:
    """usim reads the parked position only with a scan device registered (issue 21)."""

    def frame(x: float = 0.0, y: float = 0.0) -> np.ndarray:
        request = RonchigramRequest(exposure_s=0.05, probe_position_m=(x, y))
        return scope.acquire(request).data

    centre = frame()
    noise = _mean_change(frame(), centre)  # same probe, new shot noise
    moved_x, moved_y = frame(50e-9), frame(0.0, 50e-9)
    assert _mean_change(moved_x, centre) > 3 * noise
    assert _mean_change(moved_y, centre) > 3 * noise
    assert scope.instrument.scan_controller is not None
    assert scope.instrument.probe_state == "parked"
    # a parked probe at +x sees what the beam shift +x shows (usim adds both to its c0a):
    # axis and scale of the mapping, not only that something changed
    scope.set({"beam_shift_x": 50e-9})
    shifted_x = frame()
    scope.set({"beam_shift_x": 0.0, "beam_shift_y": 50e-9})
    shifted_y = frame()
    assert _mean_change(moved_x, shifted_x) < 1.5 * noise
    assert _mean_change(moved_y, shifted_y) < 1.5 * noise
    assert _mean_change(moved_x, shifted_y) > 3 * noise


def test_probe_parked_in_the_scan_field(scope: NionMicroscope) -> None:
    scope.set({"scan_fov": 20e-9})
    scope.acquire(RonchigramRequest(exposure_s=0.01, probe_position_m=(5e-9, -2.5e-9)))
    parked = scope.instrument.probe_position
    assert parked.x == pytest.approx(0.75) and parked.y == pytest.approx(0.375)
    assert scope.instrument.scan_context.fov_nm == pytest.approx(20.0)
    # outside the field: the field grows to hold the position, nothing is clipped
    scope.acquire(RonchigramRequest(exposure_s=0.01, probe_position_m=(-50e-9, 0.0)))
    assert scope.instrument.scan_context.fov_nm == pytest.approx(100.0)
    assert scope.instrument.probe_position.x == pytest.approx(0.0)


def test_probe_position_beyond_the_scan_limits_is_refused(scope: NionMicroscope) -> None:
    limit = scope.describe().scan.max_offset_m
    with pytest.raises(InvalidRequestError, match="probe position"):
        scope.acquire(RonchigramRequest(exposure_s=0.01, probe_position_m=(1.5 * limit, 0.0)))
