"""kill -9 at random moments never loses an acknowledged step (`emauto bench recorder`)."""

from __future__ import annotations

import random
from pathlib import Path

from emauto.bench.recorder import kill_trial


def test_kill_9_loses_no_acknowledged_step(tmp_path: Path) -> None:
    rng = random.Random(1)
    results = [kill_trial(tmp_path / f"trial-{i}", "static", rng) for i in range(6)]
    assert all(r["acknowledged"] > 0 for r in results)
    assert sum(r["lost"] for r in results) == 0
    # what was recorded is at least what was acknowledged (plus at most the step in flight)
    assert all(r["acknowledged"] <= r["recorded"] <= r["acknowledged"] + 1 for r in results)
