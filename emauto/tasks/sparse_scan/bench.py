"""`emauto bench sparse-scan`: every scan strategy on the same image(s), the same budget.

For each image (a user's file, or one noise-free twin image per built-in specimen) the image
is min-max normalised to [0, 1]: that is the truth. Each strategy visits
``round(coverage x pixels)`` positions, measured with Poisson noise at ``dose_e`` electrons
at full intensity (None: noise-free), and the samples are reconstructed. Figures per
strategy (means over the images; ``per_image`` holds each image's):

- ``rms_error_pct``: 100 x RMS(reconstruction - truth) with the headline reconstruction
  (``reconstruction``, the same for every strategy; default ``validated``: per image, the
  method that best predicts 10 % of the samples held out, refitted on all of them; what a
  user without ground truth gets, `validation`).
- ``psnr_db``, ``ssim``: the same reconstruction (data range 1).
- ``rms_error_pct_by_reconstruction``: the RMS error of every reconstruction method tried.
- ``picked`` (``validated`` only): the method chosen for each image; each image's
  ``validation`` holds its validation error (% RMS on the held-out samples, noise
  included), every candidate's, and the chosen reconstruction's true error beside them.
- ``reconstruction_s``: seconds per reconstruction from the samples (median over the
  images; each image's is the median of ``timing_repeats`` runs); methods that start from
  ``linear`` include its time; ``validated`` includes its hold-out fits and the final
  reconstruction. ``wall_s``: the strategy's time over all images (scan, every
  reconstruction, validation, metrics); each image's ``scan_s`` is the strategy's own.
- ``dose_fraction``, ``time_fraction``: electrons and wall time relative to a full raster of
  the same image at the same dwell. The wall time is the scan system's (`strategies.scan_cost`:
  dwell, settling after jumps, flyback after line returns; the twin's scan system) plus,
  for an adaptive strategy, its computing between batches, measured: the wall-clock time
  from the end of one batch's measurement to the start of the next (``compute_s`` per image,
  with ``batches`` and ``decision_s``, the median of those gaps; ``scan_time_fraction`` is
  the scan system's share alone). The reconstruction after the last batch is not charged
  to any strategy (every one needs it).
- ``margin`` (adaptive strategies, when static ones ran too): the adaptive strategy against
  the best static pattern, ``100 x (1 - adaptive / best static)`` RMS error (positive:
  adaptive better), at equal dose (the static patterns as run, the same positions count)
  and at equal time: each static pattern re-run per image at the coverage whose scan takes
  the adaptive strategy's whole time on that image (scan and compute; at most coverage 1:
  a full raster, taken as it is: ``samples``), reconstructed the same way
  (`equal_time_static`, with each pattern's coverage, time and dose fractions). At equal
  time a static pattern may spend more dose. ``per_image_margin_pct`` compares each image
  with its own best static pattern. A margin is None where that static error is 0
  (noise-free samples of every pixel).

Adaptive strategies: ``uncertainty`` (ensemble spread, `adaptive`) and ``rl``
(the shipped PPO policy on `emauto/SparseScan-v0`; skipped with a note if none is shipped).
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emauto.errors import ConfigError
from emauto.microscope import ScanLimits
from emauto.tasks.sparse_scan.adaptive import Measure, image_measure
from emauto.tasks.sparse_scan.reconstruct import linear, reconstruct, starts_from_linear
from emauto.tasks.sparse_scan.registry import (
    ADAPTIVE_STRATEGIES,
    CHOOSING_RECONSTRUCTIONS,
    DEFAULT_RECONSTRUCTION,
    FAST_RECONSTRUCTIONS,
    RECONSTRUCTIONS,
    STATIC_STRATEGIES,
)
from emauto.tasks.sparse_scan.registry import STRATEGIES as _STRATEGIES
from emauto.tasks.sparse_scan.sampling import check_dose, normalise
from emauto.tasks.sparse_scan.strategies import (
    ScanCost,
    ScanPlan,
    check_coverage,
    make_plan,
    scan_cost,
)
from emauto.tasks.sparse_scan.validation import validate

STRATEGIES = _STRATEGIES.names()
#: The twin's scan system (`SimulatedMicroscope.describe().scan`) and beam.
TWIN_SCAN = ScanLimits(
    max_fov_m=2e-6,
    max_offset_m=2e-6,
    min_dwell_s=1e-7,
    max_dwell_s=1e-3,
    max_positions=4096 * 4096,
    min_exposure_s=1e-4,
    max_exposure_s=10.0,
    settle_s=2e-6,
    flyback_s=20e-6,
)
TWIN_DWELL_S = 2e-6
TWIN_CURRENT_A = 20e-12
#: Every reconstruction but the slow (`registry.SLOW_RECONSTRUCTIONS`) and choosing ones.
DEFAULT_RECONSTRUCTIONS = FAST_RECONSTRUCTIONS


def image_metrics(reconstruction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """RMS error (% of the [0, 1] range), PSNR (dB) and SSIM of a reconstruction."""
    from skimage.metrics import structural_similarity

    error = float(np.sqrt(np.mean((reconstruction - truth) ** 2)))
    return {
        "rms_error_pct": 100 * error,
        "psnr_db": float(20 * np.log10(1.0 / max(error, 1e-12))),
        "ssim": float(structural_similarity(truth, reconstruction, data_range=1.0)),
    }


@dataclass(frozen=True)
class StrategyRun:
    """One scan of an image: the plan, the values (0 unsampled) and the computing between
    batches (s, wall clock: from the end of one measurement to the start of the next)."""

    plan: ScanPlan
    values: np.ndarray
    gaps_s: tuple[float, ...]

    @property
    def compute_s(self) -> float:
        """Seconds of computing between batches (0 for a static plan: one batch)."""
        return float(sum(self.gaps_s))


class _Clocked:
    """A `Measure` that records when each call starts and ends (perf_counter, s)."""

    def __init__(self, measure: Measure) -> None:
        self.measure = measure
        self.stamps: list[tuple[float, float]] = []

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        values = self.measure(pixels)
        self.stamps.append((start, time.perf_counter()))
        return values

    def gaps(self) -> tuple[float, ...]:
        return tuple(b[0] - a[1] for a, b in itertools.pairwise(self.stamps))


def scan_image(
    strategy: str,
    truth: np.ndarray,
    coverage: float,
    dose_e: float | None,
    seed: int = 0,
) -> StrategyRun:
    """Scan the normalised ``truth`` with ``strategy``, timing the computing between
    batches."""
    shape = (int(truth.shape[0]), int(truth.shape[1]))
    measure = _Clocked(image_measure(truth, dose_e, seed))
    if strategy in ADAPTIVE_STRATEGIES:
        scan = ADAPTIVE_STRATEGIES.load(strategy)
        plan, values = scan(shape, coverage, measure, seed=seed)
        return StrategyRun(plan, values, measure.gaps())
    plan = _static_plan(strategy, shape, coverage, seed)[0]
    values = np.zeros(shape)
    values[plan.pixels[:, 0], plan.pixels[:, 1]] = measure(plan.pixels)
    return StrategyRun(plan, values, measure.gaps())


def run_strategy(
    strategy: str,
    truth: np.ndarray,
    coverage: float,
    dose_e: float | None,
    seed: int = 0,
) -> tuple[ScanPlan, np.ndarray]:
    """Scan the normalised ``truth`` with ``strategy``; (plan, values with 0 unsampled)."""
    run = scan_image(strategy, truth, coverage, dose_e, seed)
    return run.plan, run.values


@functools.lru_cache(maxsize=16)
def _static_plan(
    strategy: str, shape: tuple[int, int], coverage: float, seed: int
) -> tuple[ScanPlan, ScanCost]:
    """A static plan and its cost on the twin's scan system (cached: a path plan at a high
    coverage takes seconds to trace)."""
    plan = make_plan(strategy, shape, coverage, seed)
    return plan, scan_cost(plan, TWIN_SCAN, TWIN_DWELL_S, TWIN_CURRENT_A)


def equal_time_coverage(
    strategy: str,
    shape: tuple[int, int],
    time_s: float,
    seed: int = 0,
    tries: int = 5,
    start: tuple[float, float] | None = None,
) -> tuple[float, ScanCost]:
    """The coverage at which the static ``strategy``'s scan takes ``time_s`` (the twin's scan
    system and dwell), at most 1, and that plan's cost.

    From ``start`` (a coverage and its scan time, s; default: a full raster's time per
    pixel), fixed-point steps ``coverage x time_s / time(coverage)`` until within 2 %,
    keeping the largest coverage tried whose scan takes at most ``time_s`` (+2 %), or the
    quickest tried if none.
    """
    if not (math.isfinite(time_s) and time_s > 0):
        raise ConfigError(f"expected a positive scan time in seconds, got {time_s!r}")
    pixels = shape[0] * shape[1]
    if start is None:
        ny, nx = shape
        start = (1.0, ny * (nx * TWIN_DWELL_S + TWIN_SCAN.flyback_s) + TWIN_SCAN.settle_s)
    coverage = min(1.0, max(1.0 / pixels, start[0] * time_s / start[1]))
    tried: list[tuple[float, ScanCost]] = []
    for _ in range(tries):
        cost = _static_plan(strategy, shape, coverage, seed)[1]
        tried.append((coverage, cost))
        ratio = time_s / cost.time_s
        if abs(ratio - 1.0) < 0.02 or (coverage >= 1.0 and ratio >= 1.0):
            break
        coverage = min(1.0, max(1.0 / pixels, coverage * ratio))
    within = [t for t in tried if t[1].time_s <= time_s * 1.02]
    if within:
        return max(within, key=lambda t: t[0])
    return min(tried, key=lambda t: t[1].time_s)


def _reconstruct_all(
    values: np.ndarray, mask: np.ndarray, methods: Sequence[str], repeats: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every method's reconstruction and its time (s, median of ``repeats``) from the
    samples: the methods that start from `linear` get it computed once, and its time added."""
    seconds: dict[str, float] = {}
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        base = linear(values, mask)
        times.append(time.perf_counter() - clock)
    linear_s = statistics.median(times)
    images: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "linear":
            images[method], seconds[method] = base.copy(), linear_s
            continue
        times = []
        for _ in range(repeats):
            clock = time.perf_counter()
            images[method] = reconstruct(method, values, mask, base=base)
            times.append(time.perf_counter() - clock)
        seconds[method] = statistics.median(times) + linear_s * starts_from_linear(method)
    return images, seconds


def headline_error(
    values: np.ndarray, mask: np.ndarray, truth: np.ndarray, reconstruction: str, seed: int = 0
) -> tuple[float, str]:
    """RMS error (%) of the ``reconstruction`` of the samples and the method it used (a
    choosing reconstruction's pick); a scan of every pixel is its own image (``samples``:
    nothing to reconstruct, and a smoothing method would only blur it)."""
    if mask.all():
        return 100 * float(np.sqrt(np.mean((values - truth) ** 2))), "samples"
    method = reconstruction
    if reconstruction in CHOOSING_RECONSTRUCTIONS:
        method = validate(values, mask, seed=seed).method
    image = reconstruct(method, values, mask)
    return 100 * float(np.sqrt(np.mean((image - truth) ** 2))), method


def _margin(adaptive: float, static: float) -> float | None:
    """``100 x (1 - adaptive / static)``: positive when the adaptive error is lower; None
    when the static error is 0 (a full raster of noise-free samples: no finite margin)."""
    if static <= 0:
        return None
    return round(100 * (1 - adaptive / static), 2)


def _add_margins(
    result: dict[str, Any],
    strategy: str,
    statics: Sequence[str],
    truths: Mapping[str, np.ndarray],
    dose_e: float | None,
    seed: int,
    reconstruction: str,
    progress: bool,
) -> None:
    """``margin`` and ``equal_time_static`` of an adaptive strategy (module docstring)."""
    entry = result[strategy]
    dose_best = min(statics, key=lambda s: result[s]["rms_error_pct"])
    equal_time: dict[str, dict[str, Any]] = {s: {} for s in statics}
    for name, truth in truths.items():
        budget = entry["per_image"][name]["time_s"]
        for static in statics:
            shape = (int(truth.shape[0]), int(truth.shape[1]))
            done = result[static]["per_image"][name]
            coverage, cost = equal_time_coverage(
                static, shape, budget, seed, start=(done["coverage"], done["time_s"])
            )
            run = scan_image(static, truth, coverage, dose_e, seed)
            error, method = headline_error(run.values, run.plan.mask(), truth, reconstruction, seed)
            equal_time[static][name] = {
                "coverage": round(coverage, 5),
                "rms_error_pct": round(error, 4),
                "reconstructed_with": method,
                "time_fraction": round(cost.time_s / cost.full_raster_time_s, 5),
                "dose_fraction": round(cost.dose_fraction, 5),
            }
            if progress:
                print(
                    f"[sparse-scan] {static:12s} {name} at {strategy}'s time: coverage "
                    f"{coverage:.3f}, {error:.2f} % RMS ({method})",
                    file=sys.stderr,
                    flush=True,
                )
    means = {
        s: round(statistics.fmean(v["rms_error_pct"] for v in equal_time[s].values()), 4)
        for s in statics
    }
    time_best = min(statics, key=lambda s: means[s])
    adaptive = entry["rms_error_pct"]
    entry["equal_time_static"] = {
        s: {"rms_error_pct": means[s], "per_image": equal_time[s]} for s in statics
    }
    entry["margin"] = {
        "equal_dose": {
            "best_static": dose_best,
            "best_static_rms_error_pct": result[dose_best]["rms_error_pct"],
            "rms_error_pct": adaptive,
            "margin_pct": _margin(adaptive, result[dose_best]["rms_error_pct"]),
            "per_image_margin_pct": {
                name: _margin(
                    i["rms_error_pct"],
                    min(result[s]["per_image"][name]["rms_error_pct"] for s in statics),
                )
                for name, i in entry["per_image"].items()
            },
        },
        "equal_time": {
            "best_static": time_best,
            "best_static_rms_error_pct": means[time_best],
            "rms_error_pct": adaptive,
            "margin_pct": _margin(adaptive, means[time_best]),
            "per_image_margin_pct": {
                name: _margin(
                    i["rms_error_pct"],
                    min(equal_time[s][name]["rms_error_pct"] for s in statics),
                )
                for name, i in entry["per_image"].items()
            },
        },
    }


def _mean(items: Sequence[Mapping[str, Any]], key: str) -> float:
    return round(statistics.fmean(float(item[key]) for item in items), 4)


def run_sparse_scan_benchmark(
    images: Mapping[str, np.ndarray],
    coverage: float,
    dose_e: float | None = None,
    seed: int = 0,
    strategies: Sequence[str] = STRATEGIES,
    reconstruction: str = DEFAULT_RECONSTRUCTION,
    reconstructions: Sequence[str] = DEFAULT_RECONSTRUCTIONS,
    progress: bool = True,
    keep: dict[str, dict[str, np.ndarray]] | None = None,
    timing_repeats: int = 1,
    equal_time: bool = True,
) -> dict[str, Any]:
    """Figures keyed by strategy (see the module docstring).

    ``keep``, if given, receives each (strategy, image) headline reconstruction;
    ``timing_repeats``: each reconstruction is run that many times and its median time
    reported (the image is the same every time); ``equal_time``: False leaves out the
    adaptive strategies' ``margin`` and ``equal_time_static`` (the static patterns' re-runs
    at the adaptive scans' times: the slowest part of the benchmark on large images).
    """
    coverage = check_coverage(coverage)
    dose_e = check_dose(dose_e)
    if not images:
        raise ConfigError("no image to benchmark")
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}; expected some of {list(STRATEGIES)}")
    methods = list(dict.fromkeys([reconstruction, *reconstructions]))
    scored = [m for m in methods if m not in CHOOSING_RECONSTRUCTIONS]
    if timing_repeats < 1:
        raise ConfigError(f"timing repeats must be >= 1, got {timing_repeats}")
    bad = sorted(set(methods) - set(RECONSTRUCTIONS))
    if bad:
        raise ConfigError(
            f"unknown reconstructions {bad}; expected some of {sorted(RECONSTRUCTIONS)}"
        )
    truths = {name: normalise(image) for name, image in images.items()}
    notes: dict[str, str] = {}
    if "rl" in strategies:
        from emauto.tasks.sparse_scan.policies.rl import load_default_scan_policy

        try:
            load_default_scan_policy()
        except Exception as exc:
            notes["rl"] = f"no RL scan policy: {exc}"
    result: dict[str, Any] = {}
    for strategy in strategies:
        if strategy in notes:
            result[strategy] = {"skipped": notes[strategy]}
            continue
        per_image: dict[str, dict[str, Any]] = {}
        for name, truth in truths.items():
            started = time.perf_counter()
            run = scan_image(strategy, truth, coverage, dose_e, seed)
            scan_s = time.perf_counter() - started
            plan, values = run.plan, run.values
            mask = plan.mask()
            images, seconds = _reconstruct_all(values, mask, scored, timing_repeats)
            scores = {
                method: round(100 * float(np.sqrt(np.mean((image - truth) ** 2))), 3)
                for method, image in images.items()
            }
            validation: dict[str, Any] | None = None
            if reconstruction in CHOOSING_RECONSTRUCTIONS:
                choice = validate(values, mask, seed=seed)
                if choice.method not in images:
                    clock = time.perf_counter()
                    images[choice.method] = reconstruct(choice.method, values, mask)
                    seconds[choice.method] = time.perf_counter() - clock
                headline = images[choice.method]
                seconds[reconstruction] = choice.seconds + seconds[choice.method]
                true_error = 100 * float(np.sqrt(np.mean((headline - truth) ** 2)))
                validation = {**choice.summary(), "true_error_pct": round(true_error, 3)}
            else:
                headline = images[reconstruction]
            if keep is not None:
                keep.setdefault(strategy, {})[name] = headline
            cost = scan_cost(plan, TWIN_SCAN, TWIN_DWELL_S, TWIN_CURRENT_A)
            time_s = cost.time_s + run.compute_s
            per_image[name] = {
                **{k: round(v, 4) for k, v in image_metrics(headline, truth).items()},
                "rms_error_pct_by_reconstruction": scores,
                **({"validation": validation} if validation is not None else {}),
                "positions": plan.n,
                "coverage": round(plan.coverage, 6),
                "dose_fraction": round(cost.dose_fraction, 5),
                "time_fraction": round(time_s / cost.full_raster_time_s, 5),
                "scan_time_fraction": round(cost.time_fraction, 5),
                "time_s": round(time_s, 6),
                "compute_s": round(run.compute_s, 6),
                "batches": len(run.gaps_s) + 1,
                "decision_s": round(statistics.median(run.gaps_s), 6) if run.gaps_s else 0.0,
                "jumps": cost.jumps,
                "reconstruction_s": {k: round(v, 3) for k, v in seconds.items()},
                "scan_s": round(scan_s, 3),
                "wall_s": round(time.perf_counter() - started, 2),
            }
            if progress:
                picked = f" -> {validation['method']}" if validation is not None else ""
                print(
                    f"[sparse-scan] {strategy:12s} {name}: "
                    f"{per_image[name]['rms_error_pct']:.2f} % RMS ({reconstruction}{picked}), "
                    f"{per_image[name]['wall_s']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        items = list(per_image.values())
        result[strategy] = {
            "rms_error_pct": _mean(items, "rms_error_pct"),
            "psnr_db": _mean(items, "psnr_db"),
            "ssim": _mean(items, "ssim"),
            "dose_fraction": _mean(items, "dose_fraction"),
            "time_fraction": _mean(items, "time_fraction"),
            "scan_time_fraction": _mean(items, "scan_time_fraction"),
            "compute_s": _mean(items, "compute_s"),
            "decision_s": round(statistics.median(i["decision_s"] for i in items), 4),
            "reconstruction": reconstruction,
            **(
                {"picked": {n: i["validation"]["method"] for n, i in per_image.items()}}
                if reconstruction in CHOOSING_RECONSTRUCTIONS
                else {}
            ),
            "rms_error_pct_by_reconstruction": {
                method: round(
                    statistics.fmean(i["rms_error_pct_by_reconstruction"][method] for i in items),
                    3,
                )
                for method in scored
            },
            "reconstruction_s": {
                method: round(statistics.median(i["reconstruction_s"][method] for i in items), 3)
                for method in items[0]["reconstruction_s"]
                if all(method in i["reconstruction_s"] for i in items)
            },
            "wall_s": round(sum(i["wall_s"] for i in items), 2),
            "coverage": coverage,
            "dose_e": dose_e,
            "per_image": per_image,
        }
    statics = [s for s in strategies if s in STATIC_STRATEGIES and s not in notes]
    for strategy in strategies if equal_time else ():
        if strategy in ADAPTIVE_STRATEGIES and strategy not in notes and statics:
            _add_margins(result, strategy, statics, truths, dose_e, seed, reconstruction, progress)
    return result
