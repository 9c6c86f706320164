"""The fast uncertainty score (`adaptive.delta_std`) and the bench's equal-time accounting.

`delta_std` is the first-order spread of `ensemble_std`'s ensemble from one triangulation:
it must rank pixels like the ensemble (high along an edge, nothing on a flat image), be
several times cheaper, and the bench must charge an adaptive scan its measured computing
between batches and compare it with static patterns at equal dose and at equal time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest

from emauto.errors import ConfigError
from emauto.tasks.sparse_scan.adaptive import (
    delta_std,
    ensemble_std,
    image_measure,
    uncertainty_scan,
)
from emauto.tasks.sparse_scan.bench import (
    TWIN_CURRENT_A,
    TWIN_DWELL_S,
    TWIN_SCAN,
    equal_time_coverage,
    run_sparse_scan_benchmark,
)
from emauto.tasks.sparse_scan.reconstruct import linear
from emauto.tasks.sparse_scan.strategies import ScanCost, jittered_plan, make_plan, scan_cost


def _edge_image(n: int = 128) -> np.ndarray:
    """A bright disc (radius n/4) on a dark field, lightly shaded: one sharp closed edge."""
    y, x = np.mgrid[0:n, 0:n]
    r = np.hypot(y - n / 2, x - n / 2)
    return 0.1 + 0.002 * x + 0.8 * (r < n / 4)


def _samples(truth: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    plan = jittered_plan(truth.shape, round(fraction * truth.size), np.random.default_rng(3))
    mask = plan.mask()
    return np.where(mask, truth, 0.0), mask


def test_delta_std_follows_the_edge_like_the_ensemble() -> None:
    truth = _edge_image()
    values, mask = _samples(truth, 0.1)
    delta = delta_std(values, mask)
    ensemble = ensemble_std(values, mask, np.random.default_rng(0), members=16)
    free = ~mask
    assert np.corrcoef(delta[free], ensemble[free])[0, 1] > 0.6
    y, x = np.mgrid[0:128, 0:128]
    r = np.hypot(y - 64, x - 64)
    near, far = (np.abs(r - 32) < 3) & free, (np.abs(r - 32) > 12) & free
    assert delta[near].mean() > 10 * delta[far].mean()  # a sign slip loses this contrast


def test_delta_std_is_zero_without_structure_and_coarse_grids_agree() -> None:
    values, mask = _samples(np.full((64, 64), 0.5), 0.1)
    assert np.abs(delta_std(values, mask)).max() < 1e-12
    values, mask = _samples(_edge_image(), 0.05)
    fine, coarse = delta_std(values, mask), delta_std(values, mask, stride=2)
    assert coarse.shape == fine.shape
    assert np.corrcoef(fine.ravel(), coarse.ravel())[0, 1] > 0.9


def test_delta_std_is_much_cheaper_than_the_ensemble(one_thread: None) -> None:
    """Measured (one thread, 256 x 256 at 1/20 of the pixels): about 0.35 x the ensemble's
    time at stride 1 and 0.25 x at stride 2 (what `uncertainty_scan` uses there)."""
    values, mask = _samples(_edge_image(256), 0.05)
    rng = np.random.default_rng(0)

    def seconds(run: Callable[[], object]) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    fast = seconds(lambda: delta_std(values, mask, stride=2))
    slow = seconds(lambda: ensemble_std(values, mask, rng))
    assert fast < 0.6 * slow


def test_the_fast_proxy_scans_as_well_as_the_ensemble() -> None:
    """Both proxies' scans (same budget) beat a jittered grid of the whole budget on the edge
    image, and the fast one's error is within 10 % of the ensemble's."""
    truth = _edge_image()

    def rms(values: np.ndarray, mask: np.ndarray) -> float:
        return float(np.sqrt(np.mean((linear(values, mask) - truth) ** 2)))

    errors = {}
    for proxy in ("delta", "ensemble"):
        plan, values = uncertainty_scan(
            truth.shape, 0.05, image_measure(truth, None), seed=0, proxy=proxy
        )
        errors[proxy] = rms(values, plan.mask())
    static = make_plan("jittered", truth.shape, 0.05, 0)
    values = np.zeros(truth.shape)
    values[static.pixels[:, 0], static.pixels[:, 1]] = truth[
        static.pixels[:, 0], static.pixels[:, 1]
    ]
    jittered = rms(values, static.mask())
    assert errors["delta"] < 0.9 * jittered and errors["ensemble"] < 0.9 * jittered
    assert errors["delta"] < 1.1 * errors["ensemble"]
    with pytest.raises(ConfigError, match="proxy"):
        uncertainty_scan(truth.shape, 0.05, image_measure(truth, None), proxy="guess")


@pytest.mark.parametrize("strategy", ["raster", "jittered", "spiral", "raster_lines"])
def test_equal_time_coverage_spends_the_time_given(strategy: str) -> None:
    shape = (64, 64)

    def cost(coverage: float) -> ScanCost:
        plan = make_plan(strategy, shape, coverage, 0)
        return scan_cost(plan, TWIN_SCAN, TWIN_DWELL_S, TWIN_CURRENT_A)

    budget = cost(0.3).time_s
    coverage, found = equal_time_coverage(strategy, shape, budget)
    assert found.time_s <= 1.01 * budget
    assert found.time_s >= 0.9 * budget
    assert abs(coverage - 0.3) < 0.1
    full, everything = equal_time_coverage(strategy, shape, 10 * cost(1.0).time_s)
    assert full == 1.0 and everything.dose_fraction == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        equal_time_coverage(strategy, shape, -1.0)


def test_bench_margins_at_equal_dose_and_equal_time(smooth_image: np.ndarray) -> None:
    result = run_sparse_scan_benchmark(
        {"smooth": smooth_image},
        0.05,
        dose_e=1000.0,
        strategies=["jittered", "raster", "uncertainty"],
        reconstruction="linear",
        reconstructions=["linear"],
        progress=False,
    )
    assert "margin" not in result["jittered"]
    adaptive = result["uncertainty"]
    image = adaptive["per_image"]["smooth"]
    assert image["compute_s"] > 0 and image["batches"] == 5
    full = image["time_s"] / image["time_fraction"]
    assert image["time_s"] == pytest.approx(
        image["scan_time_fraction"] * full + image["compute_s"], rel=1e-3, abs=3e-6
    )
    dose = adaptive["margin"]["equal_dose"]
    best = min(("jittered", "raster"), key=lambda s: result[s]["rms_error_pct"])
    assert dose["best_static"] == best
    assert dose["margin_pct"] == pytest.approx(
        100 * (1 - adaptive["rms_error_pct"] / result[best]["rms_error_pct"]), abs=0.01
    )
    equal = adaptive["margin"]["equal_time"]
    statics = adaptive["equal_time_static"]
    for static in ("jittered", "raster"):
        run = statics[static]["per_image"]["smooth"]
        # the adaptive scan took longer than the static one at equal dose: at equal time
        # the static pattern gets more positions (and more dose)
        assert run["coverage"] > 0.05 and run["dose_fraction"] > 0.05
        assert run["time_fraction"] <= 1.01 * image["time_fraction"]
    best = min(statics, key=lambda s: statics[s]["rms_error_pct"])
    assert equal["best_static"] == best
    assert equal["margin_pct"] == pytest.approx(
        100 * (1 - adaptive["rms_error_pct"] / statics[best]["rms_error_pct"]), abs=0.01
    )


def test_bench_without_equal_time_leaves_the_margins_out(smooth_image: np.ndarray) -> None:
    result = run_sparse_scan_benchmark(
        {"smooth": smooth_image},
        0.05,
        strategies=["jittered", "uncertainty"],
        reconstruction="linear",
        reconstructions=["linear"],
        progress=False,
        equal_time=False,
    )
    assert "margin" not in result["uncertainty"]
    assert "equal_time_static" not in result["uncertainty"]
    assert result["uncertainty"]["compute_s"] > 0  # the computing is charged all the same
