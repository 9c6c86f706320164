"""Benchmark helpers: survey ordering, curve read-outs, calibration error, matching."""

from __future__ import annotations

import numpy as np
import pytest

from emauto.bench.analysis import match
from emauto.bench.fewshot import expected_calibration_error
from emauto.tasks.region_search.bench import _at_found, _found_at
from emauto.tasks.region_search.policies.baselines import survey_order


def test_survey_order_puts_particle_cells_first() -> None:
    survey = np.full((32, 32), 0.3, dtype=np.float32)
    survey[20:24, 4:8] = 0.9  # cell (2, 0) of a 4x4 grid: brightest
    survey[1:3, 25:27] = 0.7  # cell (0, 3)
    order = survey_order(survey, 4)
    assert order[:2] == [(2, 0), (0, 3)]
    assert sorted(order) == [(r, c) for r in range(4) for c in range(4)]


def test_curve_read_outs() -> None:
    curve = [(0.0, 0.0, 0.01), (0.1, 0.5, 0.1), (0.2, 0.9, 0.2), (0.3, 1.0, 0.3)]
    assert _at_found(curve, 0.9) == (0.2, 0.2)
    assert _at_found(curve[:2], 0.9) is None
    assert _found_at(curve, 0.15) == 0.5


def test_calibration_error() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 20000)
    correct = rng.uniform(size=20000) < confidence  # calibrated by construction
    assert expected_calibration_error(confidence, correct) < 0.02
    assert expected_calibration_error(np.full(100, 0.9), np.zeros(100, bool)) == pytest.approx(0.9)


def test_match_counts_and_errors() -> None:
    truth = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    found = np.array([[10.5, 10.0], [20.0, 21.0], [45.0, 45.0]])
    tp, n_found, n_truth, errors = match(found, truth, 2.0, 3.0, (50, 50))
    assert (tp, n_found, n_truth) == (2, 3, 3)
    assert sorted(errors.tolist()) == pytest.approx([0.5, 1.0])
