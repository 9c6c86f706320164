"""The domain-randomised training images: bounds, determinism, breadth; the examples made."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from emauto.errors import ConfigError
from emauto.models.config import CompletionTrainingConfig
from emauto.tasks.sparse_scan.completion_training import (
    TEST_SEED_BASE,
    example_seed,
    make_example,
)
from emauto.tasks.sparse_scan.domain_images import KINDS, PIXEL_SIZE_RANGE_M, domain_image


@pytest.mark.parametrize("seed", range(TEST_SEED_BASE, TEST_SEED_BASE + 12))
def test_images_are_normalised_and_finite(seed: int) -> None:
    image = domain_image(seed, (48, 64))
    assert image.image.shape == image.clean.shape == (48, 64)
    assert np.all(np.isfinite(image.image)) and np.all(np.isfinite(image.clean))
    assert image.image.min() == 0.0 and image.image.max() == 1.0
    assert image.kind in KINDS
    assert PIXEL_SIZE_RANGE_M[0] <= image.pixel_m <= PIXEL_SIZE_RANGE_M[1]
    if image.dose_e is None:
        assert np.array_equal(image.image, image.clean)
    else:  # the noise-free image under the same normalisation is near the measured one
        assert np.corrcoef(image.image.ravel(), image.clean.ravel())[0, 1] > 0.0


def test_same_seed_same_image_other_seed_another() -> None:
    a, b = domain_image(TEST_SEED_BASE + 3), domain_image(TEST_SEED_BASE + 3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.clean, b.clean)
    assert (a.kind, a.pixel_m, a.dose_e) == (b.kind, b.pixel_m, b.dose_e)
    c = domain_image(TEST_SEED_BASE + 4)
    assert not np.array_equal(a.image, c.image)


def test_the_distribution_is_broad() -> None:
    images = [domain_image(TEST_SEED_BASE + 100 + i, (32, 32)) for i in range(60)]
    assert {i.kind for i in images} == set(KINDS)
    pixels = np.array([i.pixel_m for i in images])
    assert (pixels < 15e-12).any() and (pixels > 100e-12).any()
    doses = [i.dose_e for i in images]
    assert None in doses and any(d is not None and d < 30 for d in doses)
    assert any(d is not None and d > 300 for d in doses)


def test_bad_shape_or_seed_is_refused() -> None:
    with pytest.raises(ConfigError, match="image shape"):
        domain_image(0, (8, 64))
    with pytest.raises(ConfigError, match="seed"):
        domain_image(-1)


def test_an_example_holds_the_samples_and_the_truth() -> None:
    config = CompletionTrainingConfig(image_size=64, noise_free_fraction=1.0)
    seed = TEST_SEED_BASE + 7
    inputs, target = make_example(seed, config)
    assert inputs.shape == (3, 64, 64) and target.shape == (1, 64, 64)
    base, mask, samples = inputs[0], inputs[1].astype(bool), inputs[2]
    coverage = mask.mean()
    assert config.coverage_range[0] * 0.9 <= coverage <= config.coverage_range[1] * 1.1
    truth = domain_image(seed, (64, 64)).image.astype(np.float32)
    # noise-free samples: the samples, the base at them and the target there are the truth
    assert np.allclose(samples[mask], truth[mask]) and np.allclose(base[mask], truth[mask])
    assert np.allclose(target[0][mask], truth[mask])
    assert np.all(samples[~mask] == 0)
    again = make_example(seed, config)
    assert np.array_equal(again[0], inputs) and np.array_equal(again[1], target)


def test_training_and_validation_seeds_are_disjoint() -> None:
    config = CompletionTrainingConfig()
    training = {example_seed(s, i) for s in (0, 1) for i in range(config.samples)}
    validation = {example_seed(s, i, True) for s in (0, 1) for i in range(config.samples)}
    assert not training & validation
    assert max(example_seed(1000, 10**6, True), example_seed(1000, 10**6)) < TEST_SEED_BASE


@pytest.mark.parametrize(
    "bad",
    [{"coverage_range": (0.2, 0.1)}, {"coverage_range": (0.0, 0.1)}, {"dose_range_e": (0, 5)}],
)
def test_config_ranges_are_checked(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CompletionTrainingConfig.model_validate(bad)
