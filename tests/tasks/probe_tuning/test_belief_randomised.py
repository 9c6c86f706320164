"""`rl_belief` trained on randomised twins (issue 21 item 6): the shipped training config
loads and randomises, each episode's twin and calibration are drawn as documented (seeded),
and a recorded episode runs on its drawn twin, calibrated, with auto-exposure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.perturbations import PerturbationRanges, randomised_config
from emauto.drivers.sim.twin import SETTLING_TIME_CONSTANTS
from emauto.errors import ConfigError
from emauto.tasks.probe_tuning.belief_training import (
    BeliefTrainingConfig,
    _record_chunk,
    episode_twin,
    record_episode,
)
from emauto.units import load_yaml

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs" / "probe_tuning_belief_randomised.yaml"
WEIGHTS = ROOT / "emauto" / "models" / "weights" / "probe_tuning_belief_randomised"


def test_the_randomised_config_differs_from_the_default_only_where_documented() -> None:
    randomised = load_yaml(CONFIG, BeliefTrainingConfig)
    default = load_yaml(ROOT / "configs" / "probe_tuning_belief.yaml", BeliefTrainingConfig)
    assert randomised.randomise is not None and randomised.randomise.probability == 0.4
    assert randomised.max_measurement_exposure_s == 1.0  # configs/conditions/auto_exposure
    assert randomised.lens_settle_error == 0.1
    different = {k for k, v in randomised.model_dump().items() if v != default.model_dump()[k]}
    assert different == {
        "seed",
        "episodes",
        "validation",
        "randomise",
        "max_measurement_exposure_s",
        "lens_settle_error",
    }
    assert default.randomise is None and default.lens_settle_error is None


def test_the_shipped_randomised_weights_record_their_config() -> None:
    record = json.loads((WEIGHTS / "training.json").read_text())
    shipped = BeliefTrainingConfig.model_validate(record["config"])
    assert shipped == load_yaml(CONFIG, BeliefTrainingConfig)
    assert (WEIGHTS / "actor.pt").is_file()


def test_episode_twin_is_seeded_and_its_calibration_near_the_true_settling() -> None:
    config = BeliefTrainingConfig(randomise=PerturbationRanges(), lens_settle_error=0.1)
    assert episode_twin(BeliefTrainingConfig(), np.random.default_rng(0)) is None
    seen = []
    for seed in range(50):
        drawn = episode_twin(config, np.random.default_rng(seed))
        assert drawn is not None and drawn == episode_twin(config, np.random.default_rng(seed))
        twin, settle = drawn
        assert twin == randomised_config(np.random.default_rng(seed), config.randomise)
        true = SETTLING_TIME_CONSTANTS * twin.effects.lens_tau_s
        assert settle is not None and abs(settle / true - 1.0) <= 0.1 + 1e-12
        seen.append(settle / true - 1.0)
    assert min(seen) < -0.05 and max(seen) > 0.05  # the error is drawn, both ways
    bare = config.model_copy(update={"lens_settle_error": None})
    drawn = episode_twin(bare, np.random.default_rng(0))
    assert drawn is not None and drawn[1] is None


def test_a_sim_config_needs_the_plain_twin() -> None:
    with pytest.raises(ConfigError):
        record_episode("sim://?seed=3", 0.01, 1, 8, sim_config=SimConfig())


def test_a_randomised_episode_runs_on_its_drawn_twin(
    carbon_uri: str, specimen_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One recorded chunk of one episode: the twin it ran on is the one drawn for it (kept
    with the episode), and its recorded stop outcomes still match the real final move
    through the calibration and auto-exposure."""
    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    ranges = PerturbationRanges(probability=1.0, specimen_probability=0.0)
    config = BeliefTrainingConfig(
        randomise=ranges, max_measurement_exposure_s=1.0, lens_settle_error=0.1, budget=10
    )
    (episode,) = _record_chunk(config.model_dump_json(), [0])
    twin = SimConfig.model_validate_json(str(episode["twin"]))
    assert twin.ronchigram.contrast_scale < 1.0 and twin.effects.lens_tau_s != 0.02
    assert len(episode["strehl"]) >= 1
    assert float(episode["final_predicted"]) == pytest.approx(
        float(episode["final_strehl"]), abs=1e-6
    )
