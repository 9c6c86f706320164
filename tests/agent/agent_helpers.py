"""Shared by the agent tests (a module name of its own: `conftest` is ambiguous when several
test folders are collected together)."""

from __future__ import annotations

from emauto.agent.plans import AlignProbeTask, DaemonConfig, SurveyTask


def short_plan(uri: str, **align: object) -> DaemonConfig:
    """Detune, align with the probe-shift policy for at most 13 frames, take a small image."""
    task = AlignProbeTask.model_validate(
        {"detune": True, "seed": 5, "max_acquisitions": 13, **align}
    )
    return DaemonConfig(
        microscope=uri, plan=(task, SurveyTask(shape=(32, 32), fov_m=2e-9)), heartbeat_s=None
    )
