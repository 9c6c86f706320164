"""`emauto bench calibration` on one hidden-parameter twin of the dev seed set."""

from __future__ import annotations

import pytest

from emauto.bench.calibration import TOLERANCES, draw_hidden, run_calibration_benchmark
from emauto.bench.calibration_seeds import SEED_SETS
from emauto.errors import ConfigError


def test_the_seed_sets_are_disjoint_and_the_draws_deterministic() -> None:
    assert len(set(SEED_SETS.values())) == len(SEED_SETS)
    assert draw_hidden(SEED_SETS["dev"]) == draw_hidden(SEED_SETS["dev"])
    assert draw_hidden(SEED_SETS["dev"]) != draw_hidden(SEED_SETS["dev"] + 1)


def test_an_unknown_seed_set_is_refused() -> None:
    with pytest.raises(ConfigError, match="seed set"):
        run_calibration_benchmark("train", 1)


@pytest.mark.slow
def test_one_twin_is_calibrated_within_the_goals() -> None:
    result = run_calibration_benchmark("dev", 1)
    assert set(result["figures"]) == {*TOLERANCES, "axis_signs"}
    for name in ("camera_scale", "camera_rotation_deg", "lens_tau"):
        assert result["figures"][name]["within_tolerance"] == 1.0, name
    assert result["figures"]["axis_signs"]["all_right_fraction"] == 1.0
