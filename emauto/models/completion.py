"""The learned completion network: sparse samples and their mask -> the full image.

A small U-Net (three levels) reads three channels, all ``(ny, nx)`` with ``ny, nx``
multiples of 8 after padding: a base reconstruction (the sparse-scan task's linear
interpolation, passed in by the caller), the mask, and the samples (0 where unsampled); it
predicts a correction added to the base. Intensities are normalised images in [0, 1].
`fit` trains it on examples the task makes
(`emauto.tasks.sparse_scan.completion_training`: domain-randomised STEM-like images, many
lattices, pixel sizes, particles, probe tails, scan distortions and noise, sparse-sampled
by every static strategy at coverages from 1/140 to 1/7, noise-free or with Poisson noise).

Saved as one ``.pt`` file ``{"format", "metadata" (JSON), "state_dict"}`` read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emauto.errors import ModelFileError
from emauto.models.config import CompletionTrainingConfig
from emauto.models.weights import read_weights_file, shipped_path

__all__ = [
    "DEFAULT_WEIGHTS",
    "CompletionModel",
    "CompletionNet",
    "fit",
    "load_completion",
    "load_default_completion",
    "network_input",
]

FORMAT = "emauto-scan-completion/1"
DEFAULT_WEIGHTS = shipped_path("sparse_scan_completion.pt")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GELU(),
    )


class CompletionNet(nn.Module):
    """U-Net: (B, 3, H, W) -> (B, 1, H, W) correction; H and W multiples of 8."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        c = width
        self.down1 = _block(3, c)
        self.down2 = _block(c, 2 * c)
        self.down3 = _block(2 * c, 4 * c)
        self.bottom = _block(4 * c, 4 * c)
        self.up3 = _block(8 * c, 2 * c)
        self.up2 = _block(4 * c, c)
        self.up1 = _block(2 * c, c)
        self.out = nn.Conv2d(c, 1, 1)
        self.pool = nn.AvgPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(self.pool(d1))
        d3 = self.down3(self.pool(d2))
        b = self.bottom(self.pool(d3))
        u3 = self.up3(torch.cat([self.upsample(b), d3], dim=1))
        u2 = self.up2(torch.cat([self.upsample(u3), d2], dim=1))
        u1 = self.up1(torch.cat([self.upsample(u2), d1], dim=1))
        return self.out(u1)


def network_input(base: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The three input channels (3, ny, nx) float32: base reconstruction, mask, samples."""
    return np.stack([base, mask.astype(np.float64), np.where(mask, values, 0.0)]).astype(np.float32)


class CompletionModel:
    """A trained `CompletionNet` with its metadata; `complete` reconstructs one image."""

    def __init__(self, net: CompletionNet, metadata: dict[str, Any]) -> None:
        self.net = net.eval()
        self.metadata = metadata

    def complete(self, base: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The full ``(ny, nx)`` image from samples ``values`` where ``mask`` is True and the
        base reconstruction ``base`` of the same samples."""
        x = network_input(base, values, mask)
        ny, nx = mask.shape
        py, px = (-ny) % 8, (-nx) % 8
        padded = np.pad(x, ((0, 0), (0, py), (0, px)), mode="reflect")
        with torch.no_grad():
            correction = self.net(torch.from_numpy(padded)[None])[0, 0].numpy()
        return np.asarray(x[0] + correction[:ny, :nx], dtype=np.float64)


def save(net: CompletionNet, metadata: dict[str, Any], path: str | Path) -> Path:
    """Write the network as one ``.pt`` file (no pickled code)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().to(torch.float16) for k, v in net.state_dict().items()}
    torch.save({"format": FORMAT, "metadata": json.dumps(metadata), "state_dict": state}, path)
    return path


def load_completion(path: str | Path) -> CompletionModel:
    """Load a completion network saved by `save`; a bad file raises `ModelFileError`."""
    path = Path(path)
    blob = read_weights_file(path, FORMAT, "no such completion-network file")
    metadata = json.loads(blob["metadata"])
    net = CompletionNet(width=int(metadata["width"]))
    try:
        net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit the network: {exc}") from exc
    return CompletionModel(net, metadata)


@lru_cache(maxsize=1)
def load_default_completion() -> CompletionModel:
    """The shipped network (``emauto/models/weights/sparse_scan_completion.pt``)."""
    return load_completion(DEFAULT_WEIGHTS)


# --------------------------------------------------------------------------- training


def fit(
    training: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    config: CompletionTrainingConfig,
    out: str | Path,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> CompletionModel:
    """Train the completion network and save it to ``out`` (``.pt``).

    ``training`` and ``validation``: inputs (N, 3, S, S) and targets (N, 1, S, S), float32
    (`network_input` channels and true images). Each batch is turned by a random multiple
    of 90 degrees and mirrored at random. The weights kept are those of the epoch with the
    lowest validation RMS; ``config.time_budget_s`` ends training after the epoch that
    passes it. ``extra``: more metadata (e.g. how long the examples took to make)."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    x_train, y_train = torch.from_numpy(training[0]), torch.from_numpy(training[1])
    x_val, y_val = torch.from_numpy(validation[0]), torch.from_numpy(validation[1])
    net = CompletionNet(config.width)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-5)
    steps = config.epochs * math.ceil(len(x_train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=steps
    )
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    history = []
    base = float(torch.sqrt(torch.mean((x_val[:, :1] - y_val) ** 2)))
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for epoch in range(config.epochs):
        net.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            x, y = x_train[batch], y_train[batch]
            turns = int(torch.randint(4, (1,), generator=generator))
            x, y = torch.rot90(x, turns, (2, 3)), torch.rot90(y, turns, (2, 3))
            if bool(torch.randint(2, (1,), generator=generator)):
                x, y = torch.flip(x, (3,)), torch.flip(y, (3,))
            loss = _loss(x[:, :1] + net(x), x[:, :1], y, config.loss)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        val, ratio = _rms(net, x_val, y_val)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / len(x_train),
                "val_rms": val,
                "val_ratio_to_linear": ratio,
            }
        )
        score = val if config.loss == "mse" else ratio
        if best is None or score < best[0]:
            best = (score, epoch + 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
        elapsed = time.perf_counter() - started
        if progress:
            print(
                f"[train completion] epoch {epoch + 1}/{config.epochs}: train loss "
                f"{total / len(x_train):.5f}, validation RMS {100 * val:.2f} % "
                f"(linear {100 * base:.2f} %), mean RMS ratio to linear {ratio:.3f}, "
                f"{elapsed:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if config.time_budget_s is not None and elapsed > config.time_budget_s:
            break
    assert best is not None
    net.load_state_dict(best[2])
    metadata = {
        "width": config.width,
        "training": config.model_dump(mode="json"),
        "data": "domain-randomised images (emauto.tasks.sparse_scan.domain_images)",
        "history": history,
        "best_epoch": best[1],
        "validation_rms": history[best[1] - 1]["val_rms"],
        "validation_ratio_to_linear": history[best[1] - 1]["val_ratio_to_linear"],
        "validation_rms_linear": base,
        "wall_s": round(time.perf_counter() - started, 1),
        **(extra or {}),
    }
    save(net, metadata, out)
    return CompletionModel(net, metadata)


def _loss(output: torch.Tensor, base: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """``mse``: the pooled mean squared error; ``relative``: each example's squared error
    over its linear reconstruction's (plus 1e-4, an RMS of 1 %), averaged: every example
    counts alike, so noisy images (large errors) do not decide alone and the network
    learns not to spoil what linear already gets right."""
    if kind == "mse":
        return torch.mean((output - y) ** 2)
    network = torch.mean((output - y) ** 2, dim=(1, 2, 3))
    linear = torch.mean((base - y) ** 2, dim=(1, 2, 3))
    return torch.mean(network / (linear + 1e-4))


def _rms(net: CompletionNet, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Pooled RMS of the network over ``x``, and its mean per-example RMS ratio to linear."""
    net.eval()
    errors = []
    ratios = []
    with torch.no_grad():
        for start in range(0, len(x), 32):
            xb, yb = x[start : start + 32], y[start : start + 32]
            squared = torch.sum((xb[:, :1] + net(xb) - yb) ** 2, dim=(1, 2, 3))
            linear = torch.sum((xb[:, :1] - yb) ** 2, dim=(1, 2, 3))
            errors.append(squared.sum())
            ratios.append(torch.sqrt(squared / linear.clamp_min(1e-12)))
    return (
        float(torch.sqrt(torch.stack(errors).sum() / y.numel())),
        float(torch.cat(ratios).mean()),
    )
