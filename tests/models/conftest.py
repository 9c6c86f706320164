"""Fixtures for the policy tests: the default amorphous carbon twin, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

import emauto


@pytest.fixture(scope="session")
def carbon_uri(specimen_cache: Path) -> str:
    """``sim://`` on the default amorphous carbon film (what the shipped estimator knows)."""
    emauto.connect("sim://", cache_dir=specimen_cache).close()  # build the specimen once
    return "sim://"


@pytest.fixture
def carbon(carbon_uri: str, specimen_cache: Path) -> emauto.microscope.Microscope:
    return emauto.connect(carbon_uri + "?seed=7", cache_dir=specimen_cache)
