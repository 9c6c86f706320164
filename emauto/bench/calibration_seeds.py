"""The seed sets of `emauto bench calibration` (apart, so that the CLI lists them without
importing the twin): twin ``i`` of a set is drawn from ``base + i``; used for nothing else.

``dev`` for developing the estimators; ``report`` for the figures reported. ``dev2`` was the
first report set: one of its 30 twins (72021) showed a failure of the lens-lag fit (a misread
first frame weighed by its own reading), which was then fixed, so it is a development set now
and ``report`` a fresh one."""

from __future__ import annotations

SEED_SETS: dict[str, int] = {"dev": 71_000, "dev2": 72_000, "report": 73_000}
SEED_SET_NAMES = tuple(SEED_SETS)
