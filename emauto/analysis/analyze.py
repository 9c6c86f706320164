"""One call that analyses an acquired image: evidence first, then columns, sublattices,
lattice, resolution and drift, each figure with its uncertainty.

Evidence before answers. Columns are reported only when the image shows resolved atomic
columns, decided in this order (the first test that fails is the reason given):

1. ``lattice``: at least two non-collinear Bragg peaks stand ``min_fft_snr`` above the power
   spectrum's radial median (`find_lattice`).
2. ``plausible``: the primitive cell they index is at least ``min_cell_px`` pixels and at most
   a quarter of the image (four cells across), and, when the pixel size is known, between
   ``min_cell_m`` and ``max_cell_m`` (atomic columns, not scan noise or a particle array).
3. ``motif``: the image folded into that cell (the average unit cell, `crystal.motif`) has a
   site ``min_site_z`` standard errors above its floor.
4. ``columns``: at least ``min_columns`` columns at the predicted sites fit as Gaussians with
   amplitude ``min_column_z`` standard errors above zero, and their rms distance from the
   least-squares lattice is below ``max_lattice_residual`` of the nearest-neighbour distance.

Thresholds (`Thresholds`) were chosen on a development set of synthetic images
(`emauto.analysis.synthetic`, seeds 900000-900199: the four crystal structures at 8-40 pm
pixels and 1e3-2e4 e/Å^2, and the five non-atomic kinds) and never on the images the bench
reports (seeds below 100000) or on the twin's; see `emauto.bench.analysis.DEV_SEEDS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from emauto.analysis.crystal import (
    Cell,
    Motif,
    RefinedLattice,
    describe_basis,
    motif,
    predicted_columns,
    primitive_cell,
    refine_lattice,
)
from emauto.analysis.drift import measure_drift
from emauto.analysis.fitting import ColumnFits, fit_columns, noise_model
from emauto.analysis.image import as_image
from emauto.analysis.lattice import Lattice, find_lattice
from emauto.analysis.overlay import write_overlay
from emauto.analysis.resolution import estimate_resolution
from emauto.errors import AnalysisError, NoLatticeError


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds (see the module doc for how they were chosen).

    `emauto.bench.analysis.dev_set_sweep` on the development set (24 crystal images, 10
    non-atomic), presence decided on the unweighted fixed-width fit as now (2026-12-02):
    ``min_column_z`` 3 / 4 / 5 / 6 gave recall 0.996 / 0.990 / 0.974 / 0.954 and precision
    0.998 / 0.999 / 0.999 / 0.999; 4 was taken. ``min_site_z`` 5, 8 or 12 made no difference
    there (8 was kept); no non-atomic image got a column at any of them. The cell limits are
    physical (columns closer than 1.5 Å or a cell wider than 3 nm are not an atomic lattice);
    ``min_fft_snr`` 20 is where exponential noise power exceeds the threshold in about one
    pixel in 10^6. ``min_extra_z``: on the same 24 crystal images (no extra columns in
    them) the 113 candidate extra columns reached at most 4.6; 8 leaves a margin.
    """

    min_fft_snr: float = 20.0
    min_cell_px: float = 3.0
    min_cell_m: float = 1.5e-10
    max_cell_m: float = 30e-10
    min_site_z: float = 8.0
    min_column_z: float = 4.0
    min_columns: int = 8
    max_lattice_residual: float = 0.2
    min_extra_z: float = 8.0


THRESHOLDS = Thresholds()
SITE_NAMES = "ABCDEFGH"


@dataclass
class AnalysisResult:
    """What `analyze_image` found; `as_dict` is the JSON of ``emauto analyze --json``."""

    shape: tuple[int, int]
    pixel_m: float | None
    resolved: bool
    evidence: dict[str, Any]
    atoms_xy_px: list[list[float]]
    atoms_sigma_px: list[float]
    atoms_sublattice: list[str]
    atoms_intensity: list[float]
    atoms_displacement_px: list[list[float]]
    sublattices: list[dict[str, Any]]
    missing_xy_px: list[list[float]]
    lattice: dict[str, Any] | None
    resolution: dict[str, object]
    drift: dict[str, object] | None = None
    notes: list[str] = field(default_factory=list)
    extra_xy_px: list[list[float]] = field(default_factory=list)
    extra_sigma_px: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "pixel_m": self.pixel_m,
            "resolved": self.resolved,
            "evidence": self.evidence,
            "n_atoms": len(self.atoms_xy_px),
            "atoms_xy_px": self.atoms_xy_px,
            "atoms_sigma_px": self.atoms_sigma_px,
            "atoms_sublattice": self.atoms_sublattice,
            "atoms_intensity": self.atoms_intensity,
            "atoms_displacement_px": self.atoms_displacement_px,
            "sublattices": self.sublattices,
            "n_missing": len(self.missing_xy_px),
            "missing_xy_px": self.missing_xy_px,
            "n_extra": len(self.extra_xy_px),
            "extra_xy_px": self.extra_xy_px,
            "extra_sigma_px": self.extra_sigma_px,
            "lattice": self.lattice,
            "resolution": self.resolution,
            "drift": self.drift,
            "notes": self.notes,
        }

    def banner(self) -> str:
        """One line saying what was decided (the overlay's banner)."""
        if not self.resolved:
            return f"no resolved atomic columns: {self.evidence.get('reason', '')}"
        counts = ", ".join(f"{s['name']} {s['n_columns']}" for s in self.sublattices)
        return f"{len(self.atoms_xy_px)} columns ({counts}); {len(self.missing_xy_px)} missing"


def write_result_overlay(image: np.ndarray, result: AnalysisResult, path: str | Path) -> Path:
    """The overlay PNG of ``result`` on ``image``: columns by sublattice, missing and extra
    columns, the banner, a scale bar from ``result.pixel_m`` (m) and a colour bar."""
    return write_overlay(
        image, np.asarray(result.atoms_xy_px), path, sublattice=result.atoms_sublattice,
        missing_xy_px=np.asarray(result.missing_xy_px),
        extra_xy_px=np.asarray(result.extra_xy_px), banner=result.banner(),
        pixel_m=result.pixel_m,
    )  # fmt: skip


@dataclass
class _Columns:
    fits: ColumnFits
    site: np.ndarray
    ij: np.ndarray
    present: np.ndarray


def _fit_predicted(
    image: np.ndarray, cell: Cell, sites_uv: np.ndarray, sigma_px: float, t: Thresholds
) -> tuple[_Columns, float, int]:
    """Fit a column at every predicted position: widths free first, then each column's width
    fixed at its sublattice's median (fewer free parameters: steadier, closer to the bound)."""
    xy, site, ij = predicted_columns(cell, sites_uv, image.shape)
    nn = _nearest_neighbour(cell, sites_uv)
    half = int(np.clip(round(max(0.4 * nn, 2.0 * sigma_px)), 2, 12))
    fits = fit_columns(image, xy, sigma_px=sigma_px, half_px=half, passes=3)
    if len(xy):
        widths = np.full(len(xy), sigma_px)
        for k in range(len(sites_uv)):
            on = (site == k) & fits.converged
            if on.any():
                widths[site == k] = float(np.median(fits.params[on, 3]))
        half = int(np.clip(round(max(0.4 * nn, 2.0 * float(np.median(widths)))), 2, 12))
        start = np.where(fits.converged[:, None], fits.xy, xy)
        fits = fit_columns(image, start, sigma_px=sigma_px, half_px=half, passes=2,
                           fixed_width_px=widths)  # fmt: skip
        # positions from a fit weighted by the shot noise; presence (significance) from the
        # unweighted one, on which `Thresholds.min_column_z` was chosen
        significance = fits.significance
        noise = noise_model(fits, fits.converged & (significance >= t.min_column_z))
        if noise is not None:
            start = np.where(fits.converged[:, None], fits.xy, start)
            weighted = fit_columns(image, start, sigma_px=sigma_px, half_px=half, passes=2,
                                   fixed_width_px=widths, noise=noise)  # fmt: skip
            fits = replace(weighted, significance_=significance,
                           converged=weighted.converged & fits.converged)  # fmt: skip
    moved = np.hypot(*(fits.xy - xy).T) if len(xy) else np.zeros(0)
    present = fits.converged & (fits.significance >= t.min_column_z) & (moved <= 0.35 * nn)
    return _Columns(fits=fits, site=site, ij=ij, present=present), nn, half


def _nearest_neighbour(cell: Cell, sites_uv: np.ndarray) -> float:
    """Shortest distance (px) between two columns of the predicted structure."""
    best = min(cell.lengths_px)
    shifts = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.float64)
    for a in range(len(sites_uv)):
        for b in range(a + 1, len(sites_uv)):
            d = (shifts + sites_uv[b] - sites_uv[a]) @ cell.a
            best = min(best, float(np.min(np.hypot(d[:, 0], d[:, 1]))))
    return best


def _missing(columns: _Columns, n_sites: int) -> np.ndarray:
    """Predicted positions not found whose four lattice neighbours (same site) mostly are."""
    out = []
    for k in range(n_sites):
        on = columns.site == k
        found = {tuple(v) for v in columns.ij[on & columns.present].astype(int).tolist()}
        for index in np.nonzero(on & ~columns.present)[0]:
            i, j = columns.ij[index].astype(int)
            neighbours = sum(
                (i + di, j + dj) in found for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))
            )
            if neighbours >= 3:
                out.append(index)
    return np.asarray(out, dtype=int)


def _solve(
    image: np.ndarray, cell: Cell, sites_uv: np.ndarray, sigma0: float, t: Thresholds
) -> tuple[_Columns, RefinedLattice | None, np.ndarray, float, Cell]:
    """Fit the predicted columns, refine the lattice on those found, fit once more."""
    columns, nn, _ = _fit_predicted(image, cell, sites_uv, sigma0, t)
    refined: RefinedLattice | None = None
    for _ in range(2):
        if int(columns.present.sum()) < max(t.min_columns, 3 + len(sites_uv)):
            break
        refined = refine_lattice(
            columns.fits.xy[columns.present], columns.site[columns.present],
            columns.ij[columns.present], len(sites_uv), cell,
        )  # fmt: skip
        new_sites = refined.cell.fractional(refined.cell.origin + refined.site_offsets_px)
        if _nearest_neighbour(refined.cell, new_sites) < 0.5 * nn:
            break  # two sites ran together: keep the lattice before this refinement
        cell, sites_uv = refined.cell, new_sites
        sigma = float(np.median(columns.fits.params[columns.present, 3]))
        columns, nn, _ = _fit_predicted(image, cell, sites_uv, sigma, t)
    return columns, refined, sites_uv, nn, cell


def _superstructure(columns: _Columns, refined: RefinedLattice | None, cell: Cell) -> Cell | None:
    """A doubled cell when one site's column intensities split in two groups (4 pooled
    standard deviations apart, each at least a quarter) that follow the parity of i, j or
    i + j in 95 % of columns; else None."""
    if refined is None:
        return None
    volume = columns.fits.params[:, 2] * columns.fits.params[:, 3] ** 2
    for k in np.unique(columns.site):
        on = columns.present & (columns.site == k)
        if on.sum() < 16:
            continue
        v = volume[on]
        split = float(np.median(v))
        for _ in range(20):
            low, high = v[v <= split], v[v > split]
            if len(low) == 0 or len(high) == 0:
                break
            split = 0.5 * (float(low.mean()) + float(high.mean()))
        low, high = v[v <= split], v[v > split]
        if min(len(low), len(high)) < 0.25 * len(v):
            continue
        pooled = math.sqrt(0.5 * (float(low.var()) + float(high.var())))
        if float(high.mean() - low.mean()) < 4 * pooled:
            continue
        label = v > split
        ij = columns.ij[on].astype(int)
        a1, a2 = cell.a
        for parity, new in (
            (ij[:, 0] % 2, (2 * a1, a2)),
            (ij[:, 1] % 2, (a1, 2 * a2)),
            ((ij[:, 0] + ij[:, 1]) % 2, (a1 + a2, a1 - a2)),
        ):
            agree = float(np.mean(parity.astype(bool) == label))
            if max(agree, 1 - agree) >= 0.95:
                return Cell(a=np.stack(new), origin=cell.origin)
    return None


def extra_columns(
    image: np.ndarray, fits: ColumnFits, present: np.ndarray, predicted: np.ndarray, nn: float
) -> ColumnFits:
    """Fits of the image's local maxima that lie more than half a nearest-neighbour distance
    from every site the lattice predicts (``predicted``, found or missing) and every fitted
    column (``fits``); their significance decides
    (`Thresholds.min_extra_z`, stricter than for a predicted site: no lattice vouches for
    them, and a local maximum of noise is a selected one)."""
    from skimage.feature import peak_local_max

    width = float(np.median(fits.params[present, 3])) if present.any() else 1.0
    smooth = ndimage.gaussian_filter(image, max(0.5 * width, 0.5), mode="nearest")
    # half a neighbour distance from the border: a column just outside the image (not
    # predicted there) shows its tail as a maximum on the edge
    edge = max(2, int(np.ceil(0.5 * nn)))
    peaks = peak_local_max(smooth, min_distance=max(1, int(0.5 * nn)), exclude_border=edge)
    xy = peaks[:, ::-1].astype(np.float64)
    taken = np.concatenate([fits.xy, predicted]) if len(fits.xy) else predicted
    if len(xy) and len(taken):
        d = np.hypot(xy[:, None, 0] - taken[None, :, 0], xy[:, None, 1] - taken[None, :, 1])
        xy = xy[d.min(axis=1) > 0.5 * nn]
    half = int(np.clip(round(max(0.4 * nn, 2.0 * width)), 2, 12))
    out = fit_columns(image, xy, sigma_px=width, half_px=half, passes=1,
                      fixed_width_px=np.full(len(xy), width))  # fmt: skip
    if len(xy) and len(taken):
        d = np.hypot(out.xy[:, None, 0] - taken[None, :, 0],
                     out.xy[:, None, 1] - taken[None, :, 1])  # fmt: skip
        out = replace(out, converged=out.converged & (d.min(axis=1) > 0.5 * nn))
    return out


def _sigma_guess(cell: Cell) -> float:
    return float(np.clip(0.12 * min(cell.lengths_px), 0.7, 6.0))


def analyze_image(
    data: np.ndarray,
    *,
    pixel_m: float | None = None,
    previous: np.ndarray | None = None,
    dt_s: float | None = None,
    thresholds: Thresholds = THRESHOLDS,
) -> AnalysisResult:
    """Analyse one ADF image ``[y, x]``; ``pixel_m`` is the pixel size (m) if known.

    Decides first whether atomic columns are resolved (module doc); only then are columns,
    sublattices and the lattice reported, each with standard errors. ``previous`` (same
    shape) adds the drift between the two frames; ``dt_s`` (s) turns it into a velocity.
    """
    image = as_image(data)
    if pixel_m is not None and not (np.isfinite(pixel_m) and pixel_m > 0):
        raise AnalysisError(f"pixel_m: expected a positive pixel size in metres, got {pixel_m}")
    t = thresholds
    evidence: dict[str, Any] = {"thresholds": t.__dict__.copy(), "checks": {}}
    checks: dict[str, Any] = evidence["checks"]
    notes: list[str] = []
    resolution = estimate_resolution(image).as_dict(pixel_m)
    drift: dict[str, object] | None = None
    if previous is not None:
        measured = measure_drift(previous, image, pixel_m=pixel_m, dt_s=dt_s)
        drift = {
            "shift_px": list(measured.shift_px),
            "shift_sigma_px": measured.sigma_px,
            "velocity_m_per_s": measured.velocity_m_per_s,
        }
    result = AnalysisResult(
        shape=(image.shape[0], image.shape[1]), pixel_m=pixel_m, resolved=False,
        evidence=evidence, atoms_xy_px=[], atoms_sigma_px=[], atoms_sublattice=[],
        atoms_intensity=[], atoms_displacement_px=[], sublattices=[], missing_xy_px=[],
        lattice=None,
        resolution=resolution, drift=drift, notes=notes,
    )  # fmt: skip

    def refuse(reason: str) -> AnalysisResult:
        evidence["reason"] = reason
        notes.append(f"no resolved atomic columns: {reason}; no columns reported")
        return result

    # 1. Bragg peaks
    try:
        lattice: Lattice = find_lattice(image, min_snr=t.min_fft_snr)
    except NoLatticeError as exc:
        checks["lattice"] = {"passed": False, "detail": str(exc)}
        return refuse(str(exc))
    checks["lattice"] = {
        "passed": True, "bragg_snr": [round(s, 1) for s in lattice.snr],
        "n_peaks": lattice.n_peaks, "min": t.min_fft_snr,
    }  # fmt: skip
    # 2. a plausible cell
    cell = primitive_cell(lattice, image.shape)
    lengths = cell.lengths_px
    low_px, high_px = t.min_cell_px, min(image.shape) / 4
    plausible = low_px <= min(lengths) and max(lengths) <= high_px
    detail = f"cell {lengths[0]:.2f} x {lengths[1]:.2f} px, expected {low_px:g}-{high_px:g} px"
    if pixel_m is not None:
        metres = [v * pixel_m for v in lengths]
        inside_m = t.min_cell_m <= min(metres) and max(metres) <= t.max_cell_m
        plausible &= inside_m
        detail += (
            f" and {t.min_cell_m * 1e10:g}-{t.max_cell_m * 1e10:g} Å "
            f"(got {metres[0] * 1e10:.2f} x {metres[1] * 1e10:.2f} Å)"
        )
    checks["plausible"] = {"passed": bool(plausible), "detail": detail}
    if not plausible:
        return refuse(f"the periodicity in the FFT is not an atomic lattice: {detail}")
    # 3. the motif
    sigma0 = _sigma_guess(cell)
    found_motif: Motif = motif(image, cell, min_site_z=t.min_site_z, column_sigma_px=sigma0)
    checks["motif"] = {
        "passed": len(found_motif.sites_uv) > 0,
        "sites_z": [round(float(z), 1) for z in found_motif.sites_z], "min": t.min_site_z,
    }  # fmt: skip
    if len(found_motif.sites_uv) == 0:
        return refuse(
            f"the average unit cell has no site {t.min_site_z:g} standard errors above its floor"
        )
    # 4. columns at the predicted sites, then the lattice refined on them and fitted again;
    # a site whose columns alternate in intensity is a superstructure: the cell is doubled
    columns, refined, sites_uv, nn, cell = _solve(image, cell, found_motif.sites_uv, sigma0, t)
    doubled = _superstructure(columns, refined, cell)
    if doubled is not None:
        again = motif(image, doubled, min_site_z=t.min_site_z, column_sigma_px=sigma0)
        if len(again.sites_uv) > len(sites_uv):
            columns, refined, sites_uv, nn, cell = _solve(image, doubled, again.sites_uv, sigma0, t)
            notes.append("one site's columns alternated in intensity: the cell was doubled")
    n_present = int(columns.present.sum())
    residual = (refined.rms_residual_px / nn) if refined is not None and nn > 0 else math.inf
    passed = n_present >= t.min_columns and residual <= t.max_lattice_residual
    checks["columns"] = {
        "passed": bool(passed), "n_columns": n_present, "min": t.min_columns,
        "lattice_residual_over_nn": round(residual, 3) if math.isfinite(residual) else None,
        "max_residual": t.max_lattice_residual,
    }  # fmt: skip
    if not passed or refined is None:
        return refuse(
            f"{n_present} columns stand {t.min_column_z:g} standard errors above the noise at "
            f"the lattice's sites (at least {t.min_columns} needed, on the lattice within "
            f"{t.max_lattice_residual:g} of the nearest-neighbour distance)"
        )
    result.resolved = True
    evidence["reason"] = "atomic columns resolved: every check passed"
    _report_columns(result, columns, refined, sites_uv, nn, pixel_m, lattice)
    predicted = refined.cell.cartesian(columns.ij + sites_uv[columns.site])
    extra = extra_columns(image, columns.fits, columns.present, predicted, nn)
    keep = extra.converged & (extra.significance >= t.min_extra_z)
    result.extra_xy_px = np.round(extra.xy[keep], 3).tolist()
    result.extra_sigma_px = np.round(extra.position_sigma_px[keep], 4).tolist()
    if len(result.extra_xy_px):
        result.notes.append(
            f"{len(result.extra_xy_px)} extra column(s) off the lattice's sites (interstitials, "
            "another grain or contamination): in extra_xy_px, not in atoms_xy_px"
        )
    return result


def _report_columns(
    result: AnalysisResult,
    columns: _Columns,
    refined: RefinedLattice,
    sites_uv: np.ndarray,
    nn: float,
    pixel_m: float | None,
    lattice: Lattice,
) -> None:
    fits, present = columns.fits, columns.present
    volume = 2 * math.pi * fits.params[:, 2] * fits.params[:, 3] ** 2
    order = np.argsort([-float(np.mean(volume[present & (columns.site == k)]))
                        if np.any(present & (columns.site == k)) else 0.0
                        for k in range(len(sites_uv))])  # fmt: skip
    names = {int(k): SITE_NAMES[r] for r, k in enumerate(order)}
    missing = _missing(columns, len(sites_uv))
    brightest = max(
        (float(np.mean(volume[present & (columns.site == k)]))
         for k in range(len(sites_uv)) if np.any(present & (columns.site == k))),
        default=1.0,
    )  # fmt: skip
    unit = pixel_m * 1e12 if pixel_m is not None else None
    sublattices = []
    for k in order:
        on = present & (columns.site == k)
        vols = volume[on]
        uv = refined.cell.fractional(fits.xy[on])
        frac = sites_uv[k] % 1.0
        entry: dict[str, Any] = {
            "name": names[int(k)],
            "site_uv": [round(float(v), 4) for v in frac],
            "n_columns": int(on.sum()),
            "n_missing": int(np.sum(columns.site[missing] == k)) if len(missing) else 0,
            "intensity": round(float(np.mean(vols)), 4) if len(vols) else None,
            "intensity_sem": round(float(np.std(vols) / math.sqrt(max(len(vols), 1))), 4)
            if len(vols) else None,
            "relative_intensity": round(float(np.mean(vols)) / brightest, 3) if len(vols) else None,
            "position_spread_px": round(float(np.sqrt(np.mean(np.sum(
                ((uv - np.rint(uv - frac) - frac) @ refined.cell.a) ** 2, 1)))), 4)
            if len(vols) else None,
            "median_position_sigma_px": round(float(np.median(fits.position_sigma_px[on])), 4)
            if len(vols) else None,
        }  # fmt: skip
        if unit is not None and entry["median_position_sigma_px"] is not None:
            entry["median_position_sigma_pm"] = round(entry["median_position_sigma_px"] * unit, 2)
        sublattices.append(entry)
    result.sublattices = sublattices
    keep = np.nonzero(present)[0]
    result.atoms_xy_px = np.round(fits.xy[keep], 3).tolist()
    result.atoms_sigma_px = np.round(fits.position_sigma_px[keep], 4).tolist()
    result.atoms_sublattice = [names[int(columns.site[i])] for i in keep]
    result.atoms_intensity = np.round(volume[keep], 4).tolist()
    # displacement of each column from its site on the refined (ideal) lattice: the input of
    # a strain or polarisation map
    ideal = refined.cell.cartesian(columns.ij[keep] + sites_uv[columns.site[keep]])
    result.atoms_displacement_px = np.round(fits.xy[keep] - ideal, 4).tolist()
    result.missing_xy_px = np.round(fits.xy[missing] if len(missing) else np.zeros((0, 2)),
                                    3).tolist()  # fmt: skip
    cell = refined.cell
    lengths = cell.lengths_px
    sig = [float(np.hypot(*refined.a_sigma_px[i])) for i in range(2)]
    angles = [float(math.atan2(-v[1], v[0]) % math.pi) for v in cell.a]
    out: dict[str, Any] = {
        "cell_px": [round(v, 4) for v in lengths],
        "cell_sigma_px": [round(v, 5) for v in sig],
        "cell_angle_rad": round(cell.angle_rad, 5),
        "cell_angle_sigma_rad": round(float(max(sig) / min(lengths)), 5),
        "orientation_rad": [round(a, 5) for a in angles],
        "basis": describe_basis(cell, sites_uv % 1.0),
        "n_sites": len(sites_uv),
        "nearest_neighbour_px": round(nn, 4),
        "lattice_residual_px": round(refined.rms_residual_px, 4),
        "spacings_px": [round(s, 4) for s in lattice.spacings_px],
        "bragg_snr": [round(s, 1) for s in lattice.snr],
    }
    if pixel_m is not None:
        out["cell_m"] = [v * pixel_m for v in lengths]
        out["cell_sigma_m"] = [v * pixel_m for v in sig]
        out["spacings_m"] = [s * pixel_m for s in lattice.spacings_px]
    result.lattice = out
    result.notes.append(
        f"{len(keep)} columns on {len(sites_uv)} sublattice(s) ({out['basis']}); "
        f"{len(missing)} missing against the fitted lattice"
    )
