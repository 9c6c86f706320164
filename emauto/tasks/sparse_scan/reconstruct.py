"""Reconstruct a full image from sparse samples: classical inpainting, GP, compressed sensing.

Every method takes ``values`` (an ``(ny, nx)`` array holding the samples, anything
elsewhere) and ``mask`` (boolean, True where sampled) and returns a float64 ``(ny, nx)``
image in the samples' units (normalised intensity in the benchmark):

- ``linear``: Delaunay linear interpolation (scipy), nearest sample outside the hull.
- ``biharmonic``: scikit-image's biharmonic inpainting (smooth, slower).
- ``tv``: total-variation regularised reconstruction (Chambolle-Pock primal-dual on
  ``min TV(u) + lam/2 |M(u - y)|^2 + mu/2 |(1 - M)(u - linear)|^2``). Pure TV inpainting
  (``mu = 0``) is degenerate for scattered points (a constant image with spikes at the
  samples has the least TV), so the unsampled pixels are weakly tied to ``linear``.
- ``cs``: compressed sensing: the image is sparse in the 2-D DCT; FISTA on
  ``min 1/2 |M(IDCT c) - y|^2 + lam |c|_1``.
- ``gp``: Gaussian-process regression (RBF + noise, hyperparameters by marginal likelihood
  on a subset), which also gives a predictive standard deviation (`gp_reconstruct`).
- ``completion``: the learned completion network (`emauto.models.completion`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import fft
from scipy.interpolate import griddata
from scipy.linalg import cho_solve, solve_triangular

from emauto.errors import ConfigError

__all__ = ["gp_reconstruct", "reconstruct"]


def _check(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if values.ndim != 2 or values.shape != mask.shape:
        raise ConfigError(
            f"expected 2-D values and mask of one shape, got {values.shape} and {mask.shape}"
        )
    if not mask.any():
        raise ConfigError("the mask has no sampled pixel")
    return values, mask


def linear(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Delaunay linear interpolation; nearest sample outside the samples' convex hull."""
    values, mask = _check(values, mask)
    points = np.argwhere(mask)
    samples = values[mask]
    grid = np.argwhere(np.ones(mask.shape, dtype=bool))
    if len(points) < 4:
        out = griddata(points, samples, grid, method="nearest")
        return np.asarray(out, dtype=np.float64).reshape(mask.shape)
    try:
        out = griddata(points, samples, grid, method="linear")
    except Exception:
        out = np.full(len(grid), np.nan)
    missing = np.isnan(out)
    if missing.any():
        out[missing] = griddata(points, samples, grid[missing], method="nearest")
    return np.asarray(out, dtype=np.float64).reshape(mask.shape)


def biharmonic(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """scikit-image biharmonic inpainting of the unsampled pixels."""
    from skimage.restoration import inpaint_biharmonic

    values, mask = _check(values, mask)
    return np.asarray(inpaint_biharmonic(np.where(mask, values, 0.0), ~mask), dtype=np.float64)


def _grad(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.zeros_like(u)
    gy = np.zeros_like(u)
    gx[:, :-1] = u[:, 1:] - u[:, :-1]
    gy[:-1, :] = u[1:, :] - u[:-1, :]
    return gx, gy


def _div(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    dx = np.zeros_like(px)
    dy = np.zeros_like(py)
    dx[:, 0] = px[:, 0]
    dx[:, 1:-1] = px[:, 1:-1] - px[:, :-2]
    dx[:, -1] = -px[:, -2]
    dy[0, :] = py[0, :]
    dy[1:-1, :] = py[1:-1, :] - py[:-2, :]
    dy[-1, :] = -py[-2, :]
    return dx + dy


def tv(
    values: np.ndarray,
    mask: np.ndarray,
    lam: float = 50.0,
    mu: float = 5.0,
    iterations: int = 150,
) -> np.ndarray:
    """Total-variation regularised reconstruction (Chambolle-Pock), started from `linear`."""
    values, mask = _check(values, mask)
    u = linear(values, mask)
    target = np.where(mask, values, u)
    ubar = u.copy()
    px = np.zeros_like(u)
    py = np.zeros_like(u)
    tau = sigma = 1.0 / np.sqrt(8.0)
    weight = np.where(mask, lam, mu)
    for _ in range(iterations):
        gx, gy = _grad(ubar)
        px += sigma * gx
        py += sigma * gy
        norm = np.maximum(1.0, np.hypot(px, py))
        px /= norm
        py /= norm
        previous = u
        v = u + tau * _div(px, py)
        u = (v + tau * weight * target) / (1.0 + tau * weight)
        ubar = 2 * u - previous
    return u


def cs(
    values: np.ndarray, mask: np.ndarray, lam: float = 2e-3, iterations: int = 150
) -> np.ndarray:
    """Compressed sensing: FISTA for DCT-sparse coefficients that fit the samples."""
    values, mask = _check(values, mask)
    m = mask.astype(np.float64)
    y = np.where(mask, values, 0.0)
    c = fft.dctn(linear(values, mask), norm="ortho")
    z = c.copy()
    t = 1.0
    threshold = lam * float(np.abs(y).max() or 1.0) * np.sqrt(mask.sum())
    for _ in range(iterations):
        residual = m * fft.idctn(z, norm="ortho") - y
        step = z - fft.dctn(m * residual, norm="ortho")
        new = np.sign(step) * np.maximum(np.abs(step) - threshold / np.sqrt(mask.size), 0.0)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = new + (t - 1) / t_new * (new - c)
        c, t = new, t_new
    return np.asarray(fft.idctn(c, norm="ortho"), dtype=np.float64)


def _rbf(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    d2 = (a[:, None, 0] - b[None, :, 0]) ** 2 + (a[:, None, 1] - b[None, :, 1]) ** 2
    return np.exp(-0.5 * d2 / length**2)


def _log_marginal(points: np.ndarray, y: np.ndarray, length: float, noise: float) -> float:
    k = _rbf(points, points, length) + noise * np.eye(len(points))
    try:
        chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        return -np.inf
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
    return float(-0.5 * y @ alpha - np.log(np.diag(chol)).sum())


def gp_reconstruct(
    values: np.ndarray,
    mask: np.ndarray,
    max_points: int = 3000,
    seed: int = 0,
    with_std: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """GP mean and predictive standard deviation (both ``(ny, nx)``; the deviation, which
    costs O(points^2 x pixels), only ``with_std``, None otherwise).

    RBF kernel on pixel coordinates plus white noise; length scale and noise chosen by the
    marginal likelihood on up to 600 samples over a small grid (relative to the mean sample
    spacing); prediction with up to ``max_points`` samples (a random subset beyond).
    """
    values, mask = _check(values, mask)
    rng = np.random.default_rng(seed)
    points = np.argwhere(mask).astype(np.float64)
    y = values[mask]
    if len(points) > max_points:
        keep = rng.choice(len(points), size=max_points, replace=False)
        points, y = points[keep], y[keep]
    mean = float(y.mean())
    scale = float(y.std()) or 1.0
    yn = (y - mean) / scale
    spacing = float(np.sqrt(mask.size / mask.sum()))
    subset = rng.choice(len(points), size=min(600, len(points)), replace=False)
    candidates = [
        (length, noise)
        for length in spacing * np.array([0.35, 0.5, 0.7, 1.0, 1.4])
        for noise in (1e-3, 1e-2, 1e-1)
    ]
    length, noise = max(
        candidates, key=lambda c: _log_marginal(points[subset], yn[subset], c[0], c[1])
    )
    k = _rbf(points, points, length) + noise * np.eye(len(points))
    chol = np.linalg.cholesky(k)
    alpha = cho_solve((chol, True), yn)
    grid = np.argwhere(np.ones(mask.shape, dtype=bool)).astype(np.float64)
    out_mean = np.empty(len(grid))
    out_var = np.empty(len(grid))
    for start in range(0, len(grid), 8192):
        block = grid[start : start + 8192]
        ks = _rbf(block, points, length)
        out_mean[start : start + 8192] = ks @ alpha
        if with_std:
            v = solve_triangular(chol, ks.T, lower=True)
            out_var[start : start + 8192] = np.clip(1.0 - np.sum(v * v, axis=0), 0.0, None)
    image = (out_mean * scale + mean).reshape(mask.shape)
    if not with_std:
        return image, None
    return image, (np.sqrt(out_var) * scale).reshape(mask.shape)


def gp(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The GP mean (see `gp_reconstruct`)."""
    return gp_reconstruct(values, mask, with_std=False)[0]


def completion(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The shipped completion network over the linear reconstruction."""
    from emauto.models.completion import load_default_completion

    return load_default_completion().complete(linear(values, mask), values, mask)


Reconstruction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def reconstruct(method: str, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reconstruct with the method named ``method`` (see `registry.RECONSTRUCTIONS`)."""
    from emauto.tasks.sparse_scan.registry import RECONSTRUCTIONS

    function: Reconstruction = RECONSTRUCTIONS.load(method)
    return function(values, mask)
