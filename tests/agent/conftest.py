"""A daemon run on the tiny twin, recorded once and shared by the replay and export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from emauto.agent.daemon import Daemon, RunResult
from emauto.agent.plans import AlignProbeTask, DaemonConfig, SurveyTask


def short_plan(uri: str, **align: object) -> DaemonConfig:
    """Detune, align with the probe-shift policy for at most 13 frames, take a small image."""
    task = AlignProbeTask.model_validate(
        {"detune": True, "seed": 5, "max_acquisitions": 13, **align}
    )
    return DaemonConfig(
        microscope=uri, plan=(task, SurveyTask(shape=(32, 32), fov_m=2e-9)), heartbeat_s=None
    )


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory, tiny_sim_uri: str) -> RunResult:
    session = tmp_path_factory.mktemp("daemon") / "session"
    return Daemon(short_plan(tiny_sim_uri), session=session, progress=False).run()


@pytest.fixture
def recorded_session(recorded_run: RunResult) -> Path:
    return recorded_run.session
