"""Atom columns refined by 2-D Gaussian fits, with per-column uncertainties and the
Cramér-Rao bound.

Each column is modelled in a round window of radius ``half_px`` as
``B + A exp(-((x - x0)^2 + (y - y0)^2) / (2 s^2))`` on top of the other columns' fitted
Gaussians (subtracted, then refitted: two passes), so a neighbour's tail does not pull a
column. Fits are Levenberg-Marquardt, vectorised over all columns at once. The covariance
of a fit is ``sigma^2 (J^T J)^-1`` with ``sigma^2`` the window's residual variance, so a
column's uncertainty includes model misfit as well as noise.

`cramer_rao_xy` gives the bound on the position of each column for Poisson counting
(variance = expected electrons) plus Gaussian read noise, for the same Gaussian model at
its noiseless parameters: the smallest rms error any unbiased estimator can reach.

Parameters are (x0, y0, A, s, B); positions in pixels (x = column, y = row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_PARAMS = 5


@dataclass(frozen=True)
class ColumnFits:
    """Fitted columns: ``params`` (N, 5) as (x0, y0, A, s, B), ``sigma`` (N, 5) their
    standard errors, ``converged`` (N,) and the window radius used (pixels)."""

    params: np.ndarray
    sigma: np.ndarray
    converged: np.ndarray
    half_px: int
    significance_: np.ndarray | None = None  # (N,) likelihood-ratio root, see fit_columns
    expected: np.ndarray | None = None  # (N, W) fitted expectation in each window (nan off)
    residual: np.ndarray | None = None  # (N, W) data minus expectation (nan off the image)

    @property
    def xy(self) -> np.ndarray:
        return self.params[:, :2]

    @property
    def significance(self) -> np.ndarray:
        """How far a column stands above the noise (standard deviations): the signed root of
        the likelihood ratio against a flat window (amplitude / its error if not fitted)."""
        if self.significance_ is not None:
            return self.significance_
        return self.params[:, 2] / np.maximum(self.sigma[:, 2], 1e-12)

    @property
    def position_sigma_px(self) -> np.ndarray:
        """(N,) rms 2-D position uncertainty sqrt(var x + var y), pixels."""
        return np.hypot(self.sigma[:, 0], self.sigma[:, 1])


def _windows(
    shape: tuple[int, int], centres_xy: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices (N, W), pixel x and y (N, W) and mask (N, W) of round windows."""
    ny, nx = shape
    off = np.arange(-half, half + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    round_ = (ox**2 + oy**2) <= (half + 0.5) ** 2
    ox, oy = ox[round_], oy[round_]
    cx = np.rint(centres_xy[:, 0]).astype(np.int64)
    cy = np.rint(centres_xy[:, 1]).astype(np.int64)
    px = cx[:, None] + ox[None, :]
    py = cy[:, None] + oy[None, :]
    mask = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    flat = np.clip(py, 0, ny - 1) * nx + np.clip(px, 0, nx - 1)
    return flat, px.astype(np.float64), py.astype(np.float64), mask


def _model(params: np.ndarray, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model (N, W) and Jacobian (N, W, 5) of the windows."""
    x0, y0, a, s, b = (params[:, i, None] for i in range(N_PARAMS))
    dx, dy = px - x0, py - y0
    r2 = dx * dx + dy * dy
    g = np.exp(-r2 / (2 * s * s))
    model = b + a * g
    jac = np.stack(
        [a * g * dx / (s * s), a * g * dy / (s * s), g, a * g * r2 / (s**3), np.ones_like(g)],
        axis=-1,
    )
    return model, jac


def _gaussian(params: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Each column's Gaussian, without background, on its pixels (N, W)."""
    r2 = (px - params[:, 0, None]) ** 2 + (py - params[:, 1, None]) ** 2
    return np.asarray(params[:, 2, None] * np.exp(-r2 / (2 * params[:, 3, None] ** 2)))


def _others(
    shape: tuple[int, int], params: np.ndarray, flat: np.ndarray, px: np.ndarray, py: np.ndarray
) -> np.ndarray:
    """The other columns' Gaussians (without background) in each window (N, W), each
    rendered out to 3.5 of its widths (not just its own window)."""
    reach = int(np.ceil(3.5 * float(np.max(params[:, 3])))) + 1
    rflat, rpx, rpy, rmask = _windows(shape, params[:, :2], reach)
    total = np.zeros(shape[0] * shape[1])
    np.add.at(total, rflat[rmask], _gaussian(params, rpx, rpy)[rmask])
    return np.asarray(total[flat] - _gaussian(params, px, py))


def fit_columns(
    image: np.ndarray,
    initial_xy: np.ndarray,
    *,
    sigma_px: float,
    half_px: int,
    passes: int = 2,
    iterations: int = 12,
    fixed_width_px: np.ndarray | None = None,
    noise: tuple[float, float] | None = None,
) -> ColumnFits:
    """Fit a Gaussian column at each of ``initial_xy`` (N, 2 pixels) of ``image``.

    ``sigma_px``: the starting column width (rms, pixels); ``half_px``: the window radius
    (pixels, about half the nearest-neighbour distance). A fit that leaves its window, or
    whose width leaves [0.3 px, 1.5 half_px], is marked not converged. ``fixed_width_px``
    (N,): widths held fixed (e.g. each sublattice's median), then ``s`` is not fitted.
    ``noise`` (alpha, beta): pixel variance ``alpha * expected + beta`` (shot noise in any
    gain and offset, `noise_model`); the fit is then weighted by its inverse (close to the
    maximum-likelihood fit of counts), else unweighted.
    """
    data = np.asarray(image, dtype=np.float64)
    n = len(initial_xy)
    if n == 0:
        empty = np.zeros((0, N_PARAMS))
        return ColumnFits(empty, empty.copy(), np.zeros(0, bool), half_px)
    start = np.asarray(initial_xy, dtype=np.float64)
    flat, px, py, mask = _windows(data.shape, start, half_px)
    values = data.ravel()[flat]
    mask_f = mask.astype(np.float64)
    weight = mask_f
    ordered = np.sort(np.where(mask, values, np.inf), axis=1)  # 10th percentile a window
    counts = mask.sum(axis=1)
    tenth = np.clip((0.1 * (counts - 1)).astype(int), 0, None)
    low = np.where(counts > 0, ordered[np.arange(n), tenth], 0.0)
    centre = data[
        np.clip(np.rint(start[:, 1]).astype(int), 0, data.shape[0] - 1),
        np.clip(np.rint(start[:, 0]).astype(int), 0, data.shape[1] - 1),
    ]
    widths = np.full(n, sigma_px) if fixed_width_px is None else np.asarray(fixed_width_px)
    params = np.stack(
        [start[:, 0], start[:, 1], np.maximum(centre - low, 1e-6), widths, low], axis=1
    )
    free = np.ones(N_PARAMS)
    if fixed_width_px is not None:
        free[3] = 0.0
    s_max = 1.5 * half_px
    others = np.zeros_like(values)
    for pass_ in range(passes):
        if pass_ > 0:
            others = _others(data.shape, params, flat, px, py)
        target = values - others
        lam = np.full(n, 1e-2)
        model, jac = _model(params, px, py)
        if noise is not None:
            floor = max(noise[1], 1e-6 * abs(noise[0]) + 1e-12)
            weight = mask_f / np.maximum(noise[0] * (model + others) + noise[1], floor)
        jac = jac * free
        cost = np.sum(weight * (target - model) ** 2, axis=1)
        for _ in range(iterations):
            resid = weight * (target - model)
            jw = jac * weight[..., None]
            jtj = np.matmul(jw.transpose(0, 2, 1), jac)
            jtr = np.matmul(jw.transpose(0, 2, 1), resid[..., None])[..., 0]
            damp = (
                jtj
                + lam[:, None, None]
                * (np.eye(N_PARAMS)[None] * np.diagonal(jtj, axis1=1, axis2=2)[:, :, None] + 1e-12)
                + np.diag(1.0 - free)[None]
            )
            try:
                step = np.linalg.solve(damp, jtr[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.zeros_like(jtr)
            step[:, :2] = np.clip(step[:, :2], -1.0, 1.0)  # at most a pixel a step
            trial = params + step
            trial[:, 3] = np.clip(trial[:, 3], 0.3, s_max)
            trial_model, trial_jac = _model(trial, px, py)
            trial_jac = trial_jac * free
            trial_cost = np.sum(weight * (target - trial_model) ** 2, axis=1)
            better = np.isfinite(trial_cost) & (trial_cost < cost)
            params = np.where(better[:, None], trial, params)
            model = np.where(better[:, None], trial_model, model)
            jac = np.where(better[:, None, None], trial_jac, jac)
            cost = np.where(better, trial_cost, cost)
            lam = np.where(better, lam / 3, lam * 4)
    n_used = mask_f.sum(axis=1)
    dof = np.maximum(n_used - int(free.sum()), 1)
    variance = cost / dof
    jw = jac * weight[..., None]
    jtj = np.matmul(jw.transpose(0, 2, 1), jac) + np.diag(1.0 - free)[None]
    # heteroscedasticity-consistent (sandwich) covariance: shot noise is brighter where the
    # column is, so the window's mean residual variance would understate the error
    # (HC3: each residual inflated by its leverage, as few pixels carry the position)
    bread = np.linalg.pinv(jtj)
    resid = mask_f * (values - others - model)
    leverage = np.clip(np.sum(np.matmul(jw, bread) * jac, axis=2), 0, 0.95)
    scaled = jac * ((weight * resid / (1 - leverage)) ** 2)[..., None]
    meat = np.matmul(scaled.transpose(0, 2, 1), jac)
    cov = bread @ meat @ bread
    # significance: the signed root of the likelihood ratio of "a column here" against "a
    # flat background" (the other columns subtracted), in units of the residual variance;
    # steadier than amplitude / its standard error when width and background correlate
    target = values - others
    mean_w = np.sum(weight * target, axis=1) / np.maximum(weight.sum(axis=1), 1e-30)
    flat_cost = np.sum(weight * (target - mean_w[:, None]) ** 2, axis=1)
    gain = np.clip(flat_cost - cost, 0, None) / np.maximum(variance, 1e-30)
    root = np.sqrt(gain) * np.sign(params[:, 2])
    sigma = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
    moved = np.hypot(params[:, 0] - start[:, 0], params[:, 1] - start[:, 1])
    converged = (
        (moved <= half_px)
        & (params[:, 3] > 0.3)
        & (params[:, 3] < s_max)
        & np.all(np.isfinite(sigma), axis=1)
        & (n_used > 2 * N_PARAMS)
    )
    return ColumnFits(
        params=params, sigma=sigma, converged=converged, half_px=half_px, significance_=root,
        expected=np.where(mask, model + others, np.nan), residual=np.where(mask, resid, np.nan),
    )  # fmt: skip


def noise_model(fits: ColumnFits, use: np.ndarray) -> tuple[float, float] | None:
    """(alpha, beta) of ``variance = alpha * expected + beta`` from the windows of the
    columns ``use`` (N,) bool: least squares of squared residuals on the fitted expectation
    (shot noise grows with the signal whatever the detector's gain and offset); None when
    there are too few pixels or the fit is not positive."""
    if fits.expected is None or fits.residual is None or int(np.sum(use)) < 8:
        return None
    m = fits.expected[use].ravel()
    r2 = fits.residual[use].ravel() ** 2
    ok = np.isfinite(m) & np.isfinite(r2)
    m, r2 = m[ok], r2[ok]
    if len(m) < 50:
        return None
    design = np.stack([m, np.ones_like(m)], 1)
    (alpha, beta), *_ = np.linalg.lstsq(design, r2, rcond=None)
    floor = 0.05 * float(np.mean(r2))
    if alpha <= 0:
        return None
    return float(alpha), float(max(beta, floor - alpha * float(np.min(m)), floor * 0 + 1e-12))


def cramer_rao_xy(
    expected_e: np.ndarray,
    fits: ColumnFits,
    *,
    read_noise_e: float = 0.0,
    jitter_px: float = 0.0,
    known_width: bool = False,
) -> np.ndarray:
    """(N, 2) Cramér-Rao bound (standard deviations, pixels) on x and y of each fitted column.

    ``expected_e``: the noiseless image in electrons per pixel (Poisson variance), ``fits``:
    the Gaussian model fitted to it (`fit_columns` on the noiseless image), ``read_noise_e``:
    Gaussian read noise (electrons rms) added to each pixel's variance, ``jitter_px``: rms
    probe-position noise per axis, added (linearised) as ``jitter^2 |grad expected|^2``. The
    other columns are known; each column's amplitude, width and background are nuisance
    parameters of its window (the width too unless ``known_width``: the bound for an
    estimator that knows each sublattice's column width, as `analyze_image` estimates it
    from all its columns).
    """
    data = np.asarray(expected_e, dtype=np.float64)
    flat, px, py, mask = _windows(data.shape, fits.xy, fits.half_px)
    _, jac = _model(fits.params, px, py)
    if known_width:
        jac = np.delete(jac, 3, axis=2)
    gy, gx = np.gradient(data)
    slope2 = (gx**2 + gy**2).ravel()[flat]
    variance = np.clip(data.ravel()[flat], 1e-9, None) + read_noise_e**2 + jitter_px**2 * slope2
    w = mask / variance
    info = np.matmul((jac * w[..., None]).transpose(0, 2, 1), jac)
    cov = np.linalg.pinv(info)
    return np.sqrt(np.clip(np.stack([cov[:, 0, 0], cov[:, 1, 1]], axis=1), 0, None))
