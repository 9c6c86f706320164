"""Shared fixtures: small specimens built once per test session in a private cache."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def specimen_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("specimen-cache")


@pytest.fixture(scope="session")
def tiny_carbon() -> Path:
    """A 3 nm x 3 nm x 2 nm amorphous carbon film recipe."""
    return DATA / "tiny_carbon.yaml"
