"""Training examples for the completion network, made from this task's twin images.

Noise-free twin images of the seed-1 training specimens (`twin_images.training_images`:
different atoms, stage positions, rotations and fields of view from the benchmark images),
sparse-sampled by every static strategy at several coverages and doses; the network itself
and its training loop are `emauto.models.completion`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from emauto.models.completion import CompletionModel, fit, network_input
from emauto.models.config import CompletionTrainingConfig
from emauto.tasks.sparse_scan.reconstruct import linear
from emauto.tasks.sparse_scan.registry import STATIC_STRATEGIES
from emauto.tasks.sparse_scan.sampling import normalise, sample_image
from emauto.tasks.sparse_scan.strategies import make_plan
from emauto.tasks.sparse_scan.twin_images import training_images


def _augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = np.rot90(image, int(rng.integers(4)))
    return np.ascontiguousarray(image[:, ::-1] if rng.random() < 0.5 else image)


def make_examples(
    config: CompletionTrainingConfig, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, 3, S, S) and targets (N, 1, S, S), float32, from seed-1 twin images."""
    rng = np.random.default_rng(config.seed)
    size = config.image_size
    images = [
        normalise(image)
        for _, image in training_images(config.images_per_specimen, (size, size), config.seed)
    ]
    plans = [
        make_plan(name, (size, size), coverage, seed=s)
        for name in STATIC_STRATEGIES
        for coverage in config.coverages
        for s in range(2)
    ]
    inputs = np.empty((config.samples, 3, size, size), dtype=np.float32)
    targets = np.empty((config.samples, 1, size, size), dtype=np.float32)
    low, high = config.dose_range_e
    started = time.perf_counter()
    for index in range(config.samples):
        truth = _augment(images[int(rng.integers(len(images)))], rng)
        plan = plans[int(rng.integers(len(plans)))]
        dose = (
            None
            if rng.random() < config.noise_free_fraction
            else float(math.exp(rng.uniform(math.log(low), math.log(high))))
        )
        values = np.zeros((size, size))
        values[plan.pixels[:, 0], plan.pixels[:, 1]] = sample_image(truth, plan.pixels, dose, rng)
        mask = plan.mask()
        inputs[index] = network_input(linear(values, mask), values, mask)
        targets[index, 0] = truth
        if progress and (index + 1) % 256 == 0:
            print(
                f"[train completion] examples {index + 1}/{config.samples} "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return inputs, targets


def train(
    config: CompletionTrainingConfig, out: str | Path, progress: bool = True
) -> CompletionModel:
    """Make the examples, train the completion network and save it to ``out`` (``.pt``)."""
    inputs, targets = make_examples(config, progress)
    return fit(inputs, targets, config, out, progress)
