"""Choose the reconstruction of each image without ground truth: hold out, refit, score.

`validate` hides ``fraction`` (default 10 %) of the measured samples, reconstructs the image
from the rest with every candidate method, and scores each on the hidden samples: the RMS of
(reconstruction - measured value) over them, in % of the samples' units (the benchmark's
[0, 1] range: the same normalisation as its RMS error). The best-scoring candidate then
reconstructs the image from ALL the samples (`validated`, registered as ``validated``).
Nothing but the samples and their positions is used: no ground truth.

Held-out samples are drawn by cells, not one by one: the raster is cut into square cells
of the mean sample spacing (``sqrt(pixels / samples)``, rounded), and whole cells of samples
are hidden in random order (``seed``) until ``fraction`` of the samples are. For point
patterns a cell holds about one sample; for paths (lines, spirals) it holds a run of the
path, so a hidden sample is about as far from the samples kept as an unsampled pixel is
from the samples measured, and a method that only copies its neighbour along the path does
not win. With noisy samples the validation error includes the noise (its variance adds to
every candidate's squared error alike, so the ranking stands).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from emauto.errors import ConfigError
from emauto.tasks.sparse_scan.reconstruct import linear, reconstruct
from emauto.tasks.sparse_scan.registry import FAST_RECONSTRUCTIONS

__all__ = [
    "HOLDOUT_FRACTION",
    "MIN_SAMPLES",
    "VALIDATION_CANDIDATES",
    "Validation",
    "holdout_mask",
    "validate",
    "validated",
]

#: The methods `validated` chooses among: every registered one fast enough for 512x512
#: images (``gp`` and ``biharmonic`` are left out, see `registry.SLOW_RECONSTRUCTIONS`).
VALIDATION_CANDIDATES = FAST_RECONSTRUCTIONS
#: Fraction of the samples held out.
HOLDOUT_FRACTION = 0.1
#: Fewest samples an image needs to be validated (some held out, the rest refitted).
MIN_SAMPLES = 20


@dataclass(frozen=True)
class Validation:
    """The choice: ``method``, each candidate's validation error (% RMS on the held-out
    samples), how many samples were held out and how long it took (s)."""

    method: str
    errors_pct: dict[str, float]
    held_out: int
    samples: int
    seconds: float
    seconds_by_method: dict[str, float] = field(default_factory=dict)

    @property
    def error_pct(self) -> float:
        """The chosen method's validation error (% RMS on the held-out samples)."""
        return self.errors_pct[self.method]

    def summary(self) -> dict[str, object]:
        """JSON-ready figures (rounded)."""
        return {
            "method": self.method,
            "validation_error_pct": round(self.error_pct, 3),
            "validation_errors_pct": {k: round(v, 3) for k, v in self.errors_pct.items()},
            "held_out": self.held_out,
            "samples": self.samples,
            "validation_s": round(self.seconds, 3),
        }


def holdout_mask(mask: np.ndarray, fraction: float = HOLDOUT_FRACTION, seed: int = 0) -> np.ndarray:
    """Boolean ``mask.shape`` array of the held-out samples (whole cells; see module)."""
    mask = np.asarray(mask, dtype=bool)
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the held-out fraction must be in (0, 1), got {fraction!r}")
    n = int(mask.sum())
    if n < MIN_SAMPLES:
        raise ConfigError(
            f"validating a reconstruction needs at least {MIN_SAMPLES} samples, got {n}"
        )
    cell = max(1, round(math.sqrt(mask.size / n)))
    points = np.argwhere(mask)
    columns = -(-mask.shape[1] // cell)
    cells = (points[:, 0] // cell) * columns + points[:, 1] // cell
    ids, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    target = max(1, round(fraction * n))
    # the fewest cells (in random order) holding at least `target` samples, one cell at least,
    # and never all the samples
    taken = int(np.searchsorted(np.cumsum(counts[order]), target)) + 1
    taken = min(max(taken, 1), len(ids) - 1) if len(ids) > 1 else 0
    chosen = np.zeros(len(ids), dtype=bool)
    chosen[order[:taken]] = True
    held = np.zeros(mask.shape, dtype=bool)
    picked = points[chosen[inverse]]
    if len(picked) == 0 or len(picked) > n - MIN_SAMPLES // 2:
        # one cell holds (nearly) everything: hold out single samples instead
        rng = np.random.default_rng(seed)
        picked = points[rng.choice(n, size=target, replace=False)]
    held[picked[:, 0], picked[:, 1]] = True
    return held


def validate(
    values: np.ndarray,
    mask: np.ndarray,
    candidates: tuple[str, ...] = VALIDATION_CANDIDATES,
    fraction: float = HOLDOUT_FRACTION,
    seed: int = 0,
) -> Validation:
    """Score every candidate on held-out samples (no ground truth); the best is chosen
    (ties: the earlier candidate)."""
    started = time.perf_counter()
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if values.shape != mask.shape or values.ndim != 2:
        raise ConfigError(
            f"expected 2-D values and mask of one shape, got {values.shape} and {mask.shape}"
        )
    if not candidates or "validated" in candidates:
        raise ConfigError(
            f"validation candidates must be reconstructions other than 'validated', "
            f"got {list(candidates)}"
        )
    held = holdout_mask(mask, fraction, seed)
    train = mask & ~held
    train_values = np.where(train, values, 0.0)
    clock = time.perf_counter()
    base = linear(train_values, train)
    seconds = {"linear": time.perf_counter() - clock}
    errors: dict[str, float] = {}
    for method in candidates:
        clock = time.perf_counter()
        image = reconstruct(method, train_values, train, base=base)
        seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - clock
        residual = image[held] - values[held]
        errors[method] = 100.0 * float(np.sqrt(np.mean(residual**2)))
    best = min(candidates, key=lambda m: (errors[m], candidates.index(m)))
    return Validation(
        method=best,
        errors_pct=errors,
        held_out=int(held.sum()),
        samples=int(mask.sum()),
        seconds=time.perf_counter() - started,
        seconds_by_method=seconds,
    )


def validated(
    values: np.ndarray, mask: np.ndarray, *, base: np.ndarray | None = None
) -> np.ndarray:
    """The reconstruction from all samples by the method `validate` chooses.

    ``base``: the `linear` reconstruction from all the samples, if the caller has it.
    """
    choice = validate(values, mask)
    return reconstruct(choice.method, values, mask, base=base)
