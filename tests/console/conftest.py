"""A daemon with its console on the tiny twin, and headless Chromium driven by Playwright.

The browser is the distribution's (``apt-get install chromium``), launched by path; without it
(or without the ``playwright`` package) the browser tests skip and say why.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_helpers import CHROMIUM, CHROMIUM_ARGS, SURVEY, VIEWPORT, free_address

from emauto.agent.daemon import Daemon, _Services
from emauto.agent.plans import DaemonConfig


@pytest.fixture
def console_daemon(tmp_path: Path, tiny_sim_uri: str) -> Iterator[Daemon]:
    """A long-running daemon with an empty queue and its console on a free loopback port."""
    config = DaemonConfig(
        microscope=tiny_sim_uri,
        plan=(SURVEY,),  # type: ignore[arg-type]  # validated into a SurveyTask
        sessions=tmp_path / "sessions",
        control=free_address(),
        heartbeat_s=None,
    )
    daemon = Daemon(config, progress=False)
    services = _Services(daemon)
    worker = threading.Thread(target=daemon.serve, kwargs={"queue_config_plan": False})
    worker.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        worker.join(60)
        services.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or EMAUTO_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()
