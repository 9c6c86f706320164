"""Fixtures for the ZeroMQ driver tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from zmq_helpers import ThreadServer

from emauto.microscope import Microscope
from emauto.wrappers.safety import SafetyConfig


@pytest.fixture(scope="session")
def sim_config_file(
    tmp_path_factory: pytest.TempPathFactory, tiny_carbon: Path, specimen_cache: Path
) -> Path:
    """A SimConfig YAML: the tiny carbon film, seed 1, the session's specimen cache."""
    path = tmp_path_factory.mktemp("sim") / "sim.yaml"
    path.write_text(
        yaml.safe_dump({"specimen": str(tiny_carbon), "cache_dir": str(specimen_cache), "seed": 1})
    )
    return path


@pytest.fixture
def thread_server() -> Iterator[Any]:
    """Factory of in-process servers, closed after the test."""
    servers: list[ThreadServer] = []

    def make(
        backend: Microscope, config: SafetyConfig | None = None, **kwargs: Any
    ) -> ThreadServer:
        server = ThreadServer(backend, config, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
