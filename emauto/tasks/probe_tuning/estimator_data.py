"""Twin data for the Ronchigram estimator, generated in parallel with Dask.

Each Dask task builds its own twin and `ProbeTuningEnv` (the same preprocessing the policies
see) and returns one chunk of samples; chunks are seeded by ``(seed, chunk index)`` and
concatenated in order, so the dataset does not depend on the number of workers. A
`distributed.LocalCluster` runs by default; pass a scheduler address to scale out.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from emauto.errors import ModelFileError
from emauto.models.config import EstimatorTrainingConfig
from emauto.models.estimator import ESTIMATED_KNOBS, RonchigramEstimator
from emauto.models.estimator_training import train_estimator
from emauto.tasks.probe_tuning.config import TUNING_KNOB_GROUPS, EstimatorDataConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv, draw_start

ARRAYS = ("images", "changes_m", "targets_m")


def _knob_group(knob: str) -> str:
    return next(name for name, knobs in TUNING_KNOB_GROUPS.items() if knob in knobs)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _start_offsets(config: EstimatorDataConfig, rng: np.random.Generator) -> dict[str, float]:
    """Start offsets: the configured distribution as it is (``start_fraction``), scaled by one
    common factor (``joint_scale_fraction``) or each aberration by its own log-uniform factor;
    ``unscaled_groups`` (aberrations the policies leave alone) always as configured."""
    kind = rng.uniform()
    if kind < config.start_fraction:
        factors = dict.fromkeys(TUNING_KNOB_GROUPS, 1.0)
    elif kind < config.start_fraction + config.joint_scale_fraction:
        common = _log_uniform(rng, config.joint_scale_range)
        factors = dict.fromkeys(TUNING_KNOB_GROUPS, common)
    else:
        factors = {name: _log_uniform(rng, config.scale_range) for name in TUNING_KNOB_GROUPS}
    factors.update(dict.fromkeys(config.unscaled_groups, 1.0))
    offsets = draw_start(config.tuning, rng)
    return {knob: value * factors[_knob_group(knob)] for knob, value in offsets.items()}


def _defocus_sign(config: EstimatorDataConfig, rng: np.random.Generator) -> float:
    """+1 (towards over-focus) with ``defocus_probe_positive_fraction``, else -1."""
    if config.defocus_probe_positive_fraction == 0.5:
        return float(rng.choice([-1.0, 1.0]))  # the draw datasets before the option used
    return 1.0 if rng.uniform() < config.defocus_probe_positive_fraction else -1.0


def _change(
    config: EstimatorDataConfig, env: ProbeTuningEnv, rng: np.random.Generator
) -> np.ndarray:
    """The knob change (m, in env knob order): a defocus probe, a correction, or random."""
    limits = env.step_limits
    kind = rng.uniform()
    if kind < config.defocus_probe_fraction:
        change = np.zeros(len(env.knobs))
        size = _log_uniform(rng, config.defocus_probe_m)
        change[env.knobs.index("C10")] = _defocus_sign(config, rng) * size
        return change
    if kind < config.defocus_probe_fraction + config.correction_fraction:
        current = env.microscope.read().knobs
        residual_scale = _log_uniform(rng, config.correction_residual_range)
        widths = np.array([float(getattr(config.tuning.start, _knob_group(k))) for k in env.knobs])
        residual = rng.standard_normal(len(env.knobs)) * widths * residual_scale
        return np.array([-(current[k] - env.reference[k]) for k in env.knobs]) + residual
    return rng.uniform(-1, 1, len(env.knobs)) * rng.uniform() * limits


def generate_chunk(
    config_json: str, chunk_index: int, n: int, cache_dir: str | None = None
) -> dict[str, np.ndarray]:
    """``n`` samples: images uint8 (n, 2, S, S), changes_m and targets_m float32 (n, K)."""
    from emauto.drivers import connect

    config = EstimatorDataConfig.model_validate_json(config_json)
    rng = np.random.default_rng([config.seed, chunk_index])
    kwargs: dict[str, Any] = {"cache_dir": cache_dir} if cache_dir else {}
    scope = connect(f"sim://?specimen={config.specimen}&seed={chunk_index}", **kwargs)
    env = ProbeTuningEnv(scope, config.tuning)
    missing = [k for k in ESTIMATED_KNOBS if k not in env.knobs]
    if missing:
        raise ValueError(f"tuning.aberrations must cover the estimated knobs; missing {missing}")
    size = config.tuning.observation_size
    images = np.zeros((n, 2, size, size), np.uint8)
    changes = np.zeros((n, len(ESTIMATED_KNOBS)), np.float32)
    targets = np.zeros((n, len(ESTIMATED_KNOBS)), np.float32)
    truth_of: Any = scope.true_aberrations  # type: ignore[attr-defined]
    try:
        for i in range(n):
            offsets = _start_offsets(config, rng)
            env.reset(seed=int(rng.integers(2**31)), options={"offsets": offsets})
            if config.pre_probe_fraction > 0 and rng.uniform() < config.pre_probe_fraction:
                pre_probe = np.zeros(len(env.knobs))
                pre_probe[env.knobs.index("C10")] = _log_uniform(rng, config.pre_probe_m)
                env.step(np.clip(pre_probe / env.step_limits, -1, 1).astype(np.float32))
            action = np.clip(_change(config, env, rng) / env.step_limits, -1, 1)
            observation, *_ = env.step(action.astype(np.float32))
            truth = truth_of().to_dict()
            images[i] = observation["ronchigram"]
            changes[i] = [env.last_change.get(k, 0.0) for k in ESTIMATED_KNOBS]
            targets[i] = [truth.get(k, 0.0) - env.reference.get(k, 0.0) for k in ESTIMATED_KNOBS]
    finally:
        env.close()
    return {"images": images, "changes_m": changes, "targets_m": targets}


def generate_arrays(
    config: EstimatorDataConfig,
    *,
    scheduler_address: str | None = None,
    n_workers: int = 2,
    cache_dir: str | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Generate ``config.samples`` samples on Dask: ``images``, ``changes_m``, ``targets_m``."""
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    from emauto.drivers import connect

    connect(f"sim://?specimen={config.specimen}", **({"cache_dir": cache_dir} if cache_dir else {}))
    sizes = [config.chunk] * (config.samples // config.chunk)
    if config.samples % config.chunk:
        sizes.append(config.samples % config.chunk)
    cluster = None
    if scheduler_address is None:
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, dashboard_address=":0", processes=True
        )
    client = Client(scheduler_address or cluster)
    try:
        payload = config.model_dump_json()
        futures = [
            client.submit(generate_chunk, payload, index, size, cache_dir, pure=False)
            for index, size in enumerate(sizes)
        ]
        order = {future.key: index for index, future in enumerate(futures)}
        chunks: list[dict[str, np.ndarray] | None] = [None] * len(futures)
        with tqdm(total=config.samples, unit="sample", disable=not progress) as bar:
            for future in as_completed(futures):
                index = order[future.key]
                chunks[index] = future.result()
                bar.update(sizes[index])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return {name: np.concatenate([c[name] for c in chunks if c is not None]) for name in ARRAYS}


def generate_dataset(
    config: EstimatorDataConfig,
    out: str | Path,
    *,
    scheduler_address: str | None = None,
    n_workers: int = 2,
    cache_dir: str | None = None,
    progress: bool = True,
) -> Path:
    """Generate ``config.samples`` samples on Dask and write them to ``out`` (.npz)."""
    arrays: dict[str, np.ndarray] = generate_arrays(
        config,
        scheduler_address=scheduler_address,
        n_workers=n_workers,
        cache_dir=cache_dir,
        progress=progress,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays["knobs"] = np.array(ESTIMATED_KNOBS)
    arrays["config"] = np.array(config.model_dump_json())
    np.savez_compressed(out, allow_pickle=False, **arrays)
    return out


def load_dataset(path: str | Path) -> tuple[dict[str, np.ndarray], EstimatorDataConfig]:
    """Read a dataset written by `generate_dataset`; a bad file raises `ModelFileError`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ARRAYS}
            knobs = tuple(str(k) for k in data["knobs"])
            config = EstimatorDataConfig.model_validate_json(str(data["config"]))
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path}: no such dataset") from exc
    except (OSError, KeyError, ValueError) as exc:
        raise ModelFileError(f"{path}: not an estimator dataset ({exc})") from exc
    if knobs != ESTIMATED_KNOBS:
        raise ModelFileError(f"{path}: dataset knobs {knobs}, expected {ESTIMATED_KNOBS}")
    n = len(arrays["images"])
    if any(len(a) != n for a in arrays.values()):
        raise ModelFileError(f"{path}: arrays of different lengths")
    return arrays, config


# --------------------------------------------------------------------------- data + training


def train_from_files(
    dataset: str | Path, out: str | Path, config: EstimatorTrainingConfig, progress: bool = True
) -> RonchigramEstimator:
    """Load a dataset file, train, and save the estimator to ``out``."""
    arrays, data_config = load_dataset(dataset)
    estimator = train_estimator(arrays, data_config, config, progress=progress)
    estimator.save(out)
    return estimator


def train_from_data_config(
    data_config: EstimatorDataConfig,
    out: str | Path,
    config: EstimatorTrainingConfig,
    *,
    scheduler_address: str | None = None,
    n_workers: int = 2,
    progress: bool = True,
) -> RonchigramEstimator:
    """Generate the dataset in memory (Dask, as `emauto dataset`), train, save to ``out``.

    The same data as `emauto dataset` with this config writes (chunks are seeded by index),
    without the file: for large datasets on a machine with a GPU.
    """
    started = time.perf_counter()
    arrays = generate_arrays(
        data_config, scheduler_address=scheduler_address, n_workers=n_workers, progress=progress
    )
    generated_s = round(time.perf_counter() - started, 1)
    estimator = train_estimator(arrays, data_config, config, progress=progress)
    validation = {**estimator.metadata.validation, "generate_seconds": generated_s}
    estimator.metadata = estimator.metadata.model_copy(update={"validation": validation})
    estimator.save(out)
    return estimator
