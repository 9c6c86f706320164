"""Uncertainty of benchmark figures: Wilson intervals on rates, bootstrap intervals on
medians. Every rate and median a benchmark reports carries one."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Two-sided 95 % normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (95 % by default); (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"expected 0 <= successes <= trials, got {successes} of {trials}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_median_interval(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (seeded: same values, same interval)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    medians = np.median(data[rng.integers(0, data.size, (resamples, data.size))], axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def rate(successes: int, trials: int) -> dict[str, float | int | list[float]]:
    """A rate with its Wilson 95 % interval, as a benchmark reports it."""
    low, high = wilson_interval(successes, trials)
    return {
        "rate": successes / trials if trials else math.nan,
        "count": successes,
        "of": trials,
        "ci95": [round(low, 4), round(high, 4)],
    }


def median(values: Sequence[float], *, seed: int = 0) -> dict[str, float | list[float]]:
    """A median with its bootstrap 95 % interval, as a benchmark reports it."""
    low, high = bootstrap_median_interval(values, seed=seed)
    return {"median": float(np.median(np.asarray(values, dtype=np.float64))), "ci95": [low, high]}
