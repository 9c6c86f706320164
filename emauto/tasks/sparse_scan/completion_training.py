"""Training examples for the completion network: domain-randomised images, sparse-sampled.

Each example is one generated image (`domain_images.domain_image`: many lattices and pixel
sizes, particles, probe tails, scan distortion, noise, contamination) sampled by a random
static strategy at a coverage log-uniform in ``coverage_range``, noise-free in
``noise_free_fraction`` of the examples and otherwise with Poisson noise at a dose
log-uniform in ``dose_range_e`` (on top of the image's own noise, as the benchmark samples
a user's noisy image). The input is `network_input` of the samples and their `linear`
reconstruction; the target is what the benchmark scores against, the measured image, with
its noise-free value at the unsampled pixels (the same expectation, less variance).

Image seeds: training examples ``seed x 10^7 + i``, validation ``seed x 10^7 + 5 x 10^6 +
i`` (`example_seed`); the tests use seeds from `TEST_SEED_BASE` on, never trained on.
Examples are made on Dask (`distributed.LocalCluster`, ``workers`` processes) when
``workers > 1``. The network and its training loop are `emauto.models.completion`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from emauto.models.completion import CompletionModel, fit, network_input
from emauto.models.config import CompletionTrainingConfig
from emauto.tasks.sparse_scan.domain_images import domain_image
from emauto.tasks.sparse_scan.reconstruct import linear
from emauto.tasks.sparse_scan.registry import STATIC_STRATEGIES
from emauto.tasks.sparse_scan.sampling import sample_image
from emauto.tasks.sparse_scan.strategies import make_plan

__all__ = ["TEST_SEED_BASE", "example_seed", "make_example", "make_examples", "train"]

#: Image seeds of validation examples start this far into a training seed block.
_VALIDATION_OFFSET = 5_000_000
_BLOCK = 10_000_000
#: First image seed the tests may use: above every block a config's ``seed`` can name.
TEST_SEED_BASE = 1001 * _BLOCK


def example_seed(config_seed: int, index: int, validation: bool = False) -> int:
    """The image seed of example ``index`` (training or validation) of seed block
    ``config_seed``."""
    return config_seed * _BLOCK + (_VALIDATION_OFFSET if validation else 0) + index


def make_example(
    image_seed: int, config: CompletionTrainingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One example from ``image_seed``: input (3, S, S) and target (1, S, S), float32."""
    size = config.image_size
    image = domain_image(image_seed, (size, size))
    rng = np.random.default_rng([image_seed, 1])
    names = STATIC_STRATEGIES.names()
    low, high = config.coverage_range
    coverage = math.exp(rng.uniform(math.log(low), math.log(high)))
    plan = make_plan(
        names[int(rng.integers(len(names)))], (size, size), coverage, seed=int(rng.integers(2**31))
    )
    dose_low, dose_high = config.dose_range_e
    dose = (
        None
        if rng.random() < config.noise_free_fraction
        else math.exp(rng.uniform(math.log(dose_low), math.log(dose_high)))
    )
    values = np.zeros((size, size))
    values[plan.pixels[:, 0], plan.pixels[:, 1]] = sample_image(image.image, plan.pixels, dose, rng)
    mask = plan.mask()
    target = np.where(mask, image.image, image.clean)
    return network_input(linear(values, mask), values, mask), target[None].astype(np.float32)


def _chunk(payload: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    config = CompletionTrainingConfig.model_validate_json(payload)
    pairs = [make_example(seed, config) for seed in seeds]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def make_examples(
    config: CompletionTrainingConfig, validation: bool = False, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, 3, S, S) and targets (N, 1, S, S), float32: ``config.samples`` training
    examples, or ``config.validation_samples`` validation examples (other image seeds)."""
    count = config.validation_samples if validation else config.samples
    seeds = [example_seed(config.seed, i, validation) for i in range(count)]
    chunks = [seeds[i : i + config.chunk] for i in range(0, count, config.chunk)]
    payload = config.model_dump_json()
    started = time.perf_counter()
    label = "validation" if validation else "training"
    results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(chunks)
    if config.workers == 1 or len(chunks) == 1:
        for index, chunk in enumerate(chunks):
            results[index] = _chunk(payload, chunk)
            _report(progress, label, (index + 1) * config.chunk, count, started)
    else:
        from distributed import Client, LocalCluster, as_completed

        cluster = LocalCluster(
            n_workers=config.workers, threads_per_worker=1, dashboard_address=":0", processes=True
        )
        client = Client(cluster)
        try:
            futures = [client.submit(_chunk, payload, chunk, pure=False) for chunk in chunks]
            order = {future.key: index for index, future in enumerate(futures)}
            done = 0
            for future in as_completed(futures):
                results[order[future.key]] = future.result()
                done += len(chunks[order[future.key]])
                _report(progress, label, done, count, started)
        finally:
            client.close()
            cluster.close()
    inputs = np.concatenate([r[0] for r in results if r is not None])
    targets = np.concatenate([r[1] for r in results if r is not None])
    return inputs, targets


def _report(progress: bool, label: str, done: int, count: int, started: float) -> None:
    if progress:
        print(
            f"[train completion] {label} examples {min(done, count)}/{count} "
            f"({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def train(
    config: CompletionTrainingConfig, out: str | Path, progress: bool = True
) -> CompletionModel:
    """Make the examples, train the completion network and save it to ``out`` (``.pt``)."""
    started = time.perf_counter()
    training = make_examples(config, validation=False, progress=progress)
    validation = make_examples(config, validation=True, progress=progress)
    generate_s = round(time.perf_counter() - started, 1)
    return fit(training, validation, config, out, progress, extra={"generate_s": generate_s})
