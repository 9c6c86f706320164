"""Sparse scan strategies: which pixels of an ``(ny, nx)`` raster the probe visits, in order.

A strategy at coverage ``f`` visits exactly ``round(f * ny * nx)`` distinct pixels (at least
one). Point strategies (``raster``, ``random``, ``jittered``) jump between isolated pixels
and pay the scan system's settling time after every jump; path strategies (``raster_lines``,
``spiral``, ``lissajous``, ``line_hop``) sweep the probe continuously pixel by pixel and pay
settling only where the path jumps, and flyback where it returns across the field.

Pixels are ``(row, col)`` = ``(y, x)`` indices. `to_request` turns a plan into a Microscope
acquisition (explicit positions or line segments, metres in the scan frame), laid out like
the twin's raster of the same shape over ``scan_fov``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emauto.errors import ConfigError
from emauto.microscope import (
    ImageRequest,
    LineSegment,
    PositionsScan,
    ScanLimits,
    SegmentsScan,
)
from emauto.units import ELECTRON_CHARGE_C

__all__ = [
    "ScanCost",
    "ScanPlan",
    "check_coverage",
    "make_plan",
    "n_positions",
    "scan_cost",
    "to_request",
]


@dataclass(frozen=True)
class ScanPlan:
    """An ordered sparse scan of an ``(ny, nx)`` raster.

    ``pixels``: (N, 2) int64 ``(row, col)``, distinct, in visiting order. ``segments``: for a
    path made of straight runs, ``(first, last)`` index pairs into ``pixels`` (inclusive) of
    each straight run; ``None`` for point and curved-path plans.
    """

    name: str
    shape: tuple[int, int]
    pixels: np.ndarray
    segments: tuple[tuple[int, int], ...] | None = None

    @property
    def n(self) -> int:
        """Number of probe positions."""
        return int(self.pixels.shape[0])

    def mask(self) -> np.ndarray:
        """Boolean ``(ny, nx)`` mask of the visited pixels."""
        mask = np.zeros(self.shape, dtype=bool)
        mask[self.pixels[:, 0], self.pixels[:, 1]] = True
        return mask

    @property
    def coverage(self) -> float:
        """Visited fraction of the raster's pixels."""
        return self.n / (self.shape[0] * self.shape[1])


@dataclass(frozen=True)
class ScanCost:
    """What a plan costs on a scan system: beam-on and wall time (s), electrons, jumps."""

    exposure_s: float
    time_s: float
    dose_e: float
    jumps: int
    flybacks: int
    full_raster_time_s: float
    full_raster_dose_e: float

    @property
    def time_fraction(self) -> float:
        """Wall time relative to a full raster of the same shape and dwell."""
        return self.time_s / self.full_raster_time_s

    @property
    def dose_fraction(self) -> float:
        """Electrons relative to a full raster of the same shape and dwell."""
        return self.dose_e / self.full_raster_dose_e


def check_coverage(coverage: float) -> float:
    """``coverage`` as a float in (0, 1], or a `ConfigError` saying what arrived."""
    if isinstance(coverage, bool) or not isinstance(coverage, int | float | np.floating):
        raise ConfigError(f"coverage must be a number in (0, 1], got {coverage!r}")
    value = float(coverage)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ConfigError(f"coverage must be in (0, 1] (a fraction of pixels), got {value!r}")
    return value


def n_positions(shape: tuple[int, int], coverage: float) -> int:
    """Probe positions of a plan at ``coverage``: ``round(coverage * ny * nx)``, at least 1."""
    ny, nx = _check_shape(shape)
    return max(1, round(check_coverage(coverage) * ny * nx))


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 2:
        raise ConfigError(f"scan shape must be (ny, nx) with both >= 2, got {shape!r}")
    return int(shape[0]), int(shape[1])


# --------------------------------------------------------------------------- helpers


def _dedupe(pixels: np.ndarray) -> np.ndarray:
    """Drop repeated pixels, keeping the first visit (order preserved)."""
    _, first = np.unique(pixels[:, 0] * 1_000_003 + pixels[:, 1], return_index=True)
    return pixels[np.sort(first)]


def _fit_count(
    pixels: np.ndarray, n: int, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Exactly ``n`` distinct pixels: drop random extras or add random unvisited pixels.

    Order is preserved; added pixels are appended in raster order (a point plan's order).
    """
    pixels = _dedupe(pixels)
    if len(pixels) > n:
        keep = np.sort(rng.choice(len(pixels), size=n, replace=False))
        return pixels[keep]
    if len(pixels) < n:
        taken = np.zeros(shape, dtype=bool)
        taken[pixels[:, 0], pixels[:, 1]] = True
        free = np.flatnonzero(~taken.ravel())
        extra = np.sort(rng.choice(free, size=n - len(pixels), replace=False))
        pixels = np.concatenate([pixels, np.stack(np.unravel_index(extra, shape), axis=1)])
    return pixels


def _raster_order(pixels: np.ndarray) -> np.ndarray:
    """Sort point pixels row by row (the cheapest order for a point scan)."""
    return pixels[np.lexsort((pixels[:, 1], pixels[:, 0]))]


def _path_pixels(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels ``(row, col)`` along a dense path of ``(x, y)`` pixel coordinates."""
    ny, nx = shape
    cols = np.clip(np.rint(xy[:, 0]), 0, nx - 1).astype(np.int64)
    rows = np.clip(np.rint(xy[:, 1]), 0, ny - 1).astype(np.int64)
    return _dedupe(np.stack([rows, cols], axis=1))


def _trace_path(
    path: Callable[[float], np.ndarray], n: int, shape: tuple[int, int], lo: float, hi: float
) -> np.ndarray:
    """The first ``n`` distinct pixels of ``path(p)`` (dense (x, y) points) for the least
    density parameter ``p`` in [lo, hi] whose path covers at least ``n`` pixels."""
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if len(_path_pixels(path(mid), shape)) >= n:
            hi = mid
        else:
            lo = mid
    return _path_pixels(path(hi), shape)[:n]


# --------------------------------------------------------------------------- strategies


def _grid_points(
    shape: tuple[int, int], n: int, rng: np.random.Generator, jitter: bool
) -> np.ndarray:
    ny, nx = shape
    step = math.sqrt(ny * nx / n)
    rows_n, cols_n = max(1, round(ny / step)), max(1, round(nx / step))
    cell_y, cell_x = ny / rows_n, nx / cols_n
    gy, gx = np.meshgrid(np.arange(rows_n), np.arange(cols_n), indexing="ij")
    if jitter:
        fy = rng.uniform(0, 1, gy.shape)
        fx = rng.uniform(0, 1, gx.shape)
    else:
        fy = fx = np.full(gy.shape, 0.5)
    rows = np.minimum(((gy + fy) * cell_y).astype(np.int64), ny - 1)
    cols = np.minimum(((gx + fx) * cell_x).astype(np.int64), nx - 1)
    pixels = np.stack([rows.ravel(), cols.ravel()], axis=1)
    return _raster_order(_fit_count(pixels, n, shape, rng))


def raster_plan(shape: tuple[int, int], n: int, rng: np.random.Generator) -> ScanPlan:
    """A regular grid of points (subsampled raster), about ``sqrt(1/f)`` pixels apart."""
    return ScanPlan("raster", shape, _grid_points(shape, n, rng, jitter=False))


def jittered_plan(shape: tuple[int, int], n: int, rng: np.random.Generator) -> ScanPlan:
    """One uniformly random pixel in each cell of that grid (jittered grid)."""
    return ScanPlan("jittered", shape, _grid_points(shape, n, rng, jitter=True))


def random_plan(shape: tuple[int, int], n: int, rng: np.random.Generator) -> ScanPlan:
    """Uniformly random distinct pixels, visited row by row."""
    ny, nx = shape
    flat = np.sort(rng.choice(ny * nx, size=n, replace=False))
    return ScanPlan("random", shape, np.stack(np.unravel_index(flat, shape), axis=1))


def raster_lines_plan(shape: tuple[int, int], n: int, rng: np.random.Generator) -> ScanPlan:
    """Every k-th raster line, scanned in full (the last line shortened to fit the budget)."""
    ny, nx = shape
    lines = max(1, math.ceil(n / nx))
    rows = np.unique(np.round((np.arange(lines) + 0.5) * ny / lines).astype(np.int64))
    rows = np.minimum(rows, ny - 1)
    pixels = np.concatenate([np.stack([np.full(nx, r), np.arange(nx)], axis=1) for r in rows])
    pixels = _dedupe(pixels)[:n]
    if len(pixels) < n:
        pixels = _fit_count(pixels, n, shape, rng)
    return ScanPlan("raster_lines", shape, pixels, _straight_runs(pixels))


def spiral_plan(shape: tuple[int, int], n: int, rng: np.random.Generator) -> ScanPlan:
    """An Archimedean spiral from the centre, arms spaced so its path covers ``n`` pixels."""
    ny, nx = shape
    cy, cx = (ny - 1) / 2, (nx - 1) / 2
    r_max = math.hypot(ny, nx) / 2

    def path(density: float) -> np.ndarray:
        # arms ``1 / density`` px apart; arc length ~ pi r^2 / spacing, sampled every 0.4 px
        spacing = 1.0 / density
        turns = r_max / spacing
        theta_max = 2 * math.pi * turns
        length = math.pi * r_max**2 / spacing + r_max
        theta = np.sqrt(np.linspace(0, 1, int(length / 0.4) + 16)) * theta_max
        radius = spacing * theta / (2 * math.pi)
        xy = np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)
        inside = (
            (xy[:, 0] > -0.5) & (xy[:, 0] < nx - 0.5) & (xy[:, 1] > -0.5) & (xy[:, 1] < ny - 0.5)
        )
        return xy[inside]

    pixels = _trace_path(path, n, shape, 0.25 / max(ny, nx), 1.0)
    return ScanPlan("spiral", shape, _fit_count(pixels, n, shape, rng))


def lissajous_plan(shape: tuple[int, int], n: int, rng: np.random.Generator) -> ScanPlan:
    """A Lissajous figure ``x ~ sin(a t + pi/2), y ~ sin((a+1) t)``, ``a`` chosen for ``n``."""
    ny, nx = shape

    def path(a: float) -> np.ndarray:
        b = a + 1.0
        length = 2 * math.pi * math.hypot(a * nx / 2, b * ny / 2) * 1.3
        t = np.linspace(0, 2 * math.pi, int(length / 0.4) + 16)
        x = (nx - 1) / 2 * (1 + np.sin(a * t + math.pi / 2))
        y = (ny - 1) / 2 * (1 + np.sin(b * t))
        return np.stack([x, y], axis=1)

    pixels = _trace_path(path, n, shape, 0.25, float(ny * nx))
    return ScanPlan("lissajous", shape, _fit_count(pixels, n, shape, rng))


def line_hop_plan(shape: tuple[int, int], n: int, rng: np.random.Generator) -> ScanPlan:
    """Line hopping: in bands of ``1/f`` rows the probe sweeps along x in short straight runs
    (4 px), hopping to a random row of the band before each run."""
    ny, nx = shape
    bands = max(1, min(ny, math.ceil(n / nx)))
    edges = np.round(np.linspace(0, ny, bands + 1)).astype(np.int64)
    run = 4
    pixels_list: list[np.ndarray] = []
    for top, bottom in itertools.pairwise(edges):
        for start in range(0, nx, run):
            row = int(rng.integers(top, max(top + 1, bottom)))
            cols = np.arange(start, min(start + run, nx))
            pixels_list.append(np.stack([np.full(len(cols), row), cols], axis=1))
    pixels = np.concatenate(pixels_list)[:n]
    if len(pixels) < n:
        pixels = _fit_count(pixels, n, shape, rng)
    return ScanPlan("line_hop", shape, pixels, _straight_runs(pixels))


def _straight_runs(pixels: np.ndarray) -> tuple[tuple[int, int], ...]:
    """``(first, last)`` index pairs of maximal runs along a row with unit x steps."""
    step = np.diff(pixels, axis=0)
    breaks = np.flatnonzero(~((step[:, 0] == 0) & (step[:, 1] == 1)))
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks, len(pixels) - 1]
    return tuple((int(s), int(e)) for s, e in zip(starts, ends, strict=True))


PlanFactory = Callable[[tuple[int, int], int, np.random.Generator], ScanPlan]


def make_plan(name: str, shape: tuple[int, int], coverage: float, seed: int = 0) -> ScanPlan:
    """The static strategy ``name`` at ``coverage`` (fraction of pixels) on ``shape``."""
    from emauto.tasks.sparse_scan.registry import STATIC_STRATEGIES

    factory: PlanFactory = STATIC_STRATEGIES.load(name)
    shape = _check_shape(shape)
    n = n_positions(shape, coverage)
    return factory(shape, n, np.random.default_rng(seed))


# --------------------------------------------------------------------------- cost


def scan_cost(
    plan: ScanPlan, limits: ScanLimits, dwell_s: float, beam_current_A: float
) -> ScanCost:
    """Beam-on time, wall time and electrons of ``plan``, and of a full raster for reference.

    Model: each position dwells ``dwell_s``; a move of more than one pixel (diagonal
    included) is a jump and costs ``limits.settle_s``; a jump back across more than half the
    field along x (a line return) costs ``limits.flyback_s`` instead. A full raster costs
    ``ny * (nx * dwell + flyback) + settle``.
    """
    ny, nx = plan.shape
    steps = np.abs(np.diff(plan.pixels, axis=0))
    jump = np.max(steps, axis=1) > 1 if len(steps) else np.zeros(0, dtype=bool)
    back = np.diff(plan.pixels[:, 1]) < -nx / 2 if len(steps) else np.zeros(0, dtype=bool)
    flybacks = int(np.sum(jump & back))
    jumps = int(np.sum(jump & ~back))
    exposure = plan.n * dwell_s
    time_s = exposure + limits.settle_s * (1 + jumps) + limits.flyback_s * flybacks
    per_position = beam_current_A * dwell_s / ELECTRON_CHARGE_C
    full_time = ny * (nx * dwell_s + limits.flyback_s) + limits.settle_s
    return ScanCost(
        exposure_s=exposure,
        time_s=time_s,
        dose_e=per_position * plan.n,
        jumps=jumps,
        flybacks=flybacks,
        full_raster_time_s=full_time,
        full_raster_dose_e=per_position * ny * nx,
    )


# --------------------------------------------------------------------------- requests


def pixel_positions_m(pixels: np.ndarray, shape: tuple[int, int], fov_m: float) -> np.ndarray:
    """Scan-frame positions (N, 2) ``(x, y)`` in metres of raster pixels over ``fov_m``
    (square pixels ``fov_m / nx``, centred like the twin's raster)."""
    ny, nx = shape
    pixel = fov_m / nx
    x = (pixels[:, 1] - (nx - 1) / 2) * pixel
    y = (pixels[:, 0] - (ny - 1) / 2) * pixel
    return np.stack([x, y], axis=1).astype(np.float64)


def to_request(
    plan: ScanPlan, fov_m: float, dwell_s: float | None = None, detector: str = "adf"
) -> ImageRequest:
    """The Microscope acquisition of ``plan`` over a field of view ``fov_m`` (m): line
    segments for plans made of straight runs, explicit positions otherwise."""
    if not (math.isfinite(fov_m) and fov_m > 0):
        raise ConfigError(f"field of view must be a positive length in metres, got {fov_m!r}")
    positions = pixel_positions_m(plan.pixels, plan.shape, fov_m)
    if plan.segments is not None:
        segments = tuple(
            LineSegment(
                start_m=(float(positions[a, 0]), float(positions[a, 1])),
                end_m=(float(positions[b, 0]), float(positions[b, 1])),
                n_points=b - a + 1,
            )
            for a, b in plan.segments
        )
        return ImageRequest(
            detector=detector, scan=SegmentsScan(segments=segments), dwell_s=dwell_s
        )
    return ImageRequest(
        detector=detector, scan=PositionsScan(positions_m=positions), dwell_s=dwell_s
    )
