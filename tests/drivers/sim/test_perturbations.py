"""The twin's perturbations (issue 21, the robustness suite): each acts as documented, the
defaults leave every frame as it was, bad values are refused, and the registry of named
perturbations matches configs/robustness/ one to one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from emauto.drivers.sim import SimulatedMicroscope
from emauto.drivers.sim.batched_twin import BatchedTwin
from emauto.drivers.sim.config import EffectsConfig, SimConfig
from emauto.drivers.sim.perturbations import (
    PERTURBATIONS,
    perturbation_dir,
    perturbed_config,
    perturbed_uri,
)
from emauto.drivers.sim.specimens import load_recipe
from emauto.drivers.sim.uri import sim_config_from_uri
from emauto.errors import ConfigError
from emauto.microscope import Frame, ImageRequest, RasterScan, RonchigramRequest
from emauto.units import validate_model

RONCHIGRAM = RonchigramRequest(exposure_s=0.01)
FINGERPRINT = Path(__file__).parent / "default_twin_fingerprint.json"


def make_scope(recipe: Path, cache: Path, **overrides: Any) -> SimulatedMicroscope:
    config = SimConfig.model_validate(
        {"specimen": str(recipe), "cache_dir": cache, "seed": 1, **overrides}
    )
    return SimulatedMicroscope(config)


def ideal(recipe: Path, cache: Path, **overrides: Any) -> SimulatedMicroscope:
    """No noise, lag, drift or jitter: frames differ only by what ``overrides`` change."""
    return make_scope(recipe, cache, effects=EffectsConfig.none().model_dump(), **overrides)


def _fingerprint(scope: SimulatedMicroscope) -> dict[str, Any]:
    """What `default_twin_fingerprint.json` holds, for this twin."""
    scope.set({"C10": -20e-9, "C12a": 5e-9, "C21b": 30e-9, "beam_tilt_x": 1e-3})
    a = scope.acquire(RonchigramRequest(exposure_s=0.01))
    b = scope.acquire(
        RonchigramRequest(exposure_s=0.002, wait_s=0.01, probe_position_m=(1e-10, -2e-10))
    )
    c = scope.acquire(ImageRequest(scan=RasterScan(shape=(8, 8))))
    return {
        "blocks": [
            f.data.astype(np.float64).reshape(8, 16, 8, 16).sum(axis=(1, 3)) for f in (a, b)
        ],
        "adf": c.data.astype(np.float64),
        "cal": [[x.scale, x.offset] for x in a.calibrations],
        "pixel": scope.describe().detectors["ronchigram"].pixel_angle_rad,
        "truth": scope.true_aberrations().C12a,
    }


def test_the_defaults_leave_every_frame_as_before(tiny_carbon: Path, specimen_cache: Path) -> None:
    """Frames, calibrations and truth of the default twin (every effect on) equal those
    recorded before the perturbations existed (the published figures stay reproducible)."""
    expected = json.loads(FINGERPRINT.read_text())
    got = _fingerprint(make_scope(tiny_carbon, specimen_cache))
    for block, want in zip(got["blocks"], expected["blocks"], strict=True):
        np.testing.assert_allclose(block, np.array(want), rtol=1e-6, atol=2e-3)
    np.testing.assert_allclose(got["adf"], np.array(expected["adf"]), rtol=1e-6, atol=2e-4)
    assert got["cal"] == expected["cal"]
    assert got["pixel"] == expected["pixel"]
    assert got["truth"] == expected["truth"]


def test_perturbations_at_their_off_values_give_identical_frames(
    tiny_carbon: Path, specimen_cache: Path
) -> None:
    off = {
        "ronchigram": {
            "rotation_rad": 0.0,
            "pixel_angle_error": 0.0,
            "contrast_scale": 1.0,
            "dark_offset_counts": 0.0,
            "gain_nonuniformity_rms": 0.0,
            "gain_correlation_px": 3.0,
            "gain_map_seed": 5,
        },
        "aperture_offset_rad": (0.0, 0.0),
        "flipped_knobs": (),
    }
    plain = _fingerprint(make_scope(tiny_carbon, specimen_cache))
    explicit = _fingerprint(make_scope(tiny_carbon, specimen_cache, **off))
    for key in ("blocks", "adf"):
        np.testing.assert_array_equal(plain[key], explicit[key])


# --------------------------------------------------------------------------- camera


def _centroid_rad(frame: Frame) -> tuple[float, float]:
    """Intensity centroid (x, y) of a frame in its reported angles (rad)."""
    cal_y, cal_x = frame.calibrations
    ny, nx = frame.data.shape
    theta_y = cal_y.offset + cal_y.scale * np.arange(ny)
    theta_x = cal_x.offset + cal_x.scale * np.arange(nx)
    data = np.asarray(frame.data, dtype=np.float64)
    total = float(data.sum())
    return (
        float((data.sum(axis=0) * theta_x).sum() / total),
        float((data.sum(axis=1) * theta_y).sum() / total),
    )


def test_camera_rotation_turns_the_pattern(tiny_carbon: Path, specimen_cache: Path) -> None:
    """A disc tilted along +x (azimuth about 0: the specimen's texture shifts the centroid a
    little) is seen turned by -rotation on a turned camera (the texture with it)."""
    tilt = {"beam_tilt_x": 15e-3}
    plain = ideal(tiny_carbon, specimen_cache)
    plain.set(tilt)
    x0, y0 = _centroid_rad(plain.acquire(RONCHIGRAM))
    turned = ideal(tiny_carbon, specimen_cache, ronchigram={"rotation_rad": 0.5})
    turned.set(tilt)
    frame = turned.acquire(RONCHIGRAM)
    x1, y1 = _centroid_rad(frame)
    assert math.atan2(y0, x0) == pytest.approx(0.0, abs=0.1)
    assert math.atan2(y1, x1) - math.atan2(y0, x0) == pytest.approx(-0.5, abs=0.01)
    assert math.hypot(x1, y1) == pytest.approx(math.hypot(x0, y0), rel=0.05)
    assert frame.data.sum() == pytest.approx(plain.acquire(RONCHIGRAM).data.sum(), rel=0.02)


def test_pixel_angle_error_is_reported_not_seen(tiny_carbon: Path, specimen_cache: Path) -> None:
    plain = ideal(tiny_carbon, specimen_cache)
    wrong = ideal(tiny_carbon, specimen_cache, ronchigram={"pixel_angle_error": 0.1})
    true_pixel = plain.describe().detectors["ronchigram"].pixel_angle_rad
    assert true_pixel is not None
    assert wrong.describe().detectors["ronchigram"].pixel_angle_rad == pytest.approx(
        1.1 * true_pixel
    )
    a, b = plain.acquire(RONCHIGRAM), wrong.acquire(RONCHIGRAM)
    np.testing.assert_array_equal(a.data, b.data)  # the camera sees the same
    for ca, cb in zip(a.calibrations, b.calibrations, strict=True):
        assert cb.scale == pytest.approx(1.1 * ca.scale)
        assert cb.offset == pytest.approx(1.1 * ca.offset)  # the axis stays on its pixel


def test_contrast_100x_lower(tiny_carbon: Path, specimen_cache: Path) -> None:
    """The frame's std/mean drops 100x, its electrons stay."""
    plain = ideal(tiny_carbon, specimen_cache).acquire(RONCHIGRAM).data.astype(np.float64)
    low = ideal(tiny_carbon, specimen_cache, ronchigram={"contrast_scale": 0.01})
    faint = low.acquire(RONCHIGRAM).data.astype(np.float64)
    ratio = (plain.std() / plain.mean()) / (faint.std() / faint.mean())
    assert ratio == pytest.approx(100, rel=1e-3)
    assert faint.sum() == pytest.approx(plain.sum(), rel=1e-5)


def test_dark_offset_and_read_noise(tiny_carbon: Path, specimen_cache: Path) -> None:
    """The offset adds to every pixel (even with the noise switched off); the read noise
    is the configured rms."""
    plain = ideal(tiny_carbon, specimen_cache).acquire(RONCHIGRAM).data
    dark = ideal(tiny_carbon, specimen_cache, ronchigram={"dark_offset_counts": 100.0})
    np.testing.assert_allclose(dark.acquire(RONCHIGRAM).data - plain, 100.0, atol=1e-2)
    effects = EffectsConfig.none().model_copy(update={"detector_noise": True})
    noisy = make_scope(
        tiny_carbon,
        specimen_cache,
        effects=effects.model_dump(),
        ronchigram={"dark_offset_counts": 100.0, "read_noise_counts": 10.0},
    )
    difference = noisy.acquire(RONCHIGRAM).data.astype(np.float64) - plain
    assert difference.mean() == pytest.approx(100.0, abs=0.5)
    assert difference.std() == pytest.approx(10.0, rel=0.05)


def test_gain_map_multiplies_each_pixel_and_is_the_cameras(
    tiny_carbon: Path, specimen_cache: Path
) -> None:
    """With shot noise on, the perturbed frame is the plain one times the gain map: the map
    draws nothing from the twin's generator; it is fixed by its own seed, not the twin's."""
    effects = EffectsConfig.none().model_copy(update={"poisson": True}).model_dump()
    camera = {"gain_nonuniformity_rms": 0.1, "gain_correlation_px": 4.0, "gain_map_seed": 1}
    plain = make_scope(tiny_carbon, specimen_cache, effects=effects)
    uneven = make_scope(tiny_carbon, specimen_cache, effects=effects, ronchigram=camera)
    a, b = plain.acquire(RONCHIGRAM).data, uneven.acquire(RONCHIGRAM).data
    lit = a > 50
    gains = b[lit] / a[lit]
    assert gains.std() == pytest.approx(0.1, rel=0.25)
    other_twin = make_scope(tiny_carbon, specimen_cache, effects=effects, ronchigram=camera, seed=9)
    np.testing.assert_array_equal(other_twin._gain_map, uneven._gain_map)
    uneven.restart(4)
    np.testing.assert_array_equal(other_twin._gain_map, uneven._gain_map)
    a2 = plain.acquire(RONCHIGRAM).data
    b2 = uneven.acquire(RONCHIGRAM).data  # restarted: another noise stream
    assert not np.array_equal(b2[lit] / np.maximum(a2[lit], 1), gains)


# --------------------------------------------------------------------------- column


def test_aperture_offset_moves_the_disc_not_the_aberrations(
    tiny_carbon: Path, specimen_cache: Path
) -> None:
    plain = ideal(tiny_carbon, specimen_cache)
    moved = ideal(tiny_carbon, specimen_cache, aperture_offset_rad=(3e-3, -1.5e-3))
    x0, y0 = _centroid_rad(plain.acquire(RONCHIGRAM))
    x1, y1 = _centroid_rad(moved.acquire(RONCHIGRAM))
    assert x1 - x0 == pytest.approx(3e-3, abs=0.3e-3)
    assert y1 - y0 == pytest.approx(-1.5e-3, abs=0.3e-3)
    assert moved.true_probe().tilt_rad == (3e-3, -1.5e-3)
    assert moved.read().knobs["beam_tilt_x"] == 0.0
    assert moved.strehl_ratio() == plain.strehl_ratio()


def test_flipped_corrector_axis_moves_the_optics_the_other_way(
    tiny_carbon: Path, specimen_cache: Path
) -> None:
    """A +C12a step moves the true C12a by minus that; the frame is the plain twin's at -C12a."""
    flipped = ideal(tiny_carbon, specimen_cache, flipped_knobs=("C12a",))
    flipped.set({"C12a": 10e-9, "C12b": 4e-9})
    assert flipped.read().knobs["C12a"] == 10e-9  # the driver reports its setpoint
    truth = flipped.true_aberrations()
    assert truth.C12a == -10e-9 and truth.C12b == 4e-9
    plain = ideal(tiny_carbon, specimen_cache)
    plain.set({"C12a": -10e-9, "C12b": 4e-9})
    np.testing.assert_array_equal(flipped.acquire(RONCHIGRAM).data, plain.acquire(RONCHIGRAM).data)
    restarted = ideal(tiny_carbon, specimen_cache, flipped_knobs=("C12a",), initial={"C12a": 2e-9})
    assert restarted.true_aberrations().C12a == -2e-9  # the start values too


def test_lens_lag_and_drift_files_are_ten_times_the_defaults() -> None:
    default = EffectsConfig()
    slow = perturbed_config("lens_lag_10x_slower").effects
    fast = perturbed_config("drift_10x_faster").effects
    assert slow.lens_tau_s == pytest.approx(10 * default.lens_tau_s)
    assert fast.drift_speed_m_per_s == pytest.approx(10 * default.drift_speed_m_per_s)
    assert slow.model_copy(update={"lens_tau_s": default.lens_tau_s}) == default
    assert fast.model_copy(update={"drift_speed_m_per_s": default.drift_speed_m_per_s}) == default


def test_slower_lens_lag_acts(tiny_carbon: Path, specimen_cache: Path) -> None:
    slow = perturbed_config("lens_lag_10x_slower").effects
    effects = EffectsConfig.none().model_copy(
        update={"lens_lag": True, "lens_tau_s": slow.lens_tau_s}
    )
    scope = make_scope(tiny_carbon, specimen_cache, effects=effects.model_dump())
    scope.set({"C10": 100e-9})
    after = scope.true_probe(scope.read().time_s + EffectsConfig().lens_tau_s).coefficients_m[0]
    assert after == pytest.approx((1 - math.exp(-0.1)) * 100e-9, rel=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        {"ronchigram": {"contrast_scale": 0.0}},
        {"ronchigram": {"contrast_scale": 1.5}},
        {"ronchigram": {"rotation_rad": 4.0}},
        {"ronchigram": {"pixel_angle_error": 0.6}},
        {"ronchigram": {"dark_offset_counts": -1.0}},
        {"ronchigram": {"gain_nonuniformity_rms": 0.9}},
        {"ronchigram": {"gain_correlation_px": float("nan")}},
        {"aperture_offset_rad": (0.5, 0.0)},
        {"flipped_knobs": ("C99",)},
        {"flipped_knobs": ("C12a", "C12a")},
        {"flipped_knobs": ("convergence_angle",)},
        {"effects": {"lens_tau_s": -1.0}},
    ],
)
def test_bad_perturbations_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="invalid SimConfig"):
        validate_model(bad, SimConfig, source="test")


def test_batched_twin_applies_the_perturbations(tiny_carbon: Path, specimen_cache: Path) -> None:
    """`BatchedTwin` detects through the twin's own finish step: the same frames."""
    config = SimConfig.model_validate(
        {
            "specimen": str(tiny_carbon),
            "cache_dir": specimen_cache,
            "seed": 3,
            "ronchigram": {
                "rotation_rad": 0.2,
                "contrast_scale": 0.3,
                "dark_offset_counts": 10.0,
                "gain_nonuniformity_rms": 0.05,
            },
            "aperture_offset_rad": (1e-3, -1e-3),
            "flipped_knobs": ("C10",),
        }
    )
    batch = BatchedTwin.from_config(config, 2)
    batch[0].set({"C10": 20e-9})
    frames = batch.acquire_ronchigrams([RONCHIGRAM, RONCHIGRAM])
    single = SimulatedMicroscope(config)
    single.set({"C10": 20e-9})
    expected = single.acquire(RONCHIGRAM).data
    assert frames[0] is not None
    np.testing.assert_allclose(frames[0].data, expected, rtol=1e-3, atol=0.05)


# --------------------------------------------------------------------------- registry


def test_registry_and_files_match_one_to_one() -> None:
    files = {path.stem for path in perturbation_dir().glob("*.yaml")}
    assert files == set(PERTURBATIONS)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_loads_and_changes_one_thing(name: str) -> None:
    config = perturbed_config(name)
    assert config == sim_config_from_uri(perturbed_uri(name))
    changed = {
        key for key, value in config.model_dump().items() if value != SimConfig().model_dump()[key]
    }
    assert len(changed) == (0 if name == "none" else 1), changed
    if name.startswith("specimen_"):
        load_recipe(config.specimen)


def test_a_perturbation_lays_over_a_base_config(tmp_path: Path) -> None:
    base = SimConfig.model_validate({"seed": 5, "ronchigram": {"read_noise_counts": 3.0}})
    config = perturbed_config("contrast_10x_lower", base)
    assert config.seed == 5
    assert config.ronchigram.read_noise_counts == 3.0
    assert config.ronchigram.contrast_scale == 0.1
    with pytest.raises(ConfigError, match="unknown perturbation"):
        perturbed_config("cosmic_rays")
    (tmp_path / "none.yaml").write_text("ronchigram: {contrast_scale: 2}\n")
    with pytest.raises(ConfigError, match="contrast_scale"):
        perturbed_config("none", directory=tmp_path)


def test_a_config_files_specimen_path_is_taken_from_its_folder(
    tmp_path: Path, tiny_carbon: Path
) -> None:
    folder = tmp_path / "conditions"
    (folder / "specimens").mkdir(parents=True)
    (folder / "specimens" / "film.yaml").write_text(tiny_carbon.read_text())
    (folder / "sim.yaml").write_text(yaml.safe_dump({"specimen": "specimens/film.yaml"}))
    config = sim_config_from_uri(f"sim://?config={folder / 'sim.yaml'}")
    assert Path(config.specimen) == folder / "specimens" / "film.yaml"
    (folder / "builtin.yaml").write_text(yaml.safe_dump({"specimen": "srtio3"}))
    assert sim_config_from_uri(f"sim://?config={folder / 'builtin.yaml'}").specimen == "srtio3"
