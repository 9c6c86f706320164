"""Training the Ronchigram estimator on a twin dataset (`estimator_data`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from emauto import optics
from emauto.config import EstimatorDataConfig, EstimatorTrainingConfig
from emauto.policies.estimator import (
    ESTIMATED_KNOBS,
    KNOB_SCALES_M,
    EstimatorMetadata,
    RonchigramEstimator,
    coverage_1sigma,
    rms_by_knob,
)

#: beta of the beta-NLL loss (Seitzer et al. 2022): 0 is plain Gaussian NLL, 1 is MSE-like.
BETA_NLL = 0.5
#: Frames whose true Strehl ratio is at least this count as nearly aligned in the figures.
NEAR_ALIGNED_STREHL = 0.1
#: Largest gradient norm per step: one bad batch cannot throw the training off.
GRADIENT_CLIP = 1.0


def beta_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood, each term weighted by ``var.detach() ** BETA_NLL``."""
    var = log_var.exp()
    nll = 0.5 * (log_var + (target - mean) ** 2 / var)
    return (nll * var.detach() ** BETA_NLL).mean()


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * fraction))
    return order[n_val:], order[:n_val]


def evaluate_estimator(
    estimator: RonchigramEstimator, arrays: dict[str, np.ndarray], batch: int = 512
) -> dict[str, Any]:
    """RMS error per knob (m), by start magnitude, and 1-sigma coverage on ``arrays``."""
    means, stds = [], []
    for start in range(0, len(arrays["images"]), batch):
        mean, std = estimator.predict(
            arrays["images"][start : start + batch], arrays["changes_m"][start : start + batch]
        )
        means.append(mean)
        stds.append(std)
    mean, std = np.concatenate(means), np.concatenate(stds)
    targets = arrays["targets_m"].astype(np.float64)
    errors = mean - targets
    wavelength = optics.wavelength(estimator.metadata.energy_eV)
    strehl = optics.strehl_ratio_batch(
        targets, estimator.knobs, wavelength, estimator.metadata.convergence_rad
    )
    near = strehl >= NEAR_ALIGNED_STREHL
    return {
        "samples": len(errors),
        "rms_m": rms_by_knob(errors, estimator.knobs),
        "near_aligned_samples": int(near.sum()),
        "rms_m_near_aligned": rms_by_knob(errors[near], estimator.knobs) if near.any() else {},
        "coverage_1sigma": coverage_1sigma(errors, std),
    }


def train_estimator(
    arrays: dict[str, np.ndarray],
    data_config: EstimatorDataConfig,
    config: EstimatorTrainingConfig,
    *,
    progress: bool = True,
) -> RonchigramEstimator:
    """Train a fresh estimator; its metadata carries the configs and validation figures."""
    torch.manual_seed(config.seed)
    metadata = EstimatorMetadata(
        knobs=ESTIMATED_KNOBS,
        scales_m=KNOB_SCALES_M,
        image_size=data_config.tuning.observation_size,
        observation_margin=data_config.tuning.observation_margin,
        convergence_rad=data_config.tuning.convergence_rad,
        width=config.width,
        data=data_config.model_dump(mode="json"),
        training=config.model_dump(mode="json"),
    )
    estimator = RonchigramEstimator.untrained(metadata)
    net = estimator.net.to(config.device)
    n = len(arrays["images"])
    train_idx, val_idx = _split(n, config.validation_fraction, config.seed)
    scales = np.array(KNOB_SCALES_M, dtype=np.float64)
    images = torch.from_numpy(arrays["images"])
    changes = torch.from_numpy((arrays["changes_m"] / scales).astype(np.float32))
    targets = torch.from_numpy((arrays["targets_m"] / scales).astype(np.float32))
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps = config.epochs * math.ceil(len(train_idx) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=steps
    )
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    with tqdm(total=steps, unit="batch", disable=not progress) as bar:
        for epoch in range(config.epochs):
            net.train()
            order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=generator)]
            for batch in order.split(config.batch_size):
                x = images[batch].float().div_(255.0).to(config.device)
                mean, log_var = net(x, changes[batch].to(config.device))
                loss = beta_nll(mean, log_var, targets[batch].to(config.device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), GRADIENT_CLIP)
                optimiser.step()
                schedule.step()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    net.eval().to("cpu")
    validation = evaluate_estimator(estimator, {k: v[val_idx] for k, v in arrays.items()})
    validation["train_seconds"] = round(time.perf_counter() - started, 1)
    validation["train_samples"] = len(train_idx)
    estimator.metadata = estimator.metadata.model_copy(update={"validation": validation})
    return estimator


def train_from_files(
    dataset: str | Path, out: str | Path, config: EstimatorTrainingConfig, progress: bool = True
) -> RonchigramEstimator:
    """Load a dataset file, train, and save the estimator to ``out``."""
    from emauto.policies.estimator_data import load_dataset

    arrays, data_config = load_dataset(dataset)
    estimator = train_estimator(arrays, data_config, config, progress=progress)
    estimator.save(out)
    return estimator
