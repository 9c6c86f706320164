"""Region-search baselines that visit cells in a fixed order: ``raster`` (serpentine),
``random`` (a seeded random order) and ``survey`` (the operator's heuristic: cells in order
of their bright-particle signal in the survey map)."""

from __future__ import annotations

from typing import Any

import numpy as np

from emauto.tasks.region_search.env import RegionSearchEnv, cell_action


def serpentine(grid: int) -> list[tuple[int, int]]:
    """Every cell, row by row, alternating direction."""
    return [(r, c if r % 2 == 0 else grid - 1 - c) for r in range(grid) for c in range(grid)]


def survey_order(survey: np.ndarray, grid: int, level: float = 0.5) -> list[tuple[int, int]]:
    """Cells by decreasing particle signal: the sum of the survey map above ``level`` (the
    log-scaled map is 0.2-0.35 on carbon, above 0.45 on Au; set on field 1234)."""
    s = survey.shape[0] // grid
    excess = np.clip(survey[: grid * s, : grid * s] - level, 0, None)
    score = excess.reshape(grid, s, grid, s).sum(axis=(1, 3))
    order = np.argsort(-score.ravel(), kind="stable")
    return [(int(i) // grid, int(i) % grid) for i in order]


class _CellOrderPolicy:
    """Acquire the cells of `order` one after another."""

    name = "order"

    def __init__(self, policy_path: str | None = None) -> None:
        self._order: list[tuple[int, int]] = []
        self._step = 0
        self._grid = 1

    def order(self, env: RegionSearchEnv, seed: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def reset(
        self, env: RegionSearchEnv, observation: np.ndarray, info: dict[str, Any], seed: int
    ) -> None:
        self._grid, self._step = env.config.grid, 0
        self._order = self.order(env, seed)

    def act(self, observation: np.ndarray) -> np.ndarray:
        row, col = self._order[self._step]
        self._step += 1
        return cell_action(row, col, self._grid)

    def observe(self, action: np.ndarray, observation: np.ndarray, info: dict[str, Any]) -> None:
        """A fixed order learns nothing."""


class RasterPolicy(_CellOrderPolicy):
    """``raster``: serpentine over the grid."""

    name = "raster"

    def order(self, env: RegionSearchEnv, seed: int) -> list[tuple[int, int]]:
        return serpentine(env.config.grid)


class RandomPolicy(_CellOrderPolicy):
    """``random``: the cells in a random order, seeded by the episode's seed."""

    name = "random"

    def order(self, env: RegionSearchEnv, seed: int) -> list[tuple[int, int]]:
        g = env.config.grid
        rng = np.random.default_rng(seed)
        return [(int(i) // g, int(i) % g) for i in rng.permutation(g * g)]


class SurveyPolicy(_CellOrderPolicy):
    """``survey``: the brightest particle signal in the survey map first."""

    name = "survey"

    def order(self, env: RegionSearchEnv, seed: int) -> list[tuple[int, int]]:
        return survey_order(env.survey, env.config.grid)
