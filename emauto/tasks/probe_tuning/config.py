"""Configuration of probe tuning: the env, the estimator's twin data, RL training."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from emauto.optics import KRIVANEK_ALIASES
from emauto.units import StrictModel

#: The knobs of each probe-tuning aberration, in Krivanek Cartesian components.
TUNING_KNOB_GROUPS: dict[str, tuple[str, ...]] = {
    name: KRIVANEK_ALIASES[name] for name in ("C1", "A1", "B2", "A2", "C3", "S3", "A3")
}


class AberrationDistribution(StrictModel):
    """Where a probe-tuning episode starts: offsets from the aligned state, in m.

    Each aberration is drawn uniformly within the disc (or interval, for C1 and C3) of the
    given half-width: ``magnitude ~ U(0, max) `` with a uniform angle for the m > 0 ones.
    """

    C1: float = Field(default=50e-9, ge=0)
    A1: float = Field(default=20e-9, ge=0)
    B2: float = Field(default=300e-9, ge=0)
    A2: float = Field(default=300e-9, ge=0)
    C3: float = Field(default=1e-6, ge=0)
    S3: float = Field(default=0.0, ge=0)
    A3: float = Field(default=0.0, ge=0)


class ProbeTuningConfig(StrictModel):
    """`emauto/ProbeTuning-v0`: correct the probe's aberrations from Ronchigrams."""

    aberrations: tuple[Literal["C1", "A1", "B2", "A2", "C3", "S3", "A3"], ...] = (
        "C1",
        "A1",
        "B2",
        "A2",
    )
    step_limits_m: dict[str, float] = Field(
        default_factory=lambda: {
            "C1": 60e-9,
            "A1": 25e-9,
            "B2": 350e-9,
            "A2": 350e-9,
            "C3": 1.2e-6,
            "S3": 2e-6,
            "A3": 2e-6,
        },
        description="largest change of each aberration's components in one step (m)",
    )
    start: AberrationDistribution = AberrationDistribution()
    convergence_rad: float = Field(default=0.030, gt=0.001, lt=0.1)
    success_strehl: float = Field(default=0.8, gt=0, lt=1)
    max_steps: int = Field(default=12, ge=1, le=1000)
    observation_size: int = Field(default=64, ge=64, le=512)
    observation_margin: float = Field(
        default=1.15, ge=1.0, le=10.0, description="field of view: this x the aperture angle"
    )
    history_length: int = Field(default=4, ge=1, le=64)
    exposure_s: tuple[float, float] = Field(
        default=(2e-3, 2e-2), description="exposure range (s), log-uniform: randomised dose"
    )
    max_measurement_exposure_s: float | None = Field(
        default=None,
        gt=0,
        le=10.0,
        description=(
            "auto-exposure of the probe-shift measurements of shift, cnn_shift, bo, simplex "
            "and rl_belief: frames too noisy to measure on are retaken up to this "
            "exposure (s), more dose; None: the episode's exposure (matched dose)"
        ),
    )
    lens_wait_s: float = Field(
        default=0.1, ge=0, le=60, description="wait after moving the knobs, before exposing"
    )
    max_probe_offset_m: float = Field(
        default=100e-9, ge=0, description="the specimen region: random parked probe position"
    )
    reward: Literal["strehl", "wavefront", "estimator"] = Field(
        default="strehl",
        description=(
            "strehl: change of the twin's true Strehl ratio; wavefront: change of "
            "-ln(true phase variance + 0.01) / ln(100), dense where the Strehl ratio is flat; "
            "estimator: Strehl ratio predicted from the Ronchigrams (hardware)"
        ),
    )
    step_penalty: float = Field(default=0.05, ge=0)
    success_bonus: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ProbeTuningConfig:
        missing = [name for name in self.aberrations if name not in self.step_limits_m]
        if missing:
            raise ValueError(f"step_limits_m has no entry for {missing}")
        unknown = sorted(set(self.step_limits_m) - set(TUNING_KNOB_GROUPS))
        if unknown:
            raise ValueError(f"step_limits_m: unknown aberration(s) {unknown}")
        if len(set(self.aberrations)) != len(self.aberrations) or not self.aberrations:
            raise ValueError("aberrations must be a non-empty list without repeats")
        low, high = self.exposure_s
        if not 0 < low <= high:
            raise ValueError(f"exposure_s must be 0 < low <= high, got {self.exposure_s}")
        if self.observation_size % 2:
            raise ValueError("observation_size must be even")
        return self

    def knobs(self) -> tuple[str, ...]:
        """The microscope knobs the action moves, in action order."""
        return tuple(knob for name in self.aberrations for knob in TUNING_KNOB_GROUPS[name])

    def step_limits(self) -> tuple[float, ...]:
        """The largest step of each knob (m), in action order."""
        return tuple(
            self.step_limits_m[name] for name in self.aberrations for _ in TUNING_KNOB_GROUPS[name]
        )


class EstimatorDataConfig(StrictModel):
    """Twin data for the Ronchigram estimator: pairs of frames with a known knob change.

    Each sample starts from the aligned state detuned by ``start`` as configured
    (``start_fraction`` of the samples), scaled by one common factor in ``joint_scale_range``
    (``joint_scale_fraction``: a nearly aligned probe, where the fine work is) or scaled per
    aberration by a log-uniform factor in ``scale_range``; ``unscaled_groups`` are never
    scaled. It takes a frame (after an optional over-focus step, ``pre_probe_fraction``),
    changes the knobs, takes a second frame. The change is a pure defocus step of log-uniform
    size (``defocus_probe_fraction``), a correction towards the aligned state that leaves a
    random residual (``correction_fraction``), or a random action.
    """

    samples: int = Field(default=24_000, ge=1, le=10_000_000)
    chunk: int = Field(default=500, ge=1, le=100_000, description="samples per Dask task")
    seed: int = Field(default=0, ge=0)
    specimen: str = "amorphous_carbon"
    tuning: ProbeTuningConfig = ProbeTuningConfig(
        aberrations=("C1", "A1", "B2", "A2", "C3"), max_steps=1000
    )
    scale_range: tuple[float, float] = (0.01, 1.3)
    start_fraction: float = Field(
        default=0.0, ge=0, le=1, description="samples that start from `start` unscaled"
    )
    unscaled_groups: tuple[Literal["C1", "A1", "B2", "A2", "C3", "S3", "A3"], ...] = Field(
        default=(), description="aberrations never scaled down (those no policy corrects)"
    )
    joint_scale_fraction: float = Field(default=0.4, ge=0, le=1)
    joint_scale_range: tuple[float, float] = (0.003, 0.3)
    defocus_probe_m: tuple[float, float] = Field(
        default=(2e-9, 60e-9), description="size range of the pure defocus step (m), log-uniform"
    )
    defocus_probe_fraction: float = Field(default=0.35, ge=0, le=1)
    defocus_probe_positive_fraction: float = Field(
        default=0.5, ge=0, le=1, description="share of defocus steps towards over-focus (+C1)"
    )
    correction_fraction: float = Field(default=0.35, ge=0, le=1)
    pre_probe_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="samples with an over-focus step before the pair's first frame, so both "
        "frames are out of focus and show the same specimen features (a defocus pair)",
    )
    pre_probe_m: tuple[float, float] = Field(
        default=(3e-8, 6e-8), description="size range of that step (m), log-uniform"
    )
    correction_residual_range: tuple[float, float] = Field(
        default=(0.005, 0.3), description="residual after a correction, x start width"
    )

    @model_validator(mode="after")
    def _consistent(self) -> EstimatorDataConfig:
        if self.defocus_probe_fraction + self.correction_fraction > 1:
            raise ValueError("defocus_probe_fraction + correction_fraction must be <= 1")
        if self.start_fraction + self.joint_scale_fraction > 1:
            raise ValueError("start_fraction + joint_scale_fraction must be <= 1")
        for name in (
            "scale_range",
            "joint_scale_range",
            "defocus_probe_m",
            "pre_probe_m",
            "correction_residual_range",
        ):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be 0 < low <= high, got {(low, high)}")
        return self


class RLTrainingConfig(StrictModel):
    """`emauto train --task probe-tuning`: stable-baselines3 on `emauto/ProbeTuning-v0`."""

    algo: Literal["ppo", "sac"] = "ppo"
    total_timesteps: int = Field(default=60_000, ge=1, le=100_000_000)
    n_envs: int = Field(default=4, ge=1, le=256)
    vec_env: Literal["dummy", "subproc"] = "dummy"
    seed: int = Field(default=0, ge=0)
    microscope: str = "sim://"
    env: ProbeTuningConfig = ProbeTuningConfig()
    features: Literal["estimator", "cnn"] = Field(
        default="estimator",
        description="estimator: the frozen CNN estimator's outputs; cnn: SB3's NatureCNN",
    )
    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    n_steps: int = Field(default=256, ge=2, description="PPO: steps per env per update")
    batch_size: int = Field(default=128, ge=2)
    gamma: float = Field(default=0.95, gt=0, le=1)
    net_arch: tuple[int, ...] = (128, 128)
    eval_freq: int = Field(default=5_000, ge=1, description="timesteps between evaluations")
    eval_episodes: int = Field(default=20, ge=1)
    checkpoint_freq: int = Field(default=20_000, ge=1, description="timesteps per checkpoint")
    tensorboard: bool = False
    device: str = "cpu"
    record_dir: Path | None = Field(
        default=None, description="record every env into a session under this folder"
    )
