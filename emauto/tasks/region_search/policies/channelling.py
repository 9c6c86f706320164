"""``channelling``: medium-magnification overviews, particles classified by channelling
contrast, cells in order of expected zone-axis particles.

What it uses, all from the microscope: the survey map (to skip blocks with no particle
signal and to order cells no overview has analysed yet), its own overview frames (the env's
``zoom <= 0`` action: ``overview_cells`` square of cells at medium magnification, 0.3 nm
pixels in the default config; they cost dose and time but scan no cell at high resolution)
and, for the edge bonus, what the patch CNN detects in its own high-resolution frames
(``env.patch_target_probability``). Never the twin's ground truth: the env's ``found``
counts are for scoring only. The zone-axis model (`channelling_model.TARGET_MODEL`) was
fitted on training fields 2000-2159.

An episode: overview every block whose survey signal shows a particle (a survey pixel
above ``survey_level``), stitched into a mosaic (`channelling.Mosaic`); each block is
analysed (`particles.find_particles`, at most ``blocks_per_step`` per decision, once its
neighbours are in so that edge particles are whole) and every particle adds its
probability of being on a zone axis to the cells its centre may lie in (a Gaussian of
``centre_sigma_m`` across cell edges). Then the unvisited cell with the highest expected
count is acquired at high resolution; a target patch on the edge of that frame adds
``edge_bonus`` x its probability to the unvisited neighbour across that edge (the particle
may be centred there). Cells not analysed rank last, by their survey signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtr

from emauto.tasks.region_search.channelling import Mosaic, block_action, overview_blocks
from emauto.tasks.region_search.env import RegionSearchEnv, cell_action
from emauto.tasks.region_search.particles import TargetModel
from emauto.tasks.region_search.policies.baselines import survey_order


class ChannellingPolicy:
    """``channelling``: overviews, per-particle channelling contrast, expected targets per
    cell (see the module docstring)."""

    name = "channelling"

    def __init__(
        self,
        policy_path: str | None = None,
        *,
        model: TargetModel | None = None,
        survey_level: float = 0.45,
        centre_sigma_m: float = 0.1e-9,
        blocks_per_step: int = 1,
        edge_bonus: float = 0.0,
    ) -> None:
        if model is None:
            from emauto.tasks.region_search.channelling_model import TARGET_MODEL

            model = TARGET_MODEL
        self.model = model
        self.survey_level = survey_level
        self.centre_sigma_m = centre_sigma_m
        self.blocks_per_step = blocks_per_step
        self.edge_bonus = edge_bonus
        self._env: RegionSearchEnv | None = None
        self._grid = 1
        self._cells = 1
        self._mosaic: Mosaic | None = None
        self._pending: list[tuple[int, int]] = []
        self._to_analyse: list[tuple[int, int]] = []
        self._block: tuple[int, int] | None = None
        self._cell: tuple[int, int] | None = None
        self.score = np.zeros((1, 1))
        self._fallback = np.zeros((1, 1))
        self._visited = np.zeros((1, 1), dtype=bool)

    def reset(
        self, env: RegionSearchEnv, observation: np.ndarray, info: dict[str, Any], seed: int
    ) -> None:
        g, k = env.config.grid, env.config.overview_cells
        self._env, self._grid, self._cells = env, g, k
        self._mosaic = Mosaic(env.config)
        s = env.survey.shape[0] // g
        signal = env.survey[: g * s, : g * s].reshape(g, s, g, s).max(axis=(1, 3))
        self._pending = [
            b for b in overview_blocks(g, k)
            if signal[b[0] : b[0] + k, b[1] : b[1] + k].max() > self.survey_level
        ]  # fmt: skip
        self._to_analyse = list(self._pending)
        self._block = self._cell = None
        self.score = np.zeros((g, g))
        self._visited = np.zeros((g, g), dtype=bool)
        order = survey_order(env.survey, g)
        self._fallback = np.zeros((g, g))
        for rank, (row, col) in enumerate(order):
            self._fallback[row, col] = -1.0 - rank / len(order)  # below every analysed cell

    def act(self, observation: np.ndarray) -> np.ndarray:
        assert self._mosaic is not None, "reset first"
        self._analyse(self.blocks_per_step)
        if self._pending:
            self._block = self._pending.pop(0)
            self._cell = None
            return block_action(self._block, self._grid, self._cells)
        self._block = None
        value = np.where(self._visited, -np.inf, self.cell_values())
        index = int(np.argmax(value))
        self._cell = (index // self._grid, index % self._grid)
        self._visited[self._cell] = True
        return cell_action(*self._cell, self._grid)

    def observe(self, action: np.ndarray, observation: np.ndarray, info: dict[str, Any]) -> None:
        assert self._env is not None and self._mosaic is not None, "reset first"
        if self._block is not None and self._env.last_frame is not None:
            self._mosaic.add(self._block, self._env.last_frame)
        elif self._cell is not None and self.edge_bonus > 0:
            self._edge_bonus(self._cell, self._env.patch_target_probability)

    def cell_values(self) -> np.ndarray:
        """What each cell is worth now (grid, grid): the expected zone-axis particles where
        an overview has been analysed, below that the survey order."""
        analysed = np.zeros_like(self._visited)
        for r, c in self._analysed_blocks():
            analysed[r : r + self._cells, c : c + self._cells] = True
        return np.where(analysed, self.score, self._fallback)

    # ------------------------------------------------------------------ internals

    def _analysed_blocks(self) -> list[tuple[int, int]]:
        done = set(overview_blocks(self._grid, self._cells)) - set(self._to_analyse)
        return sorted(done)

    def _ready(self, block: tuple[int, int]) -> bool:
        """Every block overlapping this one's margin is in (or not planned)."""
        k = self._cells
        return not any(
            abs(p[0] - block[0]) <= k and abs(p[1] - block[1]) <= k for p in self._pending
        )

    def _analyse(self, limit: int) -> None:
        assert self._mosaic is not None
        done = 0
        for block in list(self._to_analyse):
            if done >= limit:
                break
            if block in self._pending or not self._ready(block):
                continue
            self._to_analyse.remove(block)
            self._add_particles(block)
            done += 1

    def _add_particles(self, block: tuple[int, int]) -> None:
        assert self._mosaic is not None
        found = self._mosaic.particles(block)
        if len(found.centres_px) == 0:
            return
        p = self.model.probability(found.features)
        per_cell = self._mosaic.per_cell
        u = (found.centres_px + 0.5) / per_cell  # (x, y) in cells
        sigma = max(self.centre_sigma_m / self._mosaic.cell_m, 1e-6)
        base = np.floor(u).astype(int)
        g = self._grid
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                cx, cy = base[:, 0] + dx, base[:, 1] + dy
                wx = ndtr((cx + 1 - u[:, 0]) / sigma) - ndtr((cx - u[:, 0]) / sigma)
                wy = ndtr((cy + 1 - u[:, 1]) / sigma) - ndtr((cy - u[:, 1]) / sigma)
                ok = (cx >= 0) & (cx < g) & (cy >= 0) & (cy < g)
                np.add.at(self.score, (cy[ok], cx[ok]), (p * wx * wy)[ok])

    def _edge_bonus(self, cell: tuple[int, int], patches: np.ndarray) -> None:
        """A target patch on an edge of the cell's frame: the particle may be centred in
        the neighbour across that edge (patch rows along y, columns along x)."""
        row, col = cell
        edges = {
            (-1, 0): patches[0, :], (1, 0): patches[-1, :],
            (0, -1): patches[:, 0], (0, 1): patches[:, -1],
        }  # fmt: skip
        for (dr, dc), edge in edges.items():
            r, c = row + dr, col + dc
            if 0 <= r < self._grid and 0 <= c < self._grid and not self._visited[r, c]:
                self.score[r, c] += self.edge_bonus * float(edge.max())


__all__ = ["ChannellingPolicy"]
