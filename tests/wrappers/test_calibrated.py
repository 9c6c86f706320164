"""`CalibratedMicroscope` on real twins that carry the very error it corrects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from emauto.drivers.sim.config import EffectsConfig, SimConfig
from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.errors import ConfigError
from emauto.microscope import RonchigramRequest
from emauto.wrappers.calibrated import CalibratedMicroscope, InstrumentCalibration


def _twin(recipe: Path, cache: Path, **overrides: Any) -> SimulatedMicroscope:
    return SimulatedMicroscope(
        SimConfig.model_validate({"specimen": str(recipe), "cache_dir": cache, **overrides})
    )


def _rad_scale(frame: Any) -> float:
    return next(c.scale for c in frame.calibrations if c.units == "rad")


def test_the_camera_scale_is_put_right(tiny_carbon: Path, specimen_cache: Path) -> None:
    twin = _twin(tiny_carbon, specimen_cache, ronchigram={"pixel_angle_error": 0.1})
    true_pixel = twin.grid.camera_pixel_rad
    reported = _rad_scale(twin.acquire(RonchigramRequest(exposure_s=1e-3)))
    assert reported == pytest.approx(1.1 * true_pixel)
    scope = CalibratedMicroscope(twin, InstrumentCalibration(camera_pixel_scale=1 / 1.1))
    assert _rad_scale(scope.acquire(RonchigramRequest(exposure_s=1e-3))) == pytest.approx(
        true_pixel, rel=1e-12
    )
    camera = scope.describe().detectors["ronchigram"]
    assert camera.pixel_angle_rad == pytest.approx(true_pixel, rel=1e-12)


def test_a_flipped_axis_follows_the_setpoint(tiny_carbon: Path, specimen_cache: Path) -> None:
    twin = _twin(tiny_carbon, specimen_cache, flipped_knobs=["C12a"], effects=EffectsConfig.none())
    scope = CalibratedMicroscope(twin, InstrumentCalibration(flipped_knobs=("C12a",)))
    state = scope.set({"C12a": 5e-9, "C12b": 3e-9})
    assert state.knobs["C12a"] == pytest.approx(5e-9)
    assert scope.read().knobs["C12a"] == pytest.approx(5e-9)
    assert twin.true_aberrations().C12a == pytest.approx(5e-9)  # the optics follow
    assert twin.true_aberrations().C12b == pytest.approx(3e-9)
    frame = scope.acquire(RonchigramRequest(exposure_s=1e-3))
    assert frame.state.knobs["C12a"] == pytest.approx(5e-9)
    # the same command without the calibration goes the wrong way
    bare = _twin(tiny_carbon, specimen_cache, flipped_knobs=["C12a"], effects=EffectsConfig.none())
    bare.set({"C12a": 5e-9})
    assert bare.true_aberrations().C12a == pytest.approx(-5e-9)


def test_a_slow_lens_is_measured_settled(tiny_carbon: Path, specimen_cache: Path) -> None:
    twin = _twin(tiny_carbon, specimen_cache, effects={"lens_tau_s": 0.2, "hysteresis": False})
    scope = CalibratedMicroscope(twin, InstrumentCalibration(lens_settle_s=1.0))
    before = scope.read().time_s
    scope.set({"C10": scope.read().knobs["C10"] + 20e-9})
    frame = scope.acquire(RonchigramRequest(exposure_s=1e-3, wait_s=0.1))
    assert frame.request.wait_s == 1.0
    assert scope.read().time_s - before >= 1.0
    # 1 s = 5 time constants: the lens is within 1 % of its 20 nm step (at 0.1 s: 40 %)
    lag = twin.read().knobs["C10"] - twin.true_aberrations().C10
    assert 0 < lag < 0.2e-9
    # the next frame, with no knob changed since, is not delayed (no drift between them)
    again = scope.acquire(RonchigramRequest(exposure_s=1e-3, probe_position_m=(3e-10, 0.0)))
    assert again.request.wait_s == 0.0


def test_bad_calibrations_are_refused(tiny_carbon: Path, specimen_cache: Path) -> None:
    twin = _twin(tiny_carbon, specimen_cache)
    with pytest.raises(ConfigError, match="lacks"):
        CalibratedMicroscope(twin, InstrumentCalibration(flipped_knobs=("C99",)))
    with pytest.raises(ValidationError):
        InstrumentCalibration(flipped_knobs=("C12a", "C12a"))
    with pytest.raises(ValidationError):
        InstrumentCalibration(camera_pixel_scale=0.0)
    with pytest.raises(ValidationError):
        InstrumentCalibration(lens_settle_s=-1.0)


def test_the_flat_field_divides_out_the_pixel_gains(
    tiny_carbon: Path, specimen_cache: Path, tmp_path: Path
) -> None:
    """Noise-free: a camera with a gain map, seen through its flat field, gives the frame of
    a uniform camera (the dark offset kept)."""
    import numpy as np

    from emauto.drivers.sim.effects import camera_gain_map

    camera = {"gain_nonuniformity_rms": 0.1, "gain_correlation_px": 3.0, "gain_map_seed": 4,
              "dark_offset_counts": 50.0}  # fmt: skip
    effects = EffectsConfig.none().model_dump()
    uneven = _twin(tiny_carbon, specimen_cache, ronchigram=camera, effects=effects)
    gains = camera_gain_map(uneven.config.ronchigram)
    assert gains is not None
    np.save(tmp_path / "flat.npy", gains.astype(np.float32))
    calibration = InstrumentCalibration(
        flat_field=str(tmp_path / "flat.npy"), dark_offset_counts=50.0
    )
    even = _twin(
        tiny_carbon, specimen_cache, ronchigram={"dark_offset_counts": 50.0}, effects=effects
    )
    request = RonchigramRequest(exposure_s=1e-3)
    corrected = CalibratedMicroscope(uneven, calibration).acquire(request).data
    bare = uneven.acquire(request).data
    truth = even.acquire(request).data
    assert np.abs(corrected - truth).max() < 1e-3 * truth.max()
    assert np.abs(bare - truth).max() > 0.05 * truth.max()


def test_bad_flat_fields_are_refused(
    tiny_carbon: Path, specimen_cache: Path, tmp_path: Path
) -> None:
    import numpy as np

    twin = _twin(tiny_carbon, specimen_cache)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "zero.npy", np.zeros((128, 128), dtype=np.float32))
    np.save(tmp_path / "small.npy", np.ones((8, 8), dtype=np.float32))
    for name, message in (("objects", "cannot read"), ("zero", "within"), ("missing", "read")):
        with pytest.raises(ConfigError, match=message):
            CalibratedMicroscope(
                twin, InstrumentCalibration(flat_field=str(tmp_path / f"{name}.npy"))
            )
    scope = CalibratedMicroscope(
        twin, InstrumentCalibration(flat_field=str(tmp_path / "small.npy"))
    )
    with pytest.raises(ConfigError, match="another camera setting"):
        scope.acquire(RonchigramRequest(exposure_s=1e-3))
