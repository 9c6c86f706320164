"""Closed loop: the sparse-scan strategies at equal dose on a twin image with isolated
features, against the true objective, the RMS error of the reconstruction from the truth.

The image: a noise-free 128 x 128 ADF raster of the twin over 8 nm of a small Au-on-carbon
field (``tests/data/small_au_on_carbon.yaml``: a few particles, 1.2-2.2 nm, on a 2 nm carbon
film; `twin_images.twin_image`, as the benchmark takes its images), normalised to [0, 1].
Every strategy visits 20 % of the pixels, each measured with Poisson noise at 200 electrons
at full intensity: the same positions count and dose for all (checked). Scan seeds 0 and 1.
Figures measured on this commit (2026-12-02), exactly reproducible for a seed; margins set
between them and a broken strategy's.

Mutation checked by hand: (f) `adaptive.delta_std` (the default uncertainty score)
returning noise (``rng.random(mask.shape)``) instead of the ensemble's spread:
`test_uncertainty_beats_every_static_pattern` fails (the noise-driven scan is no better
than the static patterns: 1.00-1.06 x the best of them; 2026-12-02). The same with
`ensemble_std` under ``proxy="ensemble"`` before: 1.04 x.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from emauto.tasks.sparse_scan.bench import run_strategy
from emauto.tasks.sparse_scan.reconstruct import reconstruct
from emauto.tasks.sparse_scan.registry import STATIC_STRATEGIES
from emauto.tasks.sparse_scan.sampling import normalise
from emauto.tasks.sparse_scan.twin_images import twin_image

DATA = Path(__file__).parents[2] / "data"
COVERAGE = 0.2
DOSE_E = 200.0
SEEDS = (0, 1)

#: ``rms(strategy, reconstruction, seed)``: RMS error (% of the range) from the truth.
Rms = Callable[[str, str, int], float]


@pytest.fixture(scope="module")
def truth(specimen_cache: Path, one_thread: None) -> np.ndarray:
    """The normalised twin image (the specimen is built once into the session's cache)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
        uri = f"sim://?specimen={DATA / 'small_au_on_carbon.yaml'}&effects=none"
        image = twin_image(uri, (128, 128), 8e-9)
    return normalise(image)


@pytest.fixture(scope="module")
def rms(truth: np.ndarray, one_thread: None) -> Rms:
    """Each (strategy, seed) scanned once per module, on one thread (`one_thread`,
    tests/conftest.py)."""
    scans: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    positions = round(COVERAGE * truth.size)

    def error(strategy: str, reconstruction: str, seed: int) -> float:
        if (strategy, seed) not in scans:
            plan, values = run_strategy(strategy, truth, COVERAGE, DOSE_E, seed)
            assert plan.n == positions  # equal positions, equal dose
            scans[strategy, seed] = values, plan.mask()
        values, mask = scans[strategy, seed]
        image = reconstruct(reconstruction, values, mask)
        return 100 * float(np.sqrt(np.mean((image - truth) ** 2)))

    return error


def _best_static(rms: Rms, reconstruction: str, seed: int) -> float:
    return min(rms(name, reconstruction, seed) for name in STATIC_STRATEGIES.names())


@pytest.mark.parametrize("reconstruction", ["linear", "completion"])
def test_uncertainty_beats_every_static_pattern(rms: Rms, reconstruction: str) -> None:
    """The ensemble-uncertainty scan puts its second half of the positions on the particles'
    edges; at equal dose it beats the best of the seven static patterns on each seed.

    Measured, RMS % (seeds 0 / 1), with the default score (`adaptive.delta_std`): linear,
    uncertainty 2.69 / 2.91 against the best static 4.28 / 4.28 (ratio 0.63 / 0.68);
    completion 2.96 / 3.10 against 4.11 / 4.11 (0.72 / 0.75; the first, twin-trained
    network: the domain-randomised one passes the same margin). With the ensemble itself
    (``proxy="ensemble"``) 2.79 / 2.95 and 3.05 / 3.17. With the score replaced by noise:
    4.28 / 4.55 and 4.19 / 4.30 (1.00-1.06). Margin: uncertainty <= 0.85 x the best static
    pattern.
    """
    for seed in SEEDS:
        best = _best_static(rms, reconstruction, seed)
        assert rms("uncertainty", reconstruction, seed) <= 0.85 * best, seed


def test_rl_scan_is_no_better_than_a_static_pattern(rms: Rms) -> None:
    """The honest figure for the shipped RL scan policy (seed 0, one run: it refits a
    reconstruction for every 1/64 of the budget): RMS 4.27 % (linear) and 4.15 %
    (completion, the first twin-trained network) against the best static pattern's 4.28 %
    and 4.11 %, and the uncertainty scan's 2.79 % and 3.05 %. It does NOT beat the static
    patterns (within 5 % of the best), it is not broken either (within 15 %), and the
    uncertainty scan beats it by far. When it starts to beat the static patterns this test
    fails; then give it a margin like the uncertainty scan's."""
    for reconstruction in ("linear", "completion"):
        best = _best_static(rms, reconstruction, 0)
        rl = rms("rl", reconstruction, 0)
        assert 0.95 * best <= rl <= 1.15 * best, reconstruction
        assert rms("uncertainty", reconstruction, 0) <= 0.85 * rl, reconstruction
