"""`emauto bench analysis`: evidence, sublattices and precision against the bound.

Three parts, each on images never used to choose a threshold (those were chosen on the
synthetic development set, seeds `DEV_SEEDS`; the bench's synthetic seeds are
``seed * 1000 + i``, below 100000, and the twin's specimens are seeds ``seed * 100 + i``):

1. ``doses``: twin ADF images of SrTiO3 [001] (`ImageRequest` over a raster, fast ADF
   engine) at random stage positions and several doses. Ground truth: the projected Sr and
   Ti-O columns the twin placed there (O columns are real columns too: one found on an O
   position is neither a hit nor a false positive; cation recall is what is scored). Per
   dose: detection precision and recall (matched within ``match_radius_pm``), the rms
   position error of matched cation columns, the Cramér-Rao bound for the same columns at
   that dose (Poisson counting plus read noise, Gaussian column model fitted to the twin's
   noiseless image of the same field: `emauto.analysis.fitting.cramer_rao_xy`), the ratio
   error / bound, the rms of error / reported uncertainty (1 when the per-column
   uncertainties are honest) and the recall of each sublattice (Sr, Ti-O) with the label
   the analysis gave most of its columns.
2. ``structures``: synthetic images (`emauto.analysis.synthetic`) of square, perovskite,
   honeycomb (MoS2-like) and dumbbell crystals at two pixel sizes and doses: recall of
   each true sublattice (found and labelled as one sublattice), detection precision, and
   whether the basis was named right.
3. ``non_atomic``: synthetic particles at low magnification, amorphous film, a smooth bright
   region beside vacuum, pure noise and one set of fringes: the fraction of images on
   which any column is reported (goal 0) and the columns reported.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from tqdm import tqdm

from emauto import stats
from emauto.analysis.analyze import analyze_image
from emauto.analysis.fitting import cramer_rao_xy, fit_columns
from emauto.analysis.synthetic import NON_ATOMIC, STRUCTURES, crystal_image, non_atomic_image
from emauto.microscope import ImageRequest, RasterScan

#: Dwell times (s) of the dose series; 2 us is about 2.6e3 e/Å^2 at 20 pA, 31 pm pixels.
DWELLS_S = (0.5e-6, 2e-6, 8e-6, 32e-6)
CATIONS = (38, 22)  # Sr, Ti
OXYGEN = (8,)
MATCH_RADIUS_M = 70e-12
#: The twin's scan jitter (rms per axis, m; `EffectsConfig.scan_jitter_m`).
JITTER_M = 5e-12
#: Seeds of the synthetic development set the analysis thresholds were chosen on.
DEV_SEEDS = range(900_000, 900_200)
#: (pixel m, dose e/Å^2) of the synthetic structure images.
STRUCTURE_CASES = ((15e-12, 2.5e3), (30e-12, 1e4))
NAMED_BASIS = {
    "square": "one column",
    "perovskite": "centred",
    "honeycomb": "honeycomb",
    "dumbbell": "dumbbell",
}


def settle_stage(scope: Any, max_commands: int = 1000) -> None:
    """Wait (one empty command at a time, each costing simulated time) for the stage."""
    for _ in range(max_commands):
        if not scope.read().stage_moving:
            return
        scope.set({})


def cation_columns_px(scope: Any, knobs: dict[str, float], shape: tuple[int, int]) -> np.ndarray:
    """Ground-truth (x, y) pixels of the Sr and Ti-O columns in a raster of ``shape`` taken
    with the knob values ``knobs`` (the frame's state) on the twin ``scope``."""
    return columns_px(scope, knobs, shape, CATIONS)


def columns_px(
    scope: Any, knobs: dict[str, float], shape: tuple[int, int], numbers: Sequence[int]
) -> np.ndarray:
    """Ground-truth (x, y) pixels of the columns holding atoms ``numbers`` (see
    `cation_columns_px`)."""
    specimen = scope.specimen
    fov = knobs["scan_fov"]
    ny, nx = shape
    pixel = fov / nx
    lx, ly = specimen.extent_m
    mask = np.isin(specimen.numbers, list(numbers))
    xy = np.unique(np.round(specimen.positions_m[mask, :2] / 1e-13).astype(np.int64), axis=0)
    columns = xy * 1e-13
    out = []
    for ox in (-lx, 0.0, lx):
        for oy in (-ly, 0.0, ly):
            sx = columns[:, 0] + ox - knobs["stage_x"]
            sy = columns[:, 1] + oy - knobs["stage_y"]
            out.append(np.stack([sx / pixel + (nx - 1) / 2, sy / pixel + (ny - 1) / 2], axis=1))
    pixels = np.concatenate(out)
    inside = (
        (pixels[:, 0] >= 0)
        & (pixels[:, 0] <= nx - 1)
        & (pixels[:, 1] >= 0)
        & (pixels[:, 1] <= ny - 1)
    )
    return pixels[inside]


def match(
    found: np.ndarray, truth: np.ndarray, radius_px: float, border_px: float, shape: tuple[int, int]
) -> tuple[int, int, int, np.ndarray]:
    """(true positives, found, truth) counted away from the border, and matched errors (px)."""
    ny, nx = shape

    def inner(points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return points.reshape(0, 2)
        keep = (
            (points[:, 0] >= border_px) & (points[:, 0] <= nx - 1 - border_px)
            & (points[:, 1] >= border_px) & (points[:, 1] <= ny - 1 - border_px)
        )  # fmt: skip
        return points[keep]

    truth_in = inner(truth)
    if len(found) == 0 or len(truth_in) == 0:
        return 0, len(inner(found)), len(truth_in), np.zeros(0)
    distance = cdist(truth_in, found)
    rows, cols = linear_sum_assignment(np.where(distance <= radius_px, distance, 1e6))
    good = distance[rows, cols] <= radius_px
    matched_found = found[cols[good]]
    found_in = inner(found)
    # a found point outside the inner region matched to an inner truth still counts as found
    n_found = len(found_in) + int(np.sum(~_inside(matched_found, border_px, shape)))
    return int(good.sum()), n_found, len(truth_in), distance[rows[good], cols[good]]


def _inside(points: np.ndarray, border_px: float, shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    return (
        (points[:, 0] >= border_px) & (points[:, 0] <= nx - 1 - border_px)
        & (points[:, 1] >= border_px) & (points[:, 1] <= ny - 1 - border_px)
    )  # fmt: skip


def _wilson(successes: float, trials: float) -> list[float]:
    """Wilson 95 % interval of whole counts, rounded as the figures are."""
    return [round(v, 4) for v in stats.wilson_interval(int(successes), int(trials))]


def drop_found_on(
    found: np.ndarray, others: np.ndarray, truth: np.ndarray, radius_px: float
) -> np.ndarray:
    """Mask (N,) of found columns to score: False for those on a column of ``others`` (e.g.
    O, real but not scored) and on no column of ``truth``."""
    keep = np.ones(len(found), dtype=bool)
    if len(found) and len(others):
        on_other = cdist(found, others).min(axis=1) <= radius_px
        on_truth = (
            cdist(found, truth).min(axis=1) <= radius_px
            if len(truth)
            else np.zeros(len(found), bool)
        )
        keep = ~(on_other & ~on_truth)
    return keep


def _sublattice_recall(images: list[tuple[list[str], int]]) -> dict[str, Any]:
    """Recall of one true sublattice over images, each given as (the labels the analysis
    gave its matched columns, its true column count): a column counts when it was found
    with the label most of that sublattice's columns got in the same image (names are per
    image: A is the brightest there). ``label``: the most common such label."""
    hits = total = 0
    tops: list[str] = []
    for labels, n_true in images:
        total += n_true
        if labels:
            top = max(set(labels), key=labels.count)
            tops.append(top)
            hits += labels.count(top)
    label = max(set(tops), key=tops.count) if tops else None
    return {"label": label, "recall": round(hits / max(total, 1), 4), "columns": total}


def _inner(points: np.ndarray, border_px: float, shape: tuple[int, int]) -> np.ndarray:
    return points[_inside(points, border_px, shape)] if len(points) else points.reshape(0, 2)


def _twin_image(
    dwell: float,
    index: int,
    seed: int,
    rng: np.random.Generator,
    shape: tuple[int, int],
    fov_m: float,
    effects: str,
    scopes: dict[tuple[int, str], Any],
) -> dict[str, Any]:
    """One noisy twin frame, the noiseless frame of the same field and the truth."""
    from emauto.drivers import connect

    specimen_seed = seed * 100 + index + 1
    stage = rng.uniform(-2e-9, 2e-9, size=2)
    frames = {}
    for which in (effects, "none"):
        key = (specimen_seed, which)
        if key not in scopes:
            scopes[key] = connect(f"sim://?specimen=srtio3&seed={specimen_seed}&effects={which}")
        scope = scopes[key]
        scope.set({"scan_fov": fov_m, "stage_x": float(stage[0]), "stage_y": float(stage[1])})
        settle_stage(scope)
        frames[which] = scope.acquire(ImageRequest(scan=RasterScan(shape=shape), dwell_s=dwell))
    frame = frames[effects]
    knobs = frame.state.knobs
    scope = scopes[(specimen_seed, effects)]
    return {
        "frame": frame,
        "expected_e": np.asarray(frames["none"].data, dtype=np.float64),
        "sr": columns_px(scope, knobs, shape, (38,)),
        "ti": columns_px(scope, knobs, shape, (22,)),
        "o": columns_px(scope, knobs, shape, OXYGEN),
    }


def _twin_doses(
    seed: int,
    images_per_dose: int,
    shape: tuple[int, int],
    fov_m: float,
    dwells_s: Sequence[float],
    effects: str,
    progress: bool,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pixel = fov_m / shape[1]
    radius_px = MATCH_RADIUS_M / pixel
    scopes: dict[tuple[int, str], Any] = {}
    results: dict[str, Any] = {}
    jobs = [(d, i) for d in dwells_s for i in range(images_per_dose)]
    per: dict[float, dict[str, list[Any]]] = {
        d: {
            k: []
            for k in ("tp", "found", "truth", "err", "crb", "crb_all", "z", "t", "dose", "sub")
        }
        for d in dwells_s
    }
    for dwell, index in tqdm(jobs, desc="analysis bench: twin", disable=not progress):
        shot = _twin_image(dwell, index, seed, rng, shape, fov_m, effects, scopes)
        frame = shot["frame"]
        start = time.perf_counter()
        result = analyze_image(frame.data, pixel_m=pixel)
        elapsed = time.perf_counter() - start
        found = np.asarray(result.atoms_xy_px, dtype=np.float64).reshape(-1, 2)
        sigma = np.asarray(result.atoms_sigma_px, dtype=np.float64)
        labels = np.asarray(result.atoms_sublattice)
        truth = np.concatenate([shot["sr"], shot["ti"]])
        species = np.array(["Sr"] * len(shot["sr"]) + ["Ti-O"] * len(shot["ti"]))
        # found columns on O positions are real columns: neither hits nor false positives
        keep = drop_found_on(found, shot["o"], truth, radius_px)
        found, sigma, labels = found[keep], sigma[keep], labels[keep]
        bucket = per[dwell]
        keep_truth = _inside(truth, 3.0, shape)
        truth, species = truth[keep_truth], species[keep_truth]
        tp, n_found, n_truth, errors = match(found, truth, radius_px, 3.0, shape)
        bucket["tp"].append(tp)
        bucket["found"].append(n_found)
        bucket["truth"].append(n_truth)
        bucket["t"].append(elapsed)
        bucket["dose"].append(frame.dose_e_per_m2 * 1e-20)
        if len(found) and len(truth):
            distance = cdist(truth, found)
            rows, cols = linear_sum_assignment(np.where(distance <= radius_px, distance, 1e6))
            good = distance[rows, cols] <= radius_px
            rows, cols = rows[good], cols[good]
            bucket["err"].extend((distance[rows, cols] * pixel * 1e12).tolist())
            bucket["z"].extend((distance[rows, cols] / np.maximum(sigma[cols], 1e-9)).tolist())
            for name in ("Sr", "Ti-O"):
                mine = species[rows] == name
                bucket["sub"].append(
                    (name, labels[cols][mine].tolist(), int(np.sum(species == name)))
                )
            # the bound at this dose, for the same columns: the Gaussian model fitted to the
            # noiseless image of the same field, Poisson + read noise (0.2 e)
            nn = 3.905e-10 / math.sqrt(2) / pixel
            model = fit_columns(shot["expected_e"], truth[rows], sigma_px=0.35e-10 / pixel,
                                half_px=round(0.4 * nn), passes=3)  # fmt: skip
            bound = cramer_rao_xy(shot["expected_e"], model, read_noise_e=0.2, known_width=True)
            bucket["crb"].extend((np.hypot(bound[:, 0], bound[:, 1]) * pixel * 1e12).tolist())
            jitter = JITTER_M / pixel if "scan_jitter" in effects else 0.0
            full = cramer_rao_xy(shot["expected_e"], model, read_noise_e=0.2, jitter_px=jitter,
                                 known_width=True)  # fmt: skip
            bucket["crb_all"].extend((np.hypot(full[:, 0], full[:, 1]) * pixel * 1e12).tolist())
    for dwell, bucket in per.items():
        errors = np.asarray(bucket["err"])
        bound = np.asarray(bucket["crb"])
        rms = float(math.sqrt(np.mean(errors**2))) if len(errors) else math.nan
        crb = float(math.sqrt(np.mean(bound**2))) if len(bound) else math.nan
        crb_all = (
            float(math.sqrt(np.mean(np.asarray(bucket["crb_all"]) ** 2)))
            if len(bound)
            else math.nan
        )
        sub: dict[str, Any] = {}
        for name in ("Sr", "Ti-O"):
            sub[name] = _sublattice_recall([(labs, t) for n, labs, t in bucket["sub"] if n == name])
        results[f"dwell_{dwell * 1e6:g}us"] = {
            "dose_e_per_A2": round(statistics.fmean(bucket["dose"]), 1),
            "precision": round(sum(bucket["tp"]) / max(sum(bucket["found"]), 1), 4),
            "recall": round(sum(bucket["tp"]) / max(sum(bucket["truth"]), 1), 4),
            "precision_ci95": _wilson(sum(bucket["tp"]), sum(bucket["found"])),
            "recall_ci95": _wilson(sum(bucket["tp"]), sum(bucket["truth"])),
            "rms_error_pm": round(rms, 2) if len(errors) else None,
            "median_error_pm": round(float(np.median(errors)), 2) if len(errors) else None,
            "crb_rms_pm": round(crb, 2) if len(bound) else None,
            "error_over_bound": round(rms / crb, 2) if len(bound) and crb > 0 else None,
            "crb_with_jitter_rms_pm": round(crb_all, 2) if len(bound) else None,
            "error_over_bound_with_jitter": round(rms / crb_all, 2)
            if len(bound) and crb_all > 0 else None,
            "error_over_reported_sigma_rms": round(
                float(math.sqrt(np.mean(np.asarray(bucket["z"]) ** 2))), 2
            ) if bucket["z"] else None,
            "sublattices": sub,
            "columns_truth": int(sum(bucket["truth"])),
            "analysis_s_per_image": round(statistics.median(bucket["t"]), 4),
        }  # fmt: skip
    for scope in scopes.values():
        scope.close()
    return results


def _structures(seed: int, progress: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    jobs = [(s, c) for s in STRUCTURES for c in range(len(STRUCTURE_CASES))]
    per: dict[str, dict[str, Any]] = {
        s: {"sub": {}, "tp": 0, "found": 0, "named": 0, "images": 0, "t": []} for s in STRUCTURES
    }
    for index, (structure, case) in enumerate(
        tqdm(jobs, desc="analysis bench: structures", disable=not progress)
    ):
        pixel, dose = STRUCTURE_CASES[case]
        image_seed = seed * 1000 + index
        assert image_seed not in DEV_SEEDS
        synthetic = crystal_image(structure, seed=image_seed, pixel_m=pixel, dose_e_per_A2=dose)
        start = time.perf_counter()
        result = analyze_image(synthetic.image, pixel_m=pixel)
        bucket = per[structure]
        bucket["t"].append(time.perf_counter() - start)
        bucket["images"] += 1
        basis = result.lattice["basis"] if result.lattice else ""
        bucket["named"] += int(NAMED_BASIS[structure] in basis)
        found = np.asarray(result.atoms_xy_px, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(result.atoms_sublattice)
        truth = synthetic.columns_xy_px
        species = np.asarray(synthetic.labels)
        keep = _inside(truth, 3.0, synthetic.image.shape)
        truth, species = truth[keep], species[keep]
        radius = 0.3 * 1.36e-10 / pixel if structure == "dumbbell" else 0.5e-10 / pixel
        tp, n_found, _, _ = match(found, truth, radius, 3.0, synthetic.image.shape)
        bucket["tp"] += tp
        bucket["found"] += n_found
        rows = cols = np.zeros(0, int)
        if len(found) and len(truth):
            distance = cdist(truth, found)
            rows, cols = linear_sum_assignment(np.where(distance <= radius, distance, 1e6))
            good = distance[rows, cols] <= radius
            rows, cols = rows[good], cols[good]
        for name in sorted(set(species)):
            mine = species[rows] == name
            entry = bucket["sub"].setdefault(name, [])
            entry.append((labels[cols][mine].tolist(), int(np.sum(species == name))))
    for structure, bucket in per.items():
        sub = {}
        for name, entry in bucket["sub"].items():
            sub[name] = _sublattice_recall(entry)
        out[structure] = {
            "sublattices": sub,
            "precision": round(bucket["tp"] / max(bucket["found"], 1), 4),
            "basis_named_right": f"{bucket['named']}/{bucket['images']}",
            "analysis_s_per_image": round(statistics.median(bucket["t"]), 3),
        }
    return out


def _non_atomic(seed: int, per_kind: int, progress: bool) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    images = with_columns = columns = 0
    jobs = [(k, i) for k in NON_ATOMIC for i in range(per_kind)]
    for index, (kind, _) in enumerate(
        tqdm(jobs, desc="analysis bench: non-atomic", disable=not progress)
    ):
        image_seed = seed * 1000 + 500 + index
        assert image_seed not in DEV_SEEDS
        synthetic = non_atomic_image(kind, seed=image_seed)
        for pixel in (synthetic.pixel_m, None):  # with and without the pixel size
            result = analyze_image(synthetic.image, pixel_m=pixel)
            n = len(result.atoms_xy_px)
            entry = kinds.setdefault(kind, {"images": 0, "with_columns": 0, "columns": 0})
            entry["images"] += 1
            entry["with_columns"] += int(n > 0)
            entry["columns"] += n
            images += 1
            with_columns += int(n > 0)
            columns += n
    return {
        "images": images,
        "false_column_image_rate": round(with_columns / max(images, 1), 4),
        "false_column_image_rate_ci95": _wilson(with_columns, images),
        "columns_reported": columns,
        "by_kind": kinds,
        "note": "each image analysed with and without its pixel size",
    }


def run_analysis_benchmark(
    *,
    seed: int = 1,
    images_per_dose: int = 3,
    shape: tuple[int, int] = (128, 128),
    fov_m: float = 4e-9,
    dwells_s: Sequence[float] = DWELLS_S,
    effects: str = "poisson,detector_noise,scan_jitter",
    non_atomic_per_kind: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Precision against the bound, sublattice recall, false columns (see module doc)."""
    if not 0 <= seed < 100:
        raise ValueError(
            f"seed: expected 0-99 (larger seeds reach the development set), got {seed}"
        )
    pixel = fov_m / shape[1]
    return {
        "benchmark": "analysis",
        "specimen": "srtio3 [001], twin fast ADF; synthetic structures and non-atomic images",
        "image_shape": list(shape),
        "pixel_pm": round(pixel * 1e12, 3),
        "effects": effects,
        "images_per_dose": images_per_dose,
        "match_radius_pm": MATCH_RADIUS_M * 1e12,
        "seed": seed,
        "doses": _twin_doses(seed, images_per_dose, shape, fov_m, dwells_s, effects, progress),
        "structures": _structures(seed, progress),
        "non_atomic": _non_atomic(seed, non_atomic_per_kind, progress),
        "goal": (
            "rms error <= 3 pm at 2.5e3 e/A^2 and within 1.5x of the Cramer-Rao bound; "
            "every sublattice recalled; 0 columns on images without resolved columns"
        ),
    }


def dev_set_sweep(
    min_column_z: Sequence[float] = (3.0, 4.0, 5.0, 6.0),
    min_site_z: Sequence[float] = (8.0,),
    crystals: int = 24,
    non_atomic: int = 10,
) -> list[dict[str, Any]]:
    """Recall, precision and false-column images on the development set (`DEV_SEEDS`: the
    four structures at 8-40 pm pixels and 1e3-2e4 e/Å^2, log-uniform, random column widths;
    the five non-atomic kinds) for each pair of thresholds: how `Thresholds` was chosen."""
    from emauto.analysis.analyze import Thresholds

    rng = np.random.default_rng(DEV_SEEDS[0])
    cases = []
    for i in range(crystals):
        structure = list(STRUCTURES)[i % len(STRUCTURES)]
        pixel = float(rng.uniform(8e-12, 40e-12))
        dose = float(10 ** rng.uniform(3, math.log10(2e4)))
        cases.append(crystal_image(structure, seed=DEV_SEEDS[i], pixel_m=pixel, dose_e_per_A2=dose))
    for i in range(non_atomic):
        kind = NON_ATOMIC[i % len(NON_ATOMIC)]
        cases.append(non_atomic_image(kind, seed=DEV_SEEDS[100 + i]))
    rows = []
    for z_col in min_column_z:
        for z_site in min_site_z:
            t = Thresholds(min_column_z=z_col, min_site_z=z_site)
            tp = found = truth = false_images = 0
            for case in cases:
                result = analyze_image(case.image, pixel_m=case.pixel_m, thresholds=t)
                xy = np.asarray(result.atoms_xy_px, dtype=np.float64).reshape(-1, 2)
                if case.kind in NON_ATOMIC:
                    false_images += int(len(xy) > 0)
                    continue
                radius = 0.3 * 1.36e-10 / case.pixel_m
                hit, n_found, n_truth, _ = match(
                    xy, case.columns_xy_px, radius, 3.0, case.image.shape
                )
                tp, found, truth = tp + hit, found + n_found, truth + n_truth
            rows.append({
                "min_column_z": z_col, "min_site_z": z_site,
                "recall": round(tp / max(truth, 1), 4), "precision": round(tp / max(found, 1), 4),
                "false_column_images": f"{false_images}/{non_atomic}",
            })  # fmt: skip
    return rows
