"""Training the Ronchigram estimator on pairs of twin frames.

The data are made by the probe-tuning task (`emauto.tasks.probe_tuning.estimator_data`,
which also composes data and training into `train_from_files` / `train_from_data_config`);
here is the training loop on those arrays and what it must know of the data's geometry.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from emauto import optics
from emauto.errors import ModelFileError
from emauto.models.config import EstimatorTrainingConfig
from emauto.models.estimator import (
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


class ObservationGeometry(Protocol):
    """How the frames were cut: what the estimator must be told of its inputs."""

    @property
    def observation_size(self) -> int: ...  # pixels per side
    @property
    def observation_margin(self) -> float: ...  # field of view / aperture angle
    @property
    def convergence_rad(self) -> float: ...  # probe-forming aperture semi-angle (rad)


class DataDescription(Protocol):
    """The data config the arrays were made with (the task's ``EstimatorDataConfig``)."""

    @property
    def tuning(self) -> ObservationGeometry: ...
    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


def train_estimator(
    arrays: dict[str, np.ndarray],
    data_config: DataDescription,
    config: EstimatorTrainingConfig,
    *,
    progress: bool = True,
) -> RonchigramEstimator:
    """Train an estimator (fresh, or from ``config.init_weights``); its metadata carries the
    configs and validation figures.

    On a CUDA device the whole uint8 dataset is moved to the GPU once (batches are indexed
    there) and ``config.bf16`` runs the forward pass under bfloat16 autocast. After every
    epoch the RMS error on up to 4,096 validation pairs (in units of each knob's scale) is
    written to the progress bar's log.
    """
    torch.manual_seed(config.seed)
    metadata = EstimatorMetadata(
        knobs=ESTIMATED_KNOBS,
        scales_m=KNOB_SCALES_M,
        image_size=data_config.tuning.observation_size,
        observation_margin=data_config.tuning.observation_margin,
        convergence_rad=data_config.tuning.convergence_rad,
        width=config.width,
        arch=config.arch,
        data=data_config.model_dump(mode="json"),
        training=config.model_dump(mode="json"),
    )
    estimator = RonchigramEstimator.untrained(metadata)
    if config.init_weights is not None:
        estimator.net.load_state_dict(_initial_weights(config.init_weights, metadata))
    device = torch.device(config.device)
    on_gpu = device.type == "cuda"
    net = estimator.net.to(device)
    n = len(arrays["images"])
    train_idx, val_idx = _split(n, config.validation_fraction, config.seed)
    scales = np.array(KNOB_SCALES_M, dtype=np.float64)
    storage = device if on_gpu else torch.device("cpu")
    images = torch.from_numpy(arrays["images"]).to(storage)
    changes = torch.from_numpy((arrays["changes_m"] / scales).astype(np.float32)).to(storage)
    targets = torch.from_numpy((arrays["targets_m"] / scales).astype(np.float32)).to(storage)
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    per_epoch = math.ceil(len(train_idx) / config.batch_size)
    epochs = config.epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=epochs * per_epoch
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and config.bf16)
    generator = torch.Generator().manual_seed(config.seed)
    monitor = torch.from_numpy(val_idx[:4096]).to(storage)
    started = time.perf_counter()
    timing: dict[int, float] = {}
    epoch, step, interrupted = 0, 0, False
    with tqdm(total=epochs * per_epoch, unit="batch", disable=not progress) as bar:
        try:
            while epoch < epochs:
                net.train()
                shuffled = torch.randperm(len(train_idx), generator=generator)
                order = torch.from_numpy(train_idx)[shuffled]
                for batch in order.to(storage).split(config.batch_size):
                    x = images[batch].float().div_(255.0).to(device, non_blocking=True)
                    with autocast:
                        mean, log_var = net(x, changes[batch].to(device))
                    loss = beta_nll(mean.float(), log_var.float(), targets[batch].to(device))
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), GRADIENT_CLIP)
                    optimiser.step()
                    schedule.step()
                    step += 1
                    bar.update(1)
                    if step % 50 == 0:
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                    if config.time_budget_s is not None and step in _TIMED_STEPS:
                        timing[step] = _synchronised_clock(device)
                        if len(timing) == 2:
                            fitted = _epochs_within_budget(timing, per_epoch, config, started)
                            if fitted < epochs:
                                epochs = fitted
                                schedule = _fast_forwarded_schedule(
                                    optimiser, config, epochs * per_epoch, step
                                )
                                bar.total = epochs * per_epoch
                                bar.write(
                                    f"time budget: {epochs} epochs instead of {config.epochs}",
                                    file=sys.stderr,
                                )
                rms = _scaled_rms(net, images, changes, targets, monitor, device)
                epoch += 1
                bar.write(
                    f"epoch {epoch}/{epochs}  {time.perf_counter() - started:.0f} s  "
                    "validation RMS / scale: "
                    + " ".join(f"{k} {v:.4f}" for k, v in zip(ESTIMATED_KNOBS, rms, strict=True)),
                    file=sys.stderr,
                )
        except KeyboardInterrupt:  # keep what was trained: evaluated and saved, marked
            interrupted = True
            bar.write(
                f"interrupted in epoch {epoch + 1}: evaluating and saving the model so far",
                file=sys.stderr,
            )
    net.eval().to("cpu")
    train_seconds = round(time.perf_counter() - started, 1)
    validation = evaluate_estimator(estimator, {k: v[val_idx] for k, v in arrays.items()})
    validation["train_seconds"] = train_seconds
    validation["train_samples"] = len(train_idx)
    validation["train_device"] = _device_name(device)
    validation["epochs_run"] = epoch
    validation["interrupted"] = interrupted
    estimator.metadata = estimator.metadata.model_copy(update={"validation": validation})
    return estimator


@torch.no_grad()
def _scaled_rms(
    net: torch.nn.Module,
    images: torch.Tensor,
    changes: torch.Tensor,
    targets: torch.Tensor,
    index: torch.Tensor,
    device: torch.device,
) -> list[float]:
    """RMS error per knob (in scale units) of ``net`` on the pairs at ``index``."""
    net.eval()
    errors = []
    for batch in index.split(1024):
        mean, _ = net(images[batch].float().div_(255.0).to(device), changes[batch].to(device))
        errors.append((mean.float() - targets[batch].to(device)).cpu())
    net.train()
    return torch.cat(errors).square().mean(0).sqrt().tolist()


def _initial_weights(path: str, metadata: EstimatorMetadata) -> dict[str, torch.Tensor]:
    """The weights of the estimator at ``path``; it must have this model's shape."""
    start = RonchigramEstimator.load(path)
    fields = ("knobs", "image_size", "width", "arch")
    mismatched = [f for f in fields if getattr(start.metadata, f) != getattr(metadata, f)]
    if mismatched:
        raise ModelFileError(f"{path}: init_weights differ from the config in {mismatched}")
    return start.net.state_dict()


#: Batches between which the speed is timed for ``time_budget_s`` (after the warm-up).
_TIMED_STEPS = (10, 40)


def _synchronised_clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _epochs_within_budget(
    timing: dict[int, float], per_epoch: int, config: EstimatorTrainingConfig, started: float
) -> int:
    """Whole epochs that fit ``config.time_budget_s`` at the timed speed; at least the epoch
    under way when timed."""
    first, last = _TIMED_STEPS
    per_step = (timing[last] - timing[first]) / (last - first)
    budget = float(config.time_budget_s or 0.0) - (timing[last] - started)
    fitted = int((max(budget, 0.0) / per_step + last) // per_epoch)
    return max(last // per_epoch + 1, min(config.epochs, fitted))


def _fast_forwarded_schedule(
    optimiser: torch.optim.Optimizer, config: EstimatorTrainingConfig, total: int, done: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """A one-cycle schedule over ``total`` steps, already ``done`` steps in."""
    for group in optimiser.param_groups:
        group.pop("initial_lr", None)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=total
    )
    optimiser.zero_grad(set_to_none=True)
    for _ in range(done):
        optimiser.step()  # no gradients: a no-op that keeps the scheduler's order check quiet
        schedule.step()
    return schedule


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
