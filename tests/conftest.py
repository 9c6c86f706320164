"""Shared fixtures: small specimens built once per test session in a private cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import emauto

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def specimen_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("specimen-cache")


@pytest.fixture(scope="session")
def tiny_carbon() -> Path:
    """A 3 nm x 3 nm x 2 nm amorphous carbon film recipe."""
    return DATA / "tiny_carbon.yaml"


@pytest.fixture(scope="session")
def tiny_sim_uri(
    tmp_path_factory: pytest.TempPathFactory, tiny_carbon: Path, specimen_cache: Path
) -> str:
    """``sim://?config=...``: the tiny carbon film, seed 1, the session's specimen cache (a
    URI, for code that takes one: the daemon, the demo, replay)."""
    import yaml

    path = tmp_path_factory.mktemp("sim-uri") / "sim.yaml"
    path.write_text(
        yaml.safe_dump({"specimen": str(tiny_carbon), "cache_dir": str(specimen_cache), "seed": 1})
    )
    return f"sim://?config={path}"


@pytest.fixture(scope="session")
def carbon_uri(specimen_cache: Path) -> str:
    """``sim://`` on the default amorphous carbon film (what the shipped estimator knows)."""
    emauto.connect("sim://", cache_dir=specimen_cache).close()  # build the specimen once
    return "sim://"


@pytest.fixture
def carbon(carbon_uri: str, specimen_cache: Path) -> emauto.microscope.Microscope:
    return emauto.connect(carbon_uri + "?seed=7", cache_dir=specimen_cache)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch, BLAS and OpenMP on one thread for a module (closed-loop episodes): on 2 shared
    cores their pools of spinning threads made the twin and the reconstructions 5-50x
    slower. Figures measured under it do not depend on the machine's core count."""
    import torch
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)
