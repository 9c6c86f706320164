"""Configuration models of sparse scanning (pydantic v2, ``extra="forbid"``)."""

from __future__ import annotations

from pydantic import Field

from emauto.units import StrictModel

__all__ = ["ScanRLConfig"]


class ScanRLConfig(StrictModel):
    """`emauto train-scan rl`: PPO on `emauto/SparseScan-v0`."""

    total_timesteps: int = Field(default=20_000, ge=1, le=100_000_000)
    n_envs: int = Field(default=4, ge=1, le=64)
    n_steps: int = Field(default=128, ge=8, le=65_536)
    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    seed: int = Field(default=0, ge=0)
    images_per_specimen: int = Field(default=24, ge=1, le=10_000)
    device: str = Field(default="cpu", description="torch device: cpu, cuda, auto")
