"""Each estimator recovers a known parameter from synthetic data (a flipped sign or a wrong
unit fails), and refuses data it cannot use with a `CalibrationDataError`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from emauto.calibration import estimators as est
from emauto.drivers.sim.effects import rotate_on_camera
from emauto.errors import CalibrationDataError


def _disc(shape: int, centre: tuple[float, float], radius: float, level: float) -> np.ndarray:
    """A disc of ``level`` electrons per pixel, its edge antialiased by 8x supersampling."""
    fine = 8
    coords = (np.arange(shape * fine) + 0.5) / fine - 0.5
    cols, rows = np.meshgrid(coords, coords)
    inside = (np.hypot(cols - centre[0], rows - centre[1]) < radius).astype(float)
    return level * inside.reshape(shape, fine, shape, fine).mean(axis=(1, 3))


def _texture(shape: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1.0 + 0.3 * ndimage.gaussian_filter(rng.standard_normal((shape, shape)), 2.5) / 0.11


def test_photon_transfer_recovers_gain_read_noise_and_dark_offset() -> None:
    rng = np.random.default_rng(1)
    gain, read, dark = 2.5, 3.0, 40.0
    electrons_per_s = _disc(64, (31.5, 31.5), 18.0, 30e3) + 500.0  # disc over a background
    t1, t2 = 1e-3, 4e-3

    def frames(t: float) -> list[np.ndarray]:
        return [
            gain * rng.poisson(electrons_per_s * t) + rng.normal(0, read, (64, 64)) + dark
            for _ in range(12)
        ]

    fit = est.photon_transfer(frames(t1), frames(t2), (t1, t2))
    assert fit.gain_counts_per_e.value == pytest.approx(gain, rel=0.05)
    assert fit.read_noise_counts.value == pytest.approx(read, rel=0.1)
    assert fit.dark_offset_counts.value == pytest.approx(dark, abs=0.5)
    assert fit.gain_counts_per_e.unit == "counts/e"


def test_photon_transfer_refuses_frames_of_one_exposure_order_or_too_few() -> None:
    frame = np.ones((32, 32))
    with pytest.raises(CalibrationDataError, match="t_low < t_high"):
        est.photon_transfer([frame, frame], [frame, frame], (2e-3, 1e-3))
    with pytest.raises(CalibrationDataError, match="at least 2 frames"):
        est.photon_transfer([frame], [frame, frame], (1e-3, 2e-3))


def test_disc_fit_gives_the_camera_scale_and_the_centre() -> None:
    image = _disc(128, (60.3, 66.8), 31.0, 100.0) + 2.0
    disc = est.fit_disc(image)
    assert disc.centre_x_px.value == pytest.approx(60.3, abs=0.05)
    assert disc.centre_y_px.value == pytest.approx(66.8, abs=0.05)
    scale = est.camera_scale(disc, 0.030)
    assert scale.value == pytest.approx(0.030 / 31.0, rel=0.003)
    assert scale.unit == "rad/px"


def test_disc_fit_refuses_a_flat_frame() -> None:
    with pytest.raises(CalibrationDataError, match="no bright-field disc"):
        est.fit_disc(np.full((64, 64), 5.0))


def test_contrast_reads_the_flat_background() -> None:
    disc_image = _disc(128, (63.5, 63.5), 30.0, 100.0)
    c = 0.4
    image = c * disc_image + (1 - c) * disc_image.mean()
    disc = est.fit_disc(image)
    assert est.contrast(image, disc).value == pytest.approx(c, abs=0.01)


def test_pattern_shift_finds_a_subpixel_shift_in_columns_and_rows() -> None:
    reference = _texture(96, 2)
    moved = ndimage.shift(reference, (-2.3, 4.6), order=3, mode="wrap")  # rows, columns
    window = (slice(24, 72), slice(24, 72))
    shift = est.pattern_shift(moved, reference, window)
    assert shift == pytest.approx([4.6, -2.3], abs=0.05)


@pytest.mark.parametrize("rotation_deg", [-8.0, 0.0, 5.0])
def test_camera_rotation_turns_the_expected_directions_onto_the_measured(
    rotation_deg: float,
) -> None:
    r = math.radians(rotation_deg)
    turn = np.array([[math.cos(-r), -math.sin(-r)], [math.sin(-r), math.cos(-r)]])  # R(-r)
    probes = [(1e-9, 0.0), (0.0, 1e-9), (-1e-9, 0.0), (0.0, -1e-9)]
    shifts = [turn @ (-np.array(p) * 1e10) for p in probes]  # -delta / D, seen at R(-r)
    rotation, reversed_c10 = est.camera_rotation(shifts, probes)
    assert math.degrees(rotation.value) == pytest.approx(rotation_deg, abs=1e-6)
    assert not reversed_c10
    # under-focus (C10 acting the wrong way) moves the pattern the other way
    rotation, reversed_c10 = est.camera_rotation([-s for s in shifts], probes)
    assert reversed_c10 and math.degrees(rotation.value) == pytest.approx(rotation_deg, abs=1e-6)


def test_derotate_undoes_the_twin_camera_rotation() -> None:
    image = _texture(96, 3)
    axis = (47.75, 47.75)
    turned = rotate_on_camera(image, math.radians(7.0), axis)
    back = est.derotate(turned, math.radians(7.0), axis)
    inner = (slice(28, 68), slice(28, 68))
    error = np.abs(back[inner] - image[inner]).mean() / image[inner].std()
    assert error < 0.1
    wrong = est.derotate(turned, math.radians(-7.0), axis)
    assert np.abs(wrong[inner] - image[inner]).mean() / image[inner].std() > 3 * error


def test_lens_lag_fits_the_time_constant_in_seconds() -> None:
    t = np.geomspace(1e-3, 3.0, 14)
    rng = np.random.default_rng(4)
    remaining = np.exp(-t / 0.07) + rng.normal(0, 0.02, t.size)
    remaining[5] = 3.0  # one misread frame
    tau, amplitude = est.lens_lag(t, remaining)
    assert tau.value == pytest.approx(0.07, rel=0.05)
    assert tau.unit == "s"
    assert amplitude.value == pytest.approx(1.0, abs=0.05)


def test_lens_lag_refuses_readings_taken_after_the_lenses_settled() -> None:
    t = np.geomspace(1.0, 3.0, 6)
    with pytest.raises(CalibrationDataError, match="settled by the first reading"):
        est.lens_lag(t, np.zeros(6))


def test_drift_speed_is_defocus_times_the_angular_velocity() -> None:
    scale = est.Estimate(1e-3, 0.0, "rad/px")
    times = [0.0, 2.0, 6.0, 14.0, 30.0]
    velocity_px = np.array([0.06, -0.08])  # px/s
    shifts = [velocity_px * t for t in times]
    speed = est.drift_speed(shifts, times, scale, 40e-9)
    assert speed.value == pytest.approx(0.1 * 1e-3 * 40e-9, rel=1e-6)
    assert speed.unit == "m/s"
