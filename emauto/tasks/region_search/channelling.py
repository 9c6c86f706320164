"""Overview mosaics of a field and the zone-axis model of `particles` fitted on training
fields.

`Mosaic` stitches the env's medium-magnification overviews (each ``overview_cells`` square
of cells, ``frame_px`` pixels) into one scattered-fraction map of the field and finds the
particles of one block (with a margin from its neighbours, so that a particle on a block
edge is measured whole). `fit_from_fields` trains the logistic `particles.TargetModel` on
training fields (seeds below 50 000; never the benchmark's 90 000+): every block overviewed,
particles found, each labelled from the twin's ground truth (a zone-axis particle, twinned
or not, within 1 nm of the found centre). Ground truth trains the model; the policy that
uses it sees only frames.

    python -m emauto.tasks.region_search.channelling 2000 2160

prints the fitted model as JSON (shipped in `channelling_model.TARGET_MODEL`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence

import numpy as np

from emauto.microscope import Frame
from emauto.tasks.region_search.env import RegionSearchConfig, RegionSearchEnv, cell_action
from emauto.tasks.region_search.particles import (
    Particles,
    TargetModel,
    find_particles,
    fit_target_model,
)

#: Margin (m) of neighbouring blocks analysed with a block: more than the largest particle
#: radius, so a particle whose centre is in the block is measured whole.
MARGIN_M = 8e-9


def overview_blocks(grid: int, cells: int) -> list[tuple[int, int]]:
    """Top-left cells (row, col) of the overview blocks that tile a ``grid`` square (the last
    row and column of blocks pushed back inside the grid when ``cells`` does not divide it)."""
    starts = sorted({min(s, grid - cells) for s in range(0, grid, cells)})
    return [(r, c) for r in starts for c in starts]


def block_action(block: tuple[int, int], grid: int, cells: int) -> np.ndarray:
    """The env action whose overview covers ``block`` (the env centres it on the cell)."""
    return cell_action(block[0] + cells // 2, block[1] + cells // 2, grid, zoom=-1.0)


class Mosaic:
    """The overviews of one field, stitched; pixel ``pixel_m`` (m), ``per_cell`` pixels a
    cell; coordinates (x, y) in pixels, origin at the field's lowest corner."""

    def __init__(self, config: RegionSearchConfig) -> None:
        k, g = config.overview_cells, config.grid
        if config.frame_px % k:
            raise ValueError(f"frame_px {config.frame_px} must be a multiple of overview_cells {k}")
        self.grid, self.cells = g, k
        self.per_cell = config.frame_px // k
        self.cell_m = config.survey.field_m / g
        self.pixel_m = self.cell_m / self.per_cell
        self.fraction = np.zeros((g * self.per_cell, g * self.per_cell), dtype=np.float32)
        self.margin_px = math.ceil(MARGIN_M / self.pixel_m)

    def add(self, block: tuple[int, int], frame: Frame) -> None:
        """Put an overview frame of ``block`` (raw counts) into the mosaic."""
        n = self.cells * self.per_cell
        if frame.data.shape != (n, n):
            raise ValueError(f"expected a ({n}, {n}) overview, got {frame.data.shape}")
        fraction = frame.data / (frame.dose_e / frame.data.size)
        r0, c0 = block[0] * self.per_cell, block[1] * self.per_cell
        self.fraction[r0 : r0 + n, c0 : c0 + n] = fraction

    def particles(self, block: tuple[int, int]) -> Particles:
        """Particles whose centre lies in ``block``, measured on the block and its margin;
        centres in mosaic pixels (x, y)."""
        n, m = self.cells * self.per_cell, self.margin_px
        size = self.fraction.shape[0]
        r0, c0 = block[0] * self.per_cell, block[1] * self.per_cell
        y0, x0 = max(r0 - m, 0), max(c0 - m, 0)
        crop = self.fraction[y0 : min(r0 + n + m, size), x0 : min(c0 + n + m, size)]
        found = find_particles(crop, self.pixel_m)
        centres = found.centres_px + np.array([x0, y0])
        keep = (
            (centres[:, 0] >= c0 - 0.5) & (centres[:, 0] < c0 + n - 0.5)
            & (centres[:, 1] >= r0 - 0.5) & (centres[:, 1] < r0 + n - 0.5)
        )  # fmt: skip
        return Particles(centres[keep], found.features[keep])

    def cell_of(self, centres_px: np.ndarray) -> np.ndarray:
        """(row, col) of the cells holding mosaic points (N, 2) (x, y)."""
        index = np.floor((np.asarray(centres_px).reshape(-1, 2) + 0.5) / self.per_cell)
        index = np.clip(index.astype(int), 0, self.grid - 1)
        return np.stack([index[:, 1], index[:, 0]], axis=1)


def field_particles(
    env: RegionSearchEnv, field_seed: int
) -> tuple[Particles, np.ndarray, np.ndarray]:
    """Overview every block of a (training) field; its particles, their labels (1: a
    zone-axis particle of the twin's ground truth within 1 nm) and the truth's distance (m)."""
    from emauto.drivers.sim.survey import RANDOM

    env.reset(seed=0, options={"field_seed": field_seed})
    mosaic = Mosaic(env.config)
    blocks = overview_blocks(env.config.grid, env.config.overview_cells)
    for block in blocks:
        env.step(block_action(block, env.config.grid, env.config.overview_cells))
        assert env.last_frame is not None
        mosaic.add(block, env.last_frame)
    found = [mosaic.particles(b) for b in blocks]
    centres = np.concatenate([f.centres_px for f in found])
    features = np.concatenate([f.features for f in found])
    field = env.scope.field
    half = env.config.survey.field_m / 2
    truth_px = (field.centres_m + half) / mosaic.pixel_m - 0.5
    labels = np.zeros(len(centres))
    distance = np.zeros(len(centres))
    for i, (x, y) in enumerate(centres):
        d = np.hypot(truth_px[:, 0] - x, truth_px[:, 1] - y)
        j = int(np.argmin(d))
        distance[i] = d[j] * mosaic.pixel_m
        labels[i] = float(field.kinds[j] != RANDOM and distance[i] < 1e-9)
    return Particles(centres, features), labels, distance


def fit_from_fields(fields: Sequence[int], *, quadratic: bool = True) -> TargetModel:
    """`TargetModel` fitted on the particles of training ``fields`` (`field_particles`)."""
    if any(f >= 50_000 for f in fields):
        raise ValueError("train on field seeds below 50000 (90000+ are the benchmark's)")
    env = RegionSearchEnv(RegionSearchConfig(max_steps=10_000))
    features, labels = [], []
    for f in fields:
        found, label, _ = field_particles(env, f)
        features.append(found.features)
        labels.append(label)
    env.close()
    name = f"fields {min(fields)}-{max(fields)} ({len(fields)})"
    return fit_target_model(
        np.concatenate(features), np.concatenate(labels), quadratic=quadratic, trained_on=name
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emauto.tasks.region_search.channelling LOW HIGH``: fit on fields
    [LOW, HIGH) and print the model as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    model = fit_from_fields(range(int(args[0]), int(args[1])))
    print(json.dumps(model.model_dump(mode="json"), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
