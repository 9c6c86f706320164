"""A daemon run on the tiny twin, recorded once and shared by the replay and export tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_helpers import short_plan

from emauto.agent.daemon import Daemon, RunResult


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory, tiny_sim_uri: str) -> RunResult:
    session = tmp_path_factory.mktemp("daemon") / "session"
    return Daemon(short_plan(tiny_sim_uri), session=session, progress=False).run()


@pytest.fixture
def recorded_session(recorded_run: RunResult) -> Path:
    return recorded_run.session
