"""Configuration models of sparse scanning (pydantic v2, ``extra="forbid"``)."""

from __future__ import annotations

from pydantic import Field

from emauto.units import StrictModel

__all__ = ["CompletionTrainingConfig", "ScanRLConfig"]


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


class ScanRLConfig(StrictModel):
    """`emauto train-scan rl`: PPO on `emauto/SparseScan-v0`."""

    total_timesteps: int = Field(default=20_000, ge=1, le=100_000_000)
    n_envs: int = Field(default=4, ge=1, le=64)
    n_steps: int = Field(default=128, ge=8, le=65_536)
    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    seed: int = Field(default=0, ge=0)
    images_per_specimen: int = Field(default=24, ge=1, le=10_000)
