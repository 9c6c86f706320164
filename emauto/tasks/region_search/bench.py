"""`emauto bench region-search`: how fast each method finds the targets of a field.

Every method runs on the same held-out fields (seeds 90000 + 100 x seed + i; the RL policy
trains on seeds below 50000) through `emauto/RegionSearch-v0`, acquiring high-resolution
frames cell by cell (the RL policy may also zoom out) until every target is found or
``max_area`` of the field has been scanned at high resolution. Targets are particles on a
zone axis (twinned or not), from the twin's ground truth; a target is found when its cell
is acquired at high resolution.

Methods: ``raster`` (serpentine), ``random`` (a random order of cells), ``survey`` (the
operator's heuristic: cells in order of their bright-particle signal in the survey map),
``dkl`` (deep kernel learning on survey crops, UCB; `policies.dkl`) and ``rl`` (the
PPO policy).

Figures per method (median over episodes): ``area_at_90pct`` (fraction of the field
scanned at high resolution when 90 % of the targets are found; null if not within
``max_area``), ``dose_fraction_at_90pct`` (electrons spent, survey included, over those of
a high-resolution raster of the whole field), ``found_at_area`` (fraction of targets found
after 10/20/30/50 % of the area), ``decision_ms`` (the method's own time per step, median).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from emauto.tasks.region_search.env import RegionSearchConfig, RegionSearchEnv, cell_action
from emauto.tasks.region_search.policies.dkl import DKLSearch, cell_crops

METHODS = ("rl", "dkl", "survey", "raster", "random")
AREA_MARKS = (0.1, 0.2, 0.3, 0.5)


def _serpentine(grid: int) -> list[tuple[int, int]]:
    return [(r, c if r % 2 == 0 else grid - 1 - c) for r in range(grid) for c in range(grid)]


def run_episode(
    env: RegionSearchEnv, method: str, field_seed: int, *, max_area: float, seed: int,
    policy: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """One field, one method: the curve of found fraction against area and dose."""
    observation, info = env.reset(seed=seed, options={"field_seed": field_seed})
    g = env.config.grid
    rng = np.random.default_rng(seed)
    order = _serpentine(g) if method == "raster" else None
    if method == "random":
        order = [(int(i) // g, int(i) % g) for i in rng.permutation(g * g)]
    if method == "survey":
        order = survey_order(env.survey, g)
    search = DKLSearch(cell_crops(env.survey, g), seed=seed) if method == "dkl" else None
    full_dose = g * g * env.reference_dose_e
    curve = [(0.0, 0.0, info["dose_e"] / full_dose)]
    decisions = []
    max_steps = int(2 * max_area * g * g) + 1
    for step in range(max_steps):
        start = time.perf_counter()
        if method in ("raster", "random", "survey"):
            assert order is not None
            row, col = order[step]
            action = cell_action(row, col, g)
        elif method == "dkl":
            assert search is not None
            cell = search.suggest()
            action = cell_action(cell // g, cell % g, g)
        else:
            action = policy.act(observation)
        decisions.append(time.perf_counter() - start)
        observation, _, terminated, _, info = env.step(action)
        if search is not None:
            count = int((env.patch_target_probability > 0.5).sum())
            search.observe(cell, float(np.log1p(count)))
        curve.append((info["area_fraction"], info["found_fraction"], info["dose_e"] / full_dose))
        if terminated or info["area_fraction"] >= max_area:
            break
    return {"curve": curve, "decision_s": decisions, "targets": info["targets"]}


def survey_order(survey: np.ndarray, grid: int, level: float = 0.5) -> list[tuple[int, int]]:
    """Cells by decreasing particle signal: the sum of the survey map above ``level`` (the
    log-scaled map is 0.2-0.35 on carbon, above 0.45 on Au; set on field 1234)."""
    s = survey.shape[0] // grid
    excess = np.clip(survey[: grid * s, : grid * s] - level, 0, None)
    score = excess.reshape(grid, s, grid, s).sum(axis=(1, 3))
    order = np.argsort(-score.ravel(), kind="stable")
    return [(int(i) // grid, int(i) % grid) for i in order]


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
    policy = None
    if "rl" in methods:
        from emauto.tasks.region_search.policies.rl import load_region_policy

        policy = load_region_policy(policy_path)
    fields = [90_000 + 100 * seed + i for i in range(episodes)]
    results: dict[str, Any] = {}
    for method in methods:
        runs = [
            run_episode(env, method, f, max_area=max_area, seed=seed + i, policy=policy)
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
