"""The temscript adapter against temscript's NullMicroscope: units, axes and signs."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("temscript")

from emauto.drivers.vendors.temscript import TemscriptMicroscope
from emauto.errors import BeamBlankedError, OutOfLimitsError
from emauto.microscope import ImageRequest, RasterScan, RonchigramRequest


@pytest.fixture
def scope() -> TemscriptMicroscope:
    return TemscriptMicroscope(stigmator_m_per_unit=2e-6)


def test_knobs_map_to_temscript_in_si_with_krivanek_signs(scope: TemscriptMicroscope) -> None:
    scope.set(
        {
            "C10": 1.5e-6,
            "C12a": 0.2e-6,
            "C12b": -0.4e-6,
            "beam_shift_x": 30e-9,
            "beam_tilt_y": -2e-3,
            "convergence_angle": 20e-3,
            "stage_x": 50e-6,
            "scan_dwell": 4e-6,
        }
    )
    tem = scope.tem
    assert tem.get_probe_defocus() == 1.5e-6  # positive = overfocus in both
    assert tem.get_condenser_stigmator() == pytest.approx((0.1, -0.2))  # logical units
    assert tem.get_beam_shift()[0] == 30e-9
    assert tem.get_beam_tilt()[1] == -2e-3
    assert tem.get_convergence_angle() == 20e-3
    assert tem.get_stage_position()["x"] == 50e-6
    assert tem.get_stem_acquisition_param()["dwell_time(s)"] == 4e-6
    assert scope.read().knobs["C12b"] == pytest.approx(-0.4e-6)


def test_invalid_set_writes_nothing(scope: TemscriptMicroscope) -> None:
    with pytest.raises(OutOfLimitsError):
        scope.set({"C10": 1e-6, "stage_x": 1.0})  # the stage would be clamped by temscript
    assert scope.tem.get_probe_defocus() == 0.0
    assert scope.tem.get_stage_position()["x"] == 0.0


def test_description_is_si(scope: TemscriptMicroscope) -> None:
    description = scope.describe()
    assert description.energy_eV == 200e3  # temscript reports kV
    assert description.knobs["stage_x"].upper == pytest.approx(1e-3)
    assert description.detectors["ronchigram"].shape == (256, 256)


def test_safe_blanks_and_ronchigram(scope: TemscriptMicroscope) -> None:
    frame = scope.acquire(RonchigramRequest(exposure_s=0.01))
    assert frame.data.shape == (256, 256) and frame.dose_e == pytest.approx(
        1e-9 * 0.01 / 1.602176634e-19
    )
    assert math.isclose(frame.calibrations[0].scale, 25e-6 * 8)
    scope.safe()
    assert scope.tem.get_beam_blanked()
    with pytest.raises(BeamBlankedError):
        scope.acquire(RonchigramRequest(exposure_s=0.01))


def test_no_stem_detectors_is_a_clear_error(scope: TemscriptMicroscope) -> None:
    with pytest.raises(Exception, match="cannot acquire scanned images"):
        scope.acquire(ImageRequest(scan=RasterScan(shape=(4, 4)), dwell_s=1e-6))


def test_open_temscript_errors_are_clear() -> None:
    from emauto.drivers.vendors.temscript import open_temscript
    from emauto.errors import BackendError

    with pytest.raises(BackendError, match=r"cannot open the temscript microscope '127\.0"):
        open_temscript("127.0.0.1:1")
