"""The crystal behind the columns: a primitive cell from the FFT, the basis sites from the
unit-cell average (the motif), every column the lattice predicts, and the sublattices.

1. `primitive_cell`: among the Bragg peaks `find_lattice` saw, the pair of reciprocal
   vectors that indexes every strong peak with integers and spans the smallest reciprocal
   cell (so the largest real cell those reflections allow), reduced to the shortest real
   basis ``a1, a2`` (pixels, (x, y)).
2. `motif`: every pixel folded into the cell by its fractional coordinates (u, v); the mean
   of each (u, v) bin over all cells is the motif, with its standard error. Averaging over
   hundreds of cells shows a sublattice that no single column shows above the noise (the S2
   columns of MoS2 at low dose). Basis sites are the motif's maxima that stand
   ``min_site_z`` standard errors above the motif's 20th percentile.
3. `predicted_columns`: origin + site + i a1 + j a2 for every translation inside the image.
4. `refine_lattice`: the origin, a1, a2 and the site offsets by linear least squares on the
   fitted columns, with standard errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from emauto.analysis.lattice import Lattice


@dataclass(frozen=True)
class Cell:
    """A real-space basis ``a`` (2, 2: rows a1, a2 as (x, y) pixels) and an origin (x, y)."""

    a: np.ndarray
    origin: np.ndarray

    def fractional(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) fractional coordinates (u, v) of points ``xy`` (N, 2 pixels)."""
        return np.asarray((np.asarray(xy, dtype=np.float64) - self.origin) @ np.linalg.inv(self.a))

    def cartesian(self, uv: np.ndarray) -> np.ndarray:
        return np.asarray(self.origin + np.asarray(uv, dtype=np.float64) @ self.a)

    @property
    def lengths_px(self) -> tuple[float, float]:
        return float(np.hypot(*self.a[0])), float(np.hypot(*self.a[1]))

    @property
    def angle_rad(self) -> float:
        """Angle between a1 and a2 (rad)."""
        a1, a2 = self.a
        cos = float(a1 @ a2 / (np.hypot(*a1) * np.hypot(*a2)))
        return math.acos(max(-1.0, min(1.0, cos)))


def _reduce(a: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction of a 2-D basis (rows) to its two shortest vectors."""
    b1, b2 = a[0].copy(), a[1].copy()
    for _ in range(50):
        if b1 @ b1 > b2 @ b2:
            b1, b2 = b2, b1
        mu = round(float(b1 @ b2 / (b1 @ b1)))
        if mu == 0:
            break
        b2 = b2 - mu * b1
    return np.stack([b1, b2])


def primitive_cell(
    lattice: Lattice, shape: tuple[int, int], tol: float = 0.12, min_indexed: float = 0.9
) -> Cell:
    """The largest cell whose reciprocal lattice indexes (integers within ``tol``) at least
    ``min_indexed`` of the strong Bragg peaks; the pair is taken from the 12 strongest
    (see module doc). Origin at the image centre."""
    peaks = lattice.peaks_g_per_px if lattice.peaks_g_per_px is not None else lattice.g_per_px
    g_all = np.asarray(peaks, dtype=np.float64)
    best: np.ndarray | None = None
    best_area = math.inf
    candidates = g_all[:12]
    for i in range(len(candidates)):
        for j in range(i + 1, len(candidates)):
            pair = candidates[[i, j]]
            area = abs(float(np.linalg.det(pair)))
            norm = float(np.hypot(*pair[0]) * np.hypot(*pair[1]))
            if area < math.sin(math.radians(15)) * norm or area >= best_area:
                continue
            index = g_all @ np.linalg.inv(pair)
            indexed = np.all(np.abs(index - np.rint(index)) < tol, axis=1)
            if float(np.mean(indexed)) >= min_indexed and np.all(indexed[:2]):
                best, best_area = pair, area
    g = best if best is not None else np.asarray(lattice.g_per_px, dtype=np.float64)
    a = _reduce(np.linalg.inv(g).T)
    ny, nx = shape
    return Cell(a=a, origin=np.array([(nx - 1) / 2, (ny - 1) / 2]))


@dataclass(frozen=True)
class Motif:
    """The unit-cell average ``mean[v_bin, u_bin]``, its standard error, and the sites."""

    mean: np.ndarray
    sem: np.ndarray
    sites_uv: np.ndarray  # (K, 2) fractional, brightest first
    sites_z: np.ndarray  # (K,) site height over the motif floor in standard errors


def motif(image: np.ndarray, cell: Cell, *, min_site_z: float, column_sigma_px: float) -> Motif:
    """Fold ``image`` into ``cell`` and find the basis sites (see module doc)."""
    ny, nx = image.shape
    la, lb = cell.lengths_px
    mu, mv = (int(np.clip(round(2 * length), 8, 48)) for length in (la, lb))
    yy, xx = np.mgrid[0:ny, 0:nx]
    uv = cell.fractional(np.stack([xx.ravel(), yy.ravel()], 1)) % 1.0
    bu = np.minimum((uv[:, 0] * mu).astype(int), mu - 1)
    bv = np.minimum((uv[:, 1] * mv).astype(int), mv - 1)
    index = bv * mu + bu
    values = image.ravel()
    count = np.bincount(index, minlength=mu * mv).astype(np.float64)
    total = np.bincount(index, values, minlength=mu * mv)
    square = np.bincount(index, values * values, minlength=mu * mv)
    mean = total / np.maximum(count, 1)
    var = np.maximum(square / np.maximum(count, 1) - mean**2, 0) / np.maximum(count - 1, 1)
    mean, sem = mean.reshape(mv, mu), np.sqrt(var).reshape(mv, mu)
    sigma_bins = (0.5 * column_sigma_px * mu / la, 0.5 * column_sigma_px * mv / lb)
    smooth = ndimage.gaussian_filter(mean, sigma_bins[::-1], mode="wrap")
    floor = float(np.percentile(smooth, 20))
    noise = float(np.median(sem)) / math.sqrt(max(1.0, 2 * math.pi * sigma_bins[0] * sigma_bins[1]))
    z = (smooth - floor) / max(noise, 1e-12)
    maxima = (ndimage.maximum_filter(smooth, size=3, mode="wrap") == smooth) & (z >= min_site_z)
    vb, ub = np.nonzero(maxima)
    order = np.argsort(-smooth[vb, ub])
    vb, ub = vb[order], ub[order]
    sites = np.stack([(ub + 0.5) / mu, (vb + 0.5) / mv], 1) if len(ub) else np.zeros((0, 2))
    # merge maxima closer than a column width (a flat-topped site can have two)
    keep: list[int] = []
    for k in range(len(sites)):
        near = False
        for j in keep:
            d = (sites[k] - sites[j] + 0.5) % 1.0 - 0.5
            if float(np.hypot(*(d @ cell.a))) < 1.5 * column_sigma_px:
                near = True
                break
        if not near:
            keep.append(k)
    return Motif(mean=mean, sem=sem, sites_uv=sites[keep], sites_z=z[vb, ub][keep])


def predicted_columns(
    cell: Cell, sites_uv: np.ndarray, shape: tuple[int, int], margin_px: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every column the lattice predicts inside the image: (x, y) (N, 2), site index (N,),
    cell indices (i, j) (N, 2)."""
    ny, nx = shape
    corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], dtype=np.float64)
    uv = cell.fractional(corners)
    lo = np.floor(uv.min(0)) - 1
    hi = np.ceil(uv.max(0)) + 1
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
    ij = np.stack([ii.ravel(), jj.ravel()], 1)
    xy_all, site_all, ij_all = [], [], []
    for k, site in enumerate(sites_uv):
        xy = cell.cartesian(ij + site)
        inside = (xy[:, 0] >= -margin_px) & (xy[:, 0] <= nx - 1 + margin_px)
        inside &= (xy[:, 1] >= -margin_px) & (xy[:, 1] <= ny - 1 + margin_px)
        xy_all.append(xy[inside])
        site_all.append(np.full(int(inside.sum()), k))
        ij_all.append(ij[inside])
    if not xy_all:
        return np.zeros((0, 2)), np.zeros(0, int), np.zeros((0, 2))
    return np.concatenate(xy_all), np.concatenate(site_all), np.concatenate(ij_all)


@dataclass(frozen=True)
class RefinedLattice:
    """Least-squares lattice: ``cell``, site offsets (K, 2 px, site 0 at the origin),
    standard errors of a1 and a2 (2, 2 px), and the rms residual of the columns (px)."""

    cell: Cell
    site_offsets_px: np.ndarray
    a_sigma_px: np.ndarray
    rms_residual_px: float


def refine_lattice(
    xy: np.ndarray, site: np.ndarray, ij: np.ndarray, n_sites: int, cell: Cell
) -> RefinedLattice:
    """Fit ``xy = origin + offset[site] + i a1 + j a2`` (offset of site 0 fixed at 0)."""
    n = len(xy)
    # unknowns: origin (2), a1 (2), a2 (2), offsets of sites 1.. (2 each); x and y separate
    cols = 3 + (n_sites - 1)
    design = np.zeros((n, cols))
    design[:, 0] = 1.0
    design[:, 1] = ij[:, 0]
    design[:, 2] = ij[:, 1]
    for k in range(1, n_sites):
        design[site == k, 2 + k] = 1.0
    solution, *_ = np.linalg.lstsq(design, xy, rcond=None)
    resid = xy - design @ solution
    dof = max(n - cols, 1)
    var = float(np.sum(resid**2) / (2 * dof))
    cov = np.linalg.pinv(design.T @ design) * var
    a = np.stack([solution[1], solution[2]])
    offsets = np.zeros((n_sites, 2))
    offsets[1:] = solution[3:]
    a_sigma = np.sqrt(np.clip(np.array([[cov[1, 1]] * 2, [cov[2, 2]] * 2]), 0, None))
    return RefinedLattice(
        cell=Cell(a=a, origin=solution[0]),
        site_offsets_px=offsets,
        a_sigma_px=a_sigma,
        rms_residual_px=float(math.sqrt(np.mean(np.sum(resid**2, 1)))) if n else math.nan,
    )


def describe_basis(cell: Cell, sites_uv: np.ndarray) -> str:
    """A name for the basis: one column a cell, honeycomb, centred (A/B), dumbbell, or
    an n-site basis."""
    k = len(sites_uv)
    if k == 1:
        return "one column per cell"
    la, lb = cell.lengths_px
    if k == 2:
        d_uv = (sites_uv[1] - sites_uv[0] + 0.5) % 1.0 - 0.5
        d = float(np.hypot(*(d_uv @ cell.a)))
        hexagonal = abs(la - lb) < 0.05 * la and abs(math.degrees(cell.angle_rad) - 60) % 60 < 4
        if hexagonal and np.allclose(np.abs(d_uv), [1 / 3, 1 / 3], atol=0.06):
            return "honeycomb (two sites at 1/3, 2/3)"
        if np.allclose(np.abs(d_uv), [0.5, 0.5], atol=0.06):
            return "centred: A/B (perovskite-like)"
        if d < 0.45 * min(la, lb):
            return "dumbbell (two sites a short distance apart)"
        return "two-site basis"
    return f"{k}-site basis"
