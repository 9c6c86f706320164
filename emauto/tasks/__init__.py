"""Gymnasium environments on the Microscope contract, registered on ``import emauto``."""

from __future__ import annotations

#: Every environment emauto registers, with its entry point.
ENTRY_POINTS = {
    "emauto/ProbeTuning-v0": "emauto.tasks.probe_tuning.env:ProbeTuningEnv",
    "emauto/SparseScan-v0": "emauto.tasks.sparse_scan.env:SparseScanEnv",
    "emauto/RegionSearch-v0": "emauto.tasks.region_search.env:RegionSearchEnv",
}
ENV_IDS = tuple(ENTRY_POINTS)


def register_envs() -> None:
    """Register emauto's environments with Gymnasium (idempotent)."""
    import gymnasium as gym

    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=False)
