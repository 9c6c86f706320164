"""Intervals on benchmark figures: Wilson on rates (checked against published values),
bootstrap on medians (seeded, contains the median, narrows with more data)."""

from __future__ import annotations

import numpy as np
import pytest

from emauto.stats import bootstrap_median_interval, median, rate, wilson_interval


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [(0, 10, (0.0, 0.2775)), (5, 10, (0.2366, 0.7634)), (10, 10, (0.7225, 1.0))],
)
def test_wilson_interval_matches_the_textbook(
    successes: int, trials: int, expected: tuple[float, float]
) -> None:
    low, high = wilson_interval(successes, trials)
    assert (low, high) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_bootstrap_interval_is_seeded_and_holds_the_median() -> None:
    values = np.random.default_rng(0).normal(5.0, 1.0, 50)
    a = bootstrap_median_interval(values, seed=3)
    assert a == bootstrap_median_interval(values, seed=3)
    assert a[0] <= float(np.median(values)) <= a[1]
    wide = bootstrap_median_interval(values[:10], seed=3)
    assert (a[1] - a[0]) < (wide[1] - wide[0])


def test_reported_shapes() -> None:
    assert rate(3, 4)["rate"] == 0.75 and rate(3, 4)["of"] == 4
    assert median([1.0, 2.0, 9.0])["median"] == 2.0
