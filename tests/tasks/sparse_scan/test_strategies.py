"""Scan strategies: exact budgets, distinct in-range pixels, costs, Microscope requests."""

from __future__ import annotations

import numpy as np
import pytest

import emauto
from emauto.errors import ConfigError
from emauto.microscope import PositionsScan, SegmentsScan
from emauto.tasks.sparse_scan.adaptive import image_measure, patch_scan, uncertainty_scan
from emauto.tasks.sparse_scan.registry import STATIC_STRATEGIES
from emauto.tasks.sparse_scan.strategies import (
    make_plan,
    n_positions,
    scan_cost,
    to_request,
)

SHAPES = [(64, 64), (48, 80)]
COVERAGES = [0.01, 0.05, 0.2, 1.0]


@pytest.mark.parametrize("name", sorted(STATIC_STRATEGIES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coverage", COVERAGES)
def test_budget_and_limits_respected(name: str, shape: tuple[int, int], coverage: float) -> None:
    plan = make_plan(name, shape, coverage, seed=3)
    n = n_positions(shape, coverage)
    assert plan.n == n == max(1, round(coverage * shape[0] * shape[1]))
    assert plan.pixels.dtype.kind == "i"
    assert plan.pixels.min() >= 0
    assert np.all(plan.pixels.max(axis=0) < np.array(shape))
    assert plan.mask().sum() == n  # distinct pixels
    if plan.segments is not None:  # the segments cover the pixels in order, straight along x
        assert plan.segments[0][0] == 0 and plan.segments[-1][1] == n - 1
        for first, last in plan.segments:
            run = plan.pixels[first : last + 1]
            assert np.all(run[:, 0] == run[0, 0])
            assert np.array_equal(run[:, 1], np.arange(run[0, 1], run[0, 1] + len(run)))


@pytest.mark.parametrize("name", sorted(STATIC_STRATEGIES))
def test_same_seed_same_plan(name: str) -> None:
    a = make_plan(name, (64, 64), 0.05, seed=1)
    b = make_plan(name, (64, 64), 0.05, seed=1)
    assert np.array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize("coverage", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_coverage_outside_unit_interval_is_refused(coverage: float) -> None:
    with pytest.raises(ConfigError, match=r"coverage must be in \(0, 1\]"):
        make_plan("random", (32, 32), coverage)


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ConfigError, match="scan strategy 'zigzag'"):
        make_plan("zigzag", (32, 32), 0.1)


def test_cost_model_counts_dwell_settling_and_flyback() -> None:
    scope = emauto.connect("sim://?effects=none")
    limits = scope.describe().scan
    scope.close()
    dwell = 1e-6
    full = make_plan("raster", (32, 32), 1.0)
    cost = scan_cost(full, limits, dwell, 20e-12)
    assert cost.flybacks == 31 and cost.jumps == 0
    assert cost.time_s == pytest.approx(32 * 32 * dwell + 31 * limits.flyback_s + limits.settle_s)
    assert cost.dose_fraction == pytest.approx(1.0)
    points = scan_cost(make_plan("random", (32, 32), 0.1, seed=0), limits, dwell, 20e-12)
    lines = scan_cost(make_plan("raster_lines", (32, 32), 0.1), limits, dwell, 20e-12)
    assert points.dose_fraction == pytest.approx(lines.dose_fraction, rel=1e-3)
    assert points.jumps > 50  # isolated points settle after every jump ...
    assert lines.jumps == 0  # ... full lines only fly back
    assert points.time_s > lines.time_s
    assert points.dose_e == pytest.approx(
        n_positions((32, 32), 0.1) * 20e-12 * dwell / 1.602176634e-19
    )


@pytest.mark.parametrize("name", ["random", "spiral", "line_hop", "raster_lines"])
def test_plans_run_on_the_twin_through_the_contract(name: str) -> None:
    scope = emauto.connect("sim://?specimen=srtio3&effects=none")
    plan = make_plan(name, (32, 32), 0.1, seed=0)
    request = to_request(plan, fov_m=2e-9, dwell_s=2e-6)
    kind = SegmentsScan if plan.segments is not None else PositionsScan
    assert isinstance(request.scan, kind)
    frame = scope.acquire(request)
    scope.close()
    assert frame.data.shape == (plan.n,)
    assert frame.positions_m is not None
    assert np.abs(frame.positions_m).max() <= 1e-9 + 1e-15


def test_adaptive_strategies_spend_exactly_the_budget(smooth_image: np.ndarray) -> None:
    truth = smooth_image
    plan, values = uncertainty_scan((64, 64), 0.05, image_measure(truth, None), seed=0)
    assert plan.n == plan.mask().sum() == n_positions((64, 64), 0.05)
    assert np.allclose(values[plan.mask()], truth[plan.mask()])

    def chooser(values: np.ndarray, mask: np.ndarray, recon: np.ndarray) -> np.ndarray:
        scores = np.zeros(64)
        scores[0] = 1.0  # always the first patch: it fills, then the next best is used
        return scores

    plan, _ = patch_scan((64, 64), 0.2, image_measure(truth, 100.0), chooser, seed=0)
    assert plan.n == plan.mask().sum() == n_positions((64, 64), 0.2)
    assert plan.mask()[:8, :8].all()  # the preferred patch was filled first
