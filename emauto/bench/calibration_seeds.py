"""The seed sets of `emauto bench calibration` (apart, so that the CLI lists them without
importing the twin): twin ``i`` of a set is drawn from ``base + i``; used for nothing else.
``dev`` for developing the estimators, ``report`` for the figures reported."""

from __future__ import annotations

SEED_SETS: dict[str, int] = {"dev": 71_000, "report": 72_000}
SEED_SET_NAMES = tuple(SEED_SETS)
