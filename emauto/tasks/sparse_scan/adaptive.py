"""Adaptive sparse scanning: measure, reconstruct, then sample where the reconstruction is
least certain.

`uncertainty_scan` spends half the budget on a jittered grid, then, in ``rounds`` equal
batches, places the remaining positions where the reconstruction is least certain. Two
scores, both of the spread of an ensemble of `linear` reconstructions, each from a random
3/4 of the samples so far (large near edges and isolated features, small where the image is
smooth):

- ``proxy="delta"`` (the default, `delta_std`): the ensemble's standard deviation to first
  order, from ONE Delaunay triangulation of all the samples: dropping sample ``v`` (chance
  1/4) moves the linear interpolant at a pixel by ``w_v d_v``, ``w_v`` the pixel's
  barycentric weight of ``v`` and ``d_v`` the sample minus the mean of its Delaunay
  neighbours; the variance is ``1/4 x 3/4 x sum_v (w_v d_v)^2``, evaluated on a grid of
  stride ``floor(radius)`` (at most the picks' spacing) and interpolated back (bilinear).
  A batch decision (score and picks) on the twin benchmark images at 512x512 (the 12
  decisions of their scans, 3 times, with another process on the 2 cores): median 83 ms
  (90th percentile 0.13 s) at 1/20, 28 ms at 1/100, with 1 or 2 BLAS threads (the decision
  runs on one, `one_blas_thread`); 115 ms and 35 ms with about five processes on them.
- ``proxy="ensemble"`` (`ensemble_std`): the ensemble itself, ``members`` (4) triangulations
  and interpolations of every pixel: 259-266 ms and 112-115 ms in the same runs (355 ms and
  130 ms with five processes), for the same errors (the same images, ``validated``: 4.84 %
  vs 4.63 % mean at 1/20, 8.92 % vs 9.02 % at 1/100).

Picks are greedy with a minimum spacing ``radius`` of half the mean sample spacing, so one
bright feature does not take a whole batch.

`patch_scan` is the generic loop behind the RL policy: a chooser returns the next patch of a
``grid x grid`` partition from the current partial image; the patch gets a batch of new
positions (uniformly random among its unsampled pixels).

Both take a ``measure`` callable (pixels (N, 2) ``(row, col)`` -> values (N,)): on an image,
`image_measure` (Poisson noise at a dose, `sampling`); on a microscope, an acquisition of
those positions (`run`). Both return the `ScanPlan` actually visited (initial grid first,
then each batch in raster order) and the measured values.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator

import numpy as np
from scipy import ndimage
from scipy.spatial import Delaunay, QhullError, cKDTree
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

from emauto.errors import ConfigError
from emauto.tasks.sparse_scan.reconstruct import linear
from emauto.tasks.sparse_scan.sampling import sample_image
from emauto.tasks.sparse_scan.strategies import ScanPlan, jittered_plan, n_positions

__all__ = [
    "PROXIES",
    "Measure",
    "delta_std",
    "ensemble_std",
    "image_measure",
    "one_blas_thread",
    "patch_scan",
    "uncertainty_scan",
]

#: Measures pixels (N, 2) ``(row, col)``; returns their values (N,).
Measure = Callable[[np.ndarray], np.ndarray]


def image_measure(truth: np.ndarray, dose_e: float | None, seed: int = 0) -> Measure:
    """Measure pixels of a normalised image with Poisson noise at ``dose_e`` (None: none)."""
    rng = np.random.default_rng(seed)

    def measure(pixels: np.ndarray) -> np.ndarray:
        return sample_image(truth, pixels, dose_e, rng)

    return measure


def ensemble_std(
    values: np.ndarray, mask: np.ndarray, rng: np.random.Generator, members: int = 4
) -> np.ndarray:
    """Pixelwise standard deviation of linear reconstructions from random 3/4 subsets."""
    points = np.argwhere(mask)
    stack = []
    for _ in range(members):
        keep = rng.random(len(points)) >= DROP
        sub = np.zeros_like(mask)
        sub[points[keep, 0], points[keep, 1]] = True
        if sub.sum() < 4:
            sub = mask
        stack.append(linear(values, sub))
    return np.asarray(np.std(stack, axis=0), dtype=np.float64)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block on one BLAS thread. A batch decision triangulates: qhull's barycentric
    transforms are one small LAPACK call per triangle, and with 2 OpenBLAS threads on 2
    shared cores they took 350 ms instead of 38 ms (11k samples), the decision's median
    2.3 s instead of 0.17 s."""
    with _blas().limit(limits=1, user_api="blas"):
        yield


#: Uncertainty scores of `uncertainty_scan`.
PROXIES = ("delta", "ensemble")
#: Chance that the ensemble of `ensemble_std` and `delta_std` leaves a sample out.
DROP = 0.25


def delta_std(values: np.ndarray, mask: np.ndarray, stride: int = 1) -> np.ndarray:
    """First-order standard deviation of `ensemble_std`'s ensemble from one triangulation
    (see the module docstring), evaluated every ``stride`` pixels and interpolated back
    (bilinear); an ``mask.shape`` array in the samples' units."""
    with one_blas_thread():
        return _delta_std(values, mask, stride)


def _delta_std(values: np.ndarray, mask: np.ndarray, stride: int) -> np.ndarray:
    points = np.argwhere(mask)
    if len(points) < 4:
        return np.zeros(mask.shape)
    y = values[points[:, 0], points[:, 1]]
    # a thousandth of a pixel of fixed jitter: qhull is a third faster off the integer
    # lattice's co-circular points, and the weights change by no more than that
    wobble = np.random.default_rng(len(points)).uniform(-1e-3, 1e-3, points.shape)
    try:
        tri = Delaunay(points + wobble)
    except QhullError:  # collinear samples: nothing to triangulate yet
        return np.zeros(mask.shape)
    indptr, indices = tri.vertex_neighbor_vertices
    counts = np.diff(indptr)
    owner = np.repeat(np.arange(len(points)), counts)
    mean = np.bincount(owner, weights=y[indices], minlength=len(points))
    d = np.where(counts > 0, y - mean / np.maximum(counts, 1), 0.0)
    ny, nx = mask.shape
    stride = max(1, int(stride))
    rows = np.arange(0, ny, stride, dtype=np.float64)
    cols = np.arange(0, nx, stride, dtype=np.float64)
    if rows[-1] != ny - 1:
        rows = np.append(rows, ny - 1)
    if cols[-1] != nx - 1:
        cols = np.append(cols, nx - 1)
    gy, gx = np.meshgrid(rows, cols, indexing="ij")
    grid = np.stack([gy.ravel(), gx.ravel()], axis=1)
    simplex = tri.find_simplex(grid)
    var = np.empty(len(grid))
    inside = simplex >= 0
    s = simplex[inside]
    transform = tri.transform[s]
    b = np.einsum("ijk,ik->ij", transform[:, :2], grid[inside] - transform[:, 2])
    w = np.concatenate([b, 1.0 - b.sum(axis=1, keepdims=True)], axis=1)
    var[inside] = np.sum((w * d[tri.simplices[s]]) ** 2, axis=1)
    if not inside.all():  # outside the hull `linear` takes the nearest sample
        _, near = cKDTree(points).query(grid[~inside])
        var[~inside] = d[near] ** 2
    std = np.sqrt(DROP * (1 - DROP) * var).reshape(gy.shape)
    if stride == 1:
        return std
    return np.asarray(
        ndimage.map_coordinates(
            std,
            np.meshgrid(
                np.interp(np.arange(ny), rows, np.arange(len(rows))),
                np.interp(np.arange(nx), cols, np.arange(len(cols))),
                indexing="ij",
            ),
            order=1,
        ),
        dtype=np.float64,
    )


def _pick(score: np.ndarray, taken: np.ndarray, k: int, radius: float) -> np.ndarray:
    """Up to ``k`` pixels of highest ``score``, not taken, at least ``radius`` apart."""
    nx = score.shape[1]
    order = np.argsort(np.where(taken, -np.inf, score), axis=None)[::-1]
    blocked = taken.copy()
    r = max(0, math.floor(radius))
    chosen: list[tuple[int, int]] = []
    for flat in order:
        if len(chosen) >= k:
            break
        y, x = divmod(int(flat), nx)
        if blocked[y, x]:
            continue
        chosen.append((y, x))
        blocked[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = True
    if len(chosen) < k:  # spacing too strict: fill with the best free pixels
        picked = np.zeros_like(taken)
        for y, x in chosen:
            picked[y, x] = True
        for flat in order:
            if len(chosen) >= k:
                break
            y, x = divmod(int(flat), nx)
            if not taken[y, x] and not picked[y, x]:
                chosen.append((y, x))
                picked[y, x] = True
    pixels = np.asarray(chosen, dtype=np.int64).reshape(-1, 2)
    return pixels[np.lexsort((pixels[:, 1], pixels[:, 0]))]


def _start(
    shape: tuple[int, int], n: int, measure: Measure, rng: np.random.Generator, initial: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    first = jittered_plan(shape, max(1, min(n, round(n * initial))), rng).pixels
    values = np.zeros(shape, dtype=np.float64)
    values[first[:, 0], first[:, 1]] = measure(first)
    mask = np.zeros(shape, dtype=bool)
    mask[first[:, 0], first[:, 1]] = True
    return first, values, mask


def uncertainty_scan(
    shape: tuple[int, int],
    coverage: float,
    measure: Measure,
    seed: int = 0,
    rounds: int = 4,
    initial: float = 0.5,
    members: int = 4,
    proxy: str = "delta",
) -> tuple[ScanPlan, np.ndarray]:
    """Ensemble-uncertainty adaptive scan of an ``(ny, nx)`` raster at ``coverage``;
    ``proxy``: the score, one of `PROXIES` (see the module docstring)."""
    if proxy not in PROXIES:
        raise ConfigError(f"unknown uncertainty proxy {proxy!r}; expected one of {PROXIES}")
    rng = np.random.default_rng(seed)
    n = n_positions(shape, coverage)
    visited, values, mask = _start(shape, n, measure, rng, initial)
    order = [visited]
    radius = 0.5 * math.sqrt(mask.size / n)
    for index in range(rounds):
        remaining = n - int(mask.sum())
        if remaining <= 0:
            break
        batch = remaining // (rounds - index)
        if batch <= 0:
            continue
        with one_blas_thread():
            if proxy == "delta":
                score = delta_std(values, mask, stride=math.floor(radius))
            else:
                score = ensemble_std(values, mask, rng, members)
            new = _pick(score, mask, batch, radius)
        values[new[:, 0], new[:, 1]] = measure(new)
        mask[new[:, 0], new[:, 1]] = True
        order.append(new)
    pixels = np.concatenate(order)
    return ScanPlan("uncertainty", shape, pixels), values


#: Scores the patches (grid**2,) of a partial scan from (values, mask, reconstruction);
#: the best-scoring patch with unsampled pixels left is scanned next.
PatchChooser = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def patch_pixels(shape: tuple[int, int], grid: int, patch: int) -> tuple[slice, slice]:
    """Row and column slices of patch ``patch`` (row-major) of a ``grid x grid`` partition."""
    ny, nx = shape
    row, col = divmod(int(patch), grid)
    y0, y1 = row * ny // grid, (row + 1) * ny // grid
    x0, x1 = col * nx // grid, (col + 1) * nx // grid
    return slice(y0, y1), slice(x0, x1)


def _free(mask: np.ndarray, grid: int, patch: int) -> bool:
    rows, cols = patch_pixels(mask.shape, grid, patch)
    return not bool(mask[rows, cols].all())


def add_in_patch(
    mask: np.ndarray, grid: int, patch: int, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``k`` random unsampled pixels (N, 2) of a patch (fewer if it is nearly full)."""
    rows, cols = patch_pixels(mask.shape, grid, patch)
    free = np.argwhere(~mask[rows, cols])
    if len(free) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pick = free[rng.choice(len(free), size=min(k, len(free)), replace=False)]
    pick = pick + np.array([rows.start, cols.start])
    return pick[np.lexsort((pick[:, 1], pick[:, 0]))].astype(np.int64)


def patch_scan(
    shape: tuple[int, int],
    coverage: float,
    measure: Measure,
    chooser: PatchChooser,
    grid: int = 8,
    batch: int | None = None,
    seed: int = 0,
    initial: float = 0.5,
    name: str = "rl",
) -> tuple[ScanPlan, np.ndarray]:
    """Patch-by-patch adaptive scan driven by ``chooser``; (plan, values).

    ``batch`` positions per step (default: a 64th of the budget, at least 1), in the
    best-scoring patch that still has unsampled pixels.
    """
    rng = np.random.default_rng(seed)
    n = n_positions(shape, coverage)
    visited, values, mask = _start(shape, n, measure, rng, initial)
    order = [visited]
    step = batch or max(1, n // 64)
    while mask.sum() < n:
        with one_blas_thread():
            reconstruction = linear(values, mask)
        scores = np.asarray(chooser(values, mask, reconstruction), dtype=np.float64).ravel()
        if scores.shape != (grid * grid,):
            raise ValueError(
                f"a patch chooser must return {grid * grid} scores, got {scores.shape}"
            )
        free = np.array([_free(mask, grid, p) for p in range(grid * grid)])
        patch = int(np.argmax(np.where(free, scores, -np.inf)))
        new = add_in_patch(mask, grid, patch, min(step, n - int(mask.sum())), rng)
        values[new[:, 0], new[:, 1]] = measure(new)
        mask[new[:, 0], new[:, 1]] = True
        order.append(new)
    pixels = np.concatenate(order)
    return ScanPlan(name, shape, pixels), values
