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
