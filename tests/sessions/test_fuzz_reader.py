"""Fuzz the session reader with hypothesis: any mutation of a session's document lines, frame
metadata or chunk bytes, or a symlink out of it, gives an emauto error or a readable session,
and leaves every file inside and outside the session as it was."""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emauto.errors import EmautoError
from emauto.sessions.fuzz import (
    MUTATIONS,
    fuzz_reader,
    make_outside,
    mutate,
    read_like_report,
    scratch_folder,
    snapshot,
    write_base_session,
)


@pytest.fixture(scope="module")
def base() -> Iterator[tuple[Path, Path]]:
    root = Path(tempfile.mkdtemp(dir=scratch_folder()))  # tmpfs when there is one: 3x faster
    session = write_base_session(root / "base")
    yield session, make_outside(root / "outside", session)
    shutil.rmtree(root)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kind=st.sampled_from(sorted(MUTATIONS)), rng=st.randoms(use_true_random=False))
def test_mutated_sessions_give_typed_errors_and_touch_nothing(
    base: tuple[Path, Path], kind: str, rng: random.Random
) -> None:
    session, outside = base
    with tempfile.TemporaryDirectory(dir=session.parent) as folder:
        path = Path(folder) / "case"
        shutil.copytree(session, path)
        mutate(path, rng, outside, kind)
        before_outside, before_inside = snapshot(outside), snapshot(path)
        with contextlib.suppress(EmautoError):  # the expected answer to most mutations
            read_like_report(path)
        assert snapshot(outside) == before_outside
        assert snapshot(path) == before_inside


def test_fuzz_reader_reports_counts_for_the_security_bench(tmp_path: Path) -> None:
    figures = fuzz_reader(24, seed=3, folder=tmp_path)
    assert figures["cases"] == 24 and figures["crashes"] == 0
    assert figures["files_touched_outside"] == 0 and figures["files_changed_inside"] == 0
    assert figures["typed_errors"] + figures["accepted"] == 24
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone
