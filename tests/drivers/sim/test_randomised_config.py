"""Randomised training twins (`randomised_config`, issue 21 item 6): seeded, every drawn
value inside its range, each imperfection sometimes present and sometimes not, bad ranges
refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.perturbations import PerturbationRanges, randomised_config

RANGES = PerturbationRanges()
DRAWS = 300


def _draws(ranges: PerturbationRanges = RANGES, seed: int = 0) -> list[SimConfig]:
    rng = np.random.default_rng(seed)
    return [randomised_config(rng, ranges) for _ in range(DRAWS)]


def test_the_same_seed_gives_the_same_twin() -> None:
    assert randomised_config(5) == randomised_config(5)
    assert randomised_config(np.random.default_rng(5)) == randomised_config(5)
    assert len({randomised_config(s).model_dump_json() for s in range(20)}) == 20


def test_every_value_is_in_its_range_or_the_base_twins() -> None:
    base = SimConfig()
    for config in _draws():
        camera, effects = config.ronchigram, config.effects
        for value, (low, high), default in (
            (camera.contrast_scale, RANGES.contrast_scale, base.ronchigram.contrast_scale),
            (camera.read_noise_counts, RANGES.read_noise_counts, base.ronchigram.read_noise_counts),
            (camera.dark_offset_counts, RANGES.dark_offset_counts, 0.0),
            (camera.gain_nonuniformity_rms, RANGES.gain_nonuniformity_rms, 0.0),
            (effects.drift_speed_m_per_s, RANGES.drift_speed_m_per_s, 5e-12),
            (effects.lens_tau_s, RANGES.lens_tau_s, 0.02),
        ):
            assert value == default or low <= value <= high
        assert abs(camera.rotation_rad) <= RANGES.rotation_rad_max
        assert abs(camera.pixel_angle_error) <= RANGES.pixel_angle_error_max
        assert math.hypot(*config.aperture_offset_rad) <= RANGES.aperture_offset_rad_max + 1e-15
        assert config.specimen in ("amorphous_carbon", *RANGES.specimens)
        assert not config.flipped_knobs  # a calibration finds a flipped axis: not drawn


def test_each_imperfection_is_present_about_as_often_as_asked() -> None:
    configs = _draws()
    present = {
        "contrast": np.mean([c.ronchigram.contrast_scale < 1.0 for c in configs]),
        "noise": np.mean([c.ronchigram.dark_offset_counts > 0.0 for c in configs]),
        "gain": np.mean([c.ronchigram.gain_nonuniformity_rms > 0.0 for c in configs]),
        "drift": np.mean([c.effects.drift_speed_m_per_s != 5e-12 for c in configs]),
        "lens": np.mean([c.effects.lens_tau_s != 0.02 for c in configs]),
        "rotation": np.mean([c.ronchigram.rotation_rad != 0.0 for c in configs]),
        "scale": np.mean([c.ronchigram.pixel_angle_error != 0.0 for c in configs]),
        "aperture": np.mean([c.aperture_offset_rad != (0.0, 0.0) for c in configs]),
    }
    for name, rate in present.items():
        assert 0.4 <= rate <= 0.6, (name, rate)  # the default probability 0.5, 300 draws
    specimen = np.mean([c.specimen != "amorphous_carbon" for c in configs])
    assert 0.15 <= specimen <= 0.35


def test_the_ranges_reach_the_suites_sizes() -> None:
    """Every perturbation of the robustness suite (but the 100x contrast loss, the crystal
    and the flipped axis) lies inside the ranges, and draws come near each end."""
    configs = _draws(RANGES.model_copy(update={"probability": 1.0}))
    contrast = [c.ronchigram.contrast_scale for c in configs]
    assert min(contrast) < 0.12 and max(contrast) > 0.9
    assert max(c.ronchigram.read_noise_counts for c in configs) > 9.0
    assert max(c.ronchigram.dark_offset_counts for c in configs) > 95.0
    assert max(c.ronchigram.gain_nonuniformity_rms for c in configs) > 0.095
    assert max(c.effects.drift_speed_m_per_s for c in configs) > 4.5e-11
    assert max(c.effects.lens_tau_s for c in configs) > 0.18
    rotation = [c.ronchigram.rotation_rad for c in configs]
    assert min(rotation) < -math.radians(5) and max(rotation) > math.radians(5)
    assert max(math.hypot(*c.aperture_offset_rad) for c in configs) > 3e-3


def test_probability_zero_leaves_the_base_twin() -> None:
    ranges = RANGES.model_copy(update={"probability": 0.0, "specimen_probability": 0.0})
    base = SimConfig(seed=3, specimen="au_on_carbon")
    assert all(randomised_config(s, ranges, base) == base for s in range(10))


@pytest.mark.parametrize(
    "bad",
    [
        {"contrast_scale": (0.5, 0.1)},
        {"contrast_scale": (0.0, 1.0)},  # log-uniform from 0
        {"dark_offset_counts": (-1.0, 10.0)},
        {"probability": 1.5},
        {"rotation_rad_max": -0.1},
    ],
)
def test_bad_ranges_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PerturbationRanges.model_validate(bad)
