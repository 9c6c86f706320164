"""Every YAML file shipped in configs/ validates against its model, and every one is
listed here."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from emauto.agent.plans import DaemonConfig
from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.specimens import load_recipe
from emauto.models.config import CompletionTrainingConfig, EstimatorTrainingConfig
from emauto.tasks.probe_tuning.belief_training import BeliefTrainingConfig
from emauto.tasks.probe_tuning.config import (
    EstimatorDataConfig,
    ProbeTuningConfig,
    RLTrainingConfig,
)
from emauto.tasks.probe_tuning.decider_training import DeciderTrainingConfig
from emauto.tasks.sparse_scan.config import ScanRLConfig
from emauto.units import load_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS: dict[str, type[BaseModel]] = {
    "daemon.yaml": DaemonConfig,
    "estimator_data.yaml": EstimatorDataConfig,
    "estimator_data_gpu.yaml": EstimatorDataConfig,
    "estimator_finetune_data_gpu.yaml": EstimatorDataConfig,
    "estimator_finetune_gpu.yaml": EstimatorTrainingConfig,
    "estimator_training.yaml": EstimatorTrainingConfig,
    "estimator_training_gpu.yaml": EstimatorTrainingConfig,
    "conditions/tenth_dose.yaml": ProbeTuningConfig,
    "conditions/auto_exposure.yaml": ProbeTuningConfig,
    "probe_tuning_belief.yaml": BeliefTrainingConfig,
    "probe_tuning_belief_randomised.yaml": BeliefTrainingConfig,
    "probe_tuning_decider.yaml": DeciderTrainingConfig,
    "probe_tuning_ppo.yaml": RLTrainingConfig,
    "sparse_scan_completion.yaml": CompletionTrainingConfig,
    "sparse_scan_ppo.yaml": ScanRLConfig,
    "held_out/noisy_camera.yaml": SimConfig,
    # the robustness suite's perturbations (`emauto.drivers.sim.perturbations`)
    **{f"robustness/{p.name}": SimConfig for p in (CONFIGS / "robustness").glob("*.yaml")},
}
#: Specimen recipe files (`emauto.drivers.sim.specimens`).
RECIPES = (
    "held_out/thick_carbon.yaml",
    "held_out/srtio3_thin.yaml",
    *(f"robustness/specimens/{p.name}" for p in (CONFIGS / "robustness/specimens").glob("*.yaml")),
)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_configs_validate(name: str) -> None:
    load_yaml(CONFIGS / name, MODELS[name])


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipes_load(name: str) -> None:
    load_recipe(CONFIGS / name)


def test_every_shipped_yaml_is_checked() -> None:
    shipped = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert shipped == {*MODELS, *RECIPES}
