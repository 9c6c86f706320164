"""Every YAML file shipped in configs/ validates against its model."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from emauto.agent.plans import DaemonConfig
from emauto.models.config import EstimatorTrainingConfig
from emauto.tasks.probe_tuning.config import (
    EstimatorDataConfig,
    ProbeTuningConfig,
    RLTrainingConfig,
)
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
    "probe_tuning_low_dose.yaml": ProbeTuningConfig,
    "probe_tuning_ppo.yaml": RLTrainingConfig,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_configs_validate(name: str) -> None:
    load_yaml(CONFIGS / name, MODELS[name])
