"""Choose the reconstruction of each image without ground truth: hold out, refit, score.

`validate` hides a tenth of the measured samples (``fraction``), reconstructs the image
from the rest with every candidate method and scores each on the hidden samples; it does so
for ``folds`` (3) disjoint tenths and pools the squared errors: the weighted RMS of
(reconstruction - measured value) over the hidden samples, in % of the samples' units (the
benchmark's [0, 1] range: the same normalisation as its RMS error). Each squared error is
weighted by the area the sample stands for (the pixels nearer to it than to any other
sample, `sample_areas`), so the score estimates the error over the image rather than at
the samples: an adaptive scan puts many samples where the image is hardest, and unweighted
they would rank the methods by how well each predicts the hardest pixels, which are
measured anyway. The best-scoring candidate then reconstructs the image from ALL the
samples (`validated`, registered as ``validated``). Nothing but the samples and their
positions is used: no ground truth.

Samples are hidden in groups, not one by one, so that a hidden sample is about as far
from the samples kept as an unsampled pixel is from the samples measured: a group is a
connected run of samples (8-neighbours) cut by square cells of the mean sample spacing
(``sqrt(pixels / samples)``). Isolated samples (points, adaptive picks) are their own
groups; a path (lines, spirals) loses pieces of about that length, so a method that only
copies its neighbour along the path does not win. Groups are hidden in one seeded random
order until each fold holds ``fraction`` of the samples.

Measured on 2 x 8 scans (every strategy but ``rl``) of two 256x256 images (a twin
Au-on-carbon image, scikit-image's camera) at 1/20 and again at 1/100, the method chosen
had a true error 1.0 % above the truly best method's on average (1/20: 0.5 %, at most
4.1 %, the best itself 13 times in 16; 1/100: 1.4 %, at most 5.9 %, 8 in 16). Without
the area weights 1.8 % (an adaptive scan of the twin image: 15 %); hiding single samples
once, unweighted, 2.7 %.

The validation error ranks the methods; it is not an estimate of the true error: with
noisy samples it includes the noise (the same for every candidate), held-out pieces of a
path are still closer to their neighbours than most unsampled pixels, and an adaptive
scan's picks sit where the image is hardest.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from emauto.errors import ConfigError
from emauto.tasks.sparse_scan.reconstruct import linear, reconstruct
from emauto.tasks.sparse_scan.registry import FAST_RECONSTRUCTIONS

__all__ = [
    "FOLDS",
    "HOLDOUT_FRACTION",
    "MIN_SAMPLES",
    "VALIDATION_CANDIDATES",
    "Validation",
    "holdout_folds",
    "sample_areas",
    "validate",
    "validated",
]

#: The methods `validated` chooses among: every registered one fast enough for 512x512
#: images (``gp`` and ``biharmonic`` are left out, see `registry.SLOW_RECONSTRUCTIONS`).
VALIDATION_CANDIDATES = FAST_RECONSTRUCTIONS
#: Fraction of the samples held out in each fold.
HOLDOUT_FRACTION = 0.1
#: Disjoint held-out sets, each refitted without: the errors are pooled over them.
FOLDS = 3
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


def _groups(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample positions (N, 2), each one's group index (N,) and the group sizes (see
    module): a connected run of samples (8-neighbours) cut by square cells."""
    points = np.argwhere(mask)
    cell = max(1, round(math.sqrt(mask.size / len(points))))
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    columns = -(-mask.shape[1] // cell)
    rows = -(-mask.shape[0] // cell)
    key = labels[mask].astype(np.int64) * (rows * columns)
    key += (points[:, 0] // cell) * columns + points[:, 1] // cell
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return points, inverse.ravel(), counts


def sample_areas(mask: np.ndarray) -> np.ndarray:
    """Pixels nearest to each sample (its Voronoi cell's area, px), at the samples; 0
    elsewhere. The weight of a held-out sample's squared error (see module)."""
    _, (rows, cols) = ndimage.distance_transform_edt(~mask, return_indices=True)
    counts = np.bincount((rows * mask.shape[1] + cols).ravel(), minlength=mask.size)
    return counts.reshape(mask.shape).astype(np.float64)


def _fold_masks(
    mask: np.ndarray, points: np.ndarray, group: np.ndarray, order: np.ndarray, ends: list[int]
) -> list[np.ndarray]:
    """Fold k holds out the groups ``order[ends[k-1]:ends[k]]``."""
    masks = []
    start = 0
    for end in ends:
        chosen = np.zeros(len(order), dtype=bool)
        chosen[order[start:end]] = True
        start = end
        held = np.zeros(mask.shape, dtype=bool)
        picked = points[chosen[group]]
        held[picked[:, 0], picked[:, 1]] = True
        masks.append(held)
    return masks


def holdout_folds(
    mask: np.ndarray,
    fraction: float = HOLDOUT_FRACTION,
    folds: int = FOLDS,
    seed: int = 0,
) -> list[np.ndarray]:
    """``folds`` disjoint boolean ``mask.shape`` arrays, each holding out about ``fraction``
    of the samples (whole groups, in one seeded random order; see module)."""
    mask = np.asarray(mask, dtype=bool)
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the held-out fraction must be in (0, 1), got {fraction!r}")
    if not (isinstance(folds, int) and folds >= 1 and folds * fraction < 1.0):
        raise ConfigError(
            f"folds must be a whole number >= 1 with folds x fraction < 1, got {folds!r} "
            f"x {fraction!r}"
        )
    n = int(mask.sum())
    if n < MIN_SAMPLES:
        raise ConfigError(
            f"validating a reconstruction needs at least {MIN_SAMPLES} samples, got {n}"
        )
    points, group, counts = _groups(mask)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    total = np.cumsum(counts[order])
    ends: list[int] = []
    for _ in range(folds):  # each fold: the fewest next groups holding `fraction` of samples
        before = float(total[min(ends[-1], len(total)) - 1]) if ends else 0.0
        ends.append(int(np.searchsorted(total, before + fraction * n)) + 1)
    masks = _fold_masks(mask, points, group, order, ends)
    if any(not held.any() or n - held.sum() < MIN_SAMPLES // 2 for held in masks):
        # a few large groups hold (nearly) everything: hold out single samples instead
        ends = [max(k + 1, round((k + 1) * fraction * n)) for k in range(folds)]
        masks = _fold_masks(mask, points, np.arange(n), rng.permutation(n), ends)
    return masks


def validate(
    values: np.ndarray,
    mask: np.ndarray,
    candidates: tuple[str, ...] = VALIDATION_CANDIDATES,
    fraction: float = HOLDOUT_FRACTION,
    seed: int = 0,
    folds: int = FOLDS,
) -> Validation:
    """Score every candidate on ``folds`` disjoint held-out sets of ``fraction`` of the
    samples each, refitting without each (no ground truth); the lowest pooled RMS wins
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
    squares = dict.fromkeys(candidates, 0.0)
    seconds: dict[str, float] = {}
    held_out = 0
    weight = sample_areas(mask)
    total_weight = 0.0
    for held in holdout_folds(mask, fraction, folds, seed):
        train = mask & ~held
        train_values = np.where(train, values, 0.0)
        clock = time.perf_counter()
        base = linear(train_values, train)
        seconds["linear"] = seconds.get("linear", 0.0) + time.perf_counter() - clock
        for method in candidates:
            clock = time.perf_counter()
            image = reconstruct(method, train_values, train, base=base)
            seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - clock
            squares[method] += float(np.sum(weight[held] * (image[held] - values[held]) ** 2))
        held_out += int(held.sum())
        total_weight += float(weight[held].sum())
    errors = {m: 100.0 * float(np.sqrt(squares[m] / total_weight)) for m in candidates}
    best = min(candidates, key=lambda m: (errors[m], candidates.index(m)))
    return Validation(
        method=best,
        errors_pct=errors,
        held_out=held_out,
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
