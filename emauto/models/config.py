"""Configuration of the models' training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from emauto.units import StrictModel


class EstimatorTrainingConfig(StrictModel):
    """Training the Ronchigram estimator (torch, CPU by default)."""

    epochs: int = Field(default=12, ge=1, le=10_000)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = Field(default=0, ge=0)
    width: int = Field(default=32, ge=4, le=512, description="channels of the first conv layer")
    arch: Literal["plain", "resnet"] = Field(
        default="plain", description="plain: 4 strided convs; resnet: residual stages"
    )
    device: str = Field(default="cpu", description="torch device: cpu, cuda, cuda:1, ...")
    bf16: bool = Field(default=False, description="bfloat16 autocast (CUDA only)")
    init_weights: str | None = Field(
        default=None, description="start from this estimator file (same arch, width, size)"
    )
    time_budget_s: float | None = Field(
        default=None,
        gt=0,
        description="fewer epochs if the first batches project a longer training (s)",
    )


class CompletionTrainingConfig(StrictModel):
    """`emauto train-scan completion`: the completion network on seed-1 twin images."""

    images_per_specimen: int = Field(default=48, ge=1, le=10_000)
    image_size: int = Field(default=128, ge=32, le=1024)
    samples: int = Field(default=1536, ge=8, le=1_000_000, description="training examples")
    coverages: tuple[float, ...] = Field(
        default=(0.01, 0.02, 0.033, 0.05, 0.08, 0.125), min_length=1
    )
    noise_free_fraction: float = Field(default=0.5, ge=0, le=1)
    dose_range_e: tuple[float, float] = Field(
        default=(50.0, 5000.0), description="Poisson dose, electrons at full intensity"
    )
    epochs: int = Field(default=8, ge=1, le=10_000)
    batch_size: int = Field(default=16, ge=1, le=4096)
    learning_rate: float = Field(default=2e-3, gt=0, le=1)
    width: int = Field(default=16, ge=4, le=256, description="channels of the first level")
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=2, ge=1, le=256)
