"""The Nion adapter, headless against nionswift-usim: controls, signs, Ronchigram, safe."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nion.usim_device")

from emauto.drivers.vendors.nion import CONTROLS, NionMicroscope
from emauto.errors import BeamBlankedError, UnknownKnobError
from emauto.microscope import ImageRequest, RasterScan, RonchigramRequest


@pytest.fixture
def scope() -> NionMicroscope:
    return NionMicroscope(camera_pixels=128)


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
