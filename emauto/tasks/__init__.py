"""The tasks: one folder each, everything about the task inside it.

Each task folder holds its env (a Gymnasium env on the Microscope contract), its config
models, its policies (one policy interface per task, named in the task's ``__init__``, with
one registry of policies and one episode loop), its benchmark and its commands. A new task
is a new folder plus one line in each registry it joins: `ENVS` here, the command modules
(`emauto.cli.COMMAND_MODULES`) and, if the daemon runs it, `emauto.agent.plans.STEP_KINDS`.
"""

from __future__ import annotations

from emauto.registry import Registry

#: Every environment emauto registers with Gymnasium (on ``import emauto``).
ENVS = Registry(
    "environment",
    {
        "emauto/ProbeTuning-v0": "emauto.tasks.probe_tuning.env:ProbeTuningEnv",
        "emauto/ProbeTuningMeasure-v0": "emauto.tasks.probe_tuning.measure_env:MeasureCorrectEnv",
        "emauto/SparseScan-v0": "emauto.tasks.sparse_scan.env:SparseScanEnv",
        "emauto/RegionSearch-v0": "emauto.tasks.region_search.env:RegionSearchEnv",
    },
)
ENV_IDS = ENVS.names()


def register_envs() -> None:
    """Register emauto's environments with Gymnasium (idempotent)."""
    import gymnasium as gym

    for env_id, entry_point in ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=False)
