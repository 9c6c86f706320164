"""Configuration of the models' training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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
    """`emauto train-scan completion`: the completion network on domain-randomised images.

    Training and validation examples are generated images
    (`emauto.tasks.sparse_scan.domain_images`, disjoint seed ranges), each sparse-sampled by
    a random static strategy at a coverage drawn log-uniform from ``coverage_range``,
    noise-free or with Poisson noise at a dose log-uniform in ``dose_range_e``. The
    checkpoint kept is the epoch with the lowest RMS error on the generated validation
    examples (never an image a figure is reported on)."""

    image_size: int = Field(default=96, ge=32, le=1024, description="square examples, px")
    samples: int = Field(default=6144, ge=8, le=1_000_000, description="training examples")
    validation_samples: int = Field(
        default=512, ge=8, le=100_000, description="generated validation examples"
    )
    coverage_range: tuple[float, float] = Field(
        default=(0.007, 0.15), description="coverages drawn log-uniform in this range"
    )
    noise_free_fraction: float = Field(default=0.5, ge=0, le=1)
    dose_range_e: tuple[float, float] = Field(
        default=(50.0, 5000.0), description="Poisson dose, electrons at full intensity"
    )
    epochs: int = Field(default=6, ge=1, le=10_000)
    batch_size: int = Field(default=16, ge=1, le=4096)
    learning_rate: float = Field(default=2e-3, gt=0, le=1)
    width: int = Field(default=16, ge=4, le=256, description="channels of the first level")
    seed: int = Field(default=0, ge=0, le=1000, description="seed block of the examples")
    threads: int = Field(default=2, ge=1, le=256)
    workers: int = Field(
        default=2, ge=1, le=256, description="Dask LocalCluster workers making examples (1: none)"
    )
    chunk: int = Field(default=256, ge=1, le=100_000, description="examples a Dask task")
    time_budget_s: float | None = Field(
        default=None, gt=0, description="stop after the epoch that passes this training time (s)"
    )
    loss: Literal["mse", "relative"] = Field(
        default="relative",
        description="mse: pooled squared error; relative: each example's over linear's",
    )

    @model_validator(mode="after")
    def _ranges(self) -> CompletionTrainingConfig:
        low, high = self.coverage_range
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"coverage_range must satisfy 0 < low <= high <= 1, got {self.coverage_range}"
            )
        low, high = self.dose_range_e
        if not 0 < low <= high:
            raise ValueError(f"dose_range_e must satisfy 0 < low <= high, got {self.dose_range_e}")
        return self
