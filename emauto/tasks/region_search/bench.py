"""`emauto bench region-search`: how fast each method finds the targets of a field.

Every method runs on the same held-out fields (seeds 90000 + 100 x seed + i; the RL policy
trains on seeds below 50000) through `emauto/RegionSearch-v0`, acquiring high-resolution
frames cell by cell (the RL policy may also zoom out) until every target is found or
``max_area`` of the field has been scanned at high resolution. Targets are particles on a
zone axis (twinned or not), from the twin's ground truth; a target is found when its cell
is acquired at high resolution.

Methods: ``channelling`` (medium-magnification overviews of the field, particles segmented
and classified by their channelling contrast, cells by expected zone-axis particles;
`policies.channelling`), ``raster`` (serpentine), ``random`` (a random order of cells),
``survey`` (the operator's heuristic: cells in order of their bright-particle signal in the
survey map), ``dkl`` (deep kernel learning on survey crops, UCB; `policies.dkl`) and ``rl``
(the PPO policy). Overviews scan no cell at high resolution, so they add to the dose, not
to the area: read ``area_at_90pct`` with ``dose_fraction_at_90pct``.

Figures per method (median over episodes): ``area_at_90pct`` (fraction of the field
scanned at high resolution when 90 % of the targets are found; null if not within
``max_area``), ``dose_fraction_at_90pct`` (electrons spent, survey included, over those of
a high-resolution raster of the whole field), ``found_at_area`` (fraction of targets found
after 10/20/30/50 % of the area), ``decision_ms`` (the method's own time per step, median;
``decision_ms_max`` the slowest step), ``overviews`` (medium-magnification frames taken,
median per field).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from emauto.tasks.region_search.env import RegionSearchConfig, RegionSearchEnv
from emauto.tasks.region_search.policies import POLICIES
from emauto.tasks.region_search.policies.base import run_episode

METHODS = POLICIES.names()
AREA_MARKS = (0.1, 0.2, 0.3, 0.5)


def _at_found(
    curve: list[tuple[float, float, float]], fraction: float
) -> tuple[float, float] | None:
    for area, found, dose in curve:
        if found >= fraction:
            return area, dose
    return None


def _found_at(curve: list[tuple[float, float, float]], area_mark: float) -> float:
    best = 0.0
    for area, found, _ in curve:
        if area <= area_mark + 1e-9:
            best = max(best, found)
    return best


def run_region_search_benchmark(
    methods: Sequence[str] = METHODS,
    *,
    episodes: int = 3,
    seed: int = 0,
    max_area: float = 0.5,
    policy_path: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Figures per method on the same held-out fields (see the module doc)."""
    import torch

    torch.set_num_threads(1)  # per-step batches are small; timings are for one core
    config = RegionSearchConfig(max_steps=10_000)
    env = RegionSearchEnv(config)
    fields = [90_000 + 100 * seed + i for i in range(episodes)]
    results: dict[str, Any] = {}
    for method in methods:
        policy = POLICIES.load(method)(policy_path)
        runs = [
            run_episode(env, policy, f, max_area=max_area, seed=seed + i)
            for i, f in enumerate(tqdm(fields, desc=method, disable=not progress))
        ]
        hits = [_at_found(r["curve"], 0.9) for r in runs]
        reached = [h for h in hits if h is not None]
        results[method] = {
            "reached_90pct": f"{len(reached)}/{len(runs)}",
            "area_at_90pct": round(statistics.median(h[0] for h in reached), 4)
            if len(reached) == len(runs) else None,
            "dose_fraction_at_90pct": round(statistics.median(h[1] for h in reached), 4)
            if len(reached) == len(runs) else None,
            "area_at_90pct_per_field": [None if h is None else round(h[0], 4) for h in hits],
            "found_at_area": {
                f"{m:g}": round(statistics.fmean(_found_at(r["curve"], m) for r in runs), 4)
                for m in AREA_MARKS
            },
            "decision_ms": round(
                1e3 * statistics.median(d for r in runs for d in r["decision_s"]), 3
            ),
            "decision_ms_max": round(1e3 * max(d for r in runs for d in r["decision_s"]), 3),
            "overviews": statistics.median(r["overviews"] for r in runs),
        }  # fmt: skip
    env.close()
    return {
        "benchmark": "region-search",
        "fields": fields,
        "targets_per_field": [int(r) for r in _targets(config, fields)],
        "grid": config.grid,
        "cell_nm": round(config.survey.field_m / config.grid * 1e9, 2),
        "max_area": max_area,
        "methods": results,
        "goal": "90% of targets found with < 20% of the area scanned",
    }


def _targets(config: RegionSearchConfig, fields: Sequence[int]) -> list[int]:
    from emauto.drivers.sim.survey import SurveyField

    return [
        len(SurveyField.generate(config.survey.model_copy(update={"seed": f})).targets)
        for f in fields
    ]
