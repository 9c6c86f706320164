"""Gymnasium environments on the Microscope contract, registered on ``import emauto``."""

from __future__ import annotations

ENV_IDS = ("emauto/ProbeTuning-v0", "emauto/RegionSearch-v0")


def register_envs() -> None:
    """Register emauto's environments with Gymnasium (idempotent)."""
    import gymnasium as gym

    if "emauto/ProbeTuning-v0" not in gym.registry:
        gym.register(
            id="emauto/ProbeTuning-v0",
            entry_point="emauto.envs.probe_tuning:ProbeTuningEnv",
            disable_env_checker=False,
        )
    if "emauto/RegionSearch-v0" not in gym.registry:
        gym.register(
            id="emauto/RegionSearch-v0",
            entry_point="emauto.envs.region_search:RegionSearchEnv",
            disable_env_checker=False,
        )
