"""What the daemon does: a plan of tasks, validated like every config (`emauto.units.load_yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.policies.registry import METHODS

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
PolicyName = Literal["shift", "cnn", "cnn_shift", "bo", "simplex", "rl", "random"]
assert set(PolicyName.__args__) == set(METHODS)  # type: ignore[attr-defined]


class AlignProbeTask(BaseModel):
    """Correct the probe's aberrations with a tuning policy (`ProbeTuning-v0` underneath).

    ``detune`` first detunes the probe by random aberrations from ``env.start`` (a twin demo
    or a test); on a real microscope leave it False to tune from where the probe is.
    """

    model_config = _STRICT
    kind: Literal["align_probe"] = "align_probe"
    name: str = "align_probe"
    policy: PolicyName = "shift"
    policy_path: str | None = Field(default=None, description="an SB3 policy folder for 'rl'")
    max_acquisitions: int = Field(default=61, ge=2, le=10_000)
    detune: bool = False
    seed: int = Field(default=0, ge=0)
    env: ProbeTuningConfig = Field(default_factory=ProbeTuningConfig)


class SurveyTask(BaseModel):
    """Acquire one scanned-detector image (a survey or a high-resolution frame)."""

    model_config = _STRICT
    kind: Literal["acquire_image"] = "acquire_image"
    name: str = "survey"
    detector: str = "adf"
    shape: tuple[Annotated[int, Field(ge=8, le=4096)], Annotated[int, Field(ge=8, le=4096)]] = (
        256,
        256,
    )
    fov_m: float = Field(default=8e-9, gt=0)
    dwell_s: float = Field(default=4e-6, gt=0)


Task = Annotated[AlignProbeTask | SurveyTask, Field(discriminator="kind")]


class DaemonConfig(BaseModel):
    """``emauto daemon --config FILE``: where to connect, what to run, where to record."""

    model_config = _STRICT
    microscope: str = "sim://"
    plan: tuple[Task, ...] = Field(default=(AlignProbeTask(), SurveyTask()), min_length=1)
    sessions: Path = Path("sessions")
    control: str = Field(
        default="tcp://127.0.0.1:5580", description="the control socket (loopback only)"
    )
    heartbeat_s: float | None = Field(default=0.5, gt=0, description="tcp:// heartbeat")

    @model_validator(mode="after")
    def _checks(self) -> DaemonConfig:
        names = [task.name for task in self.plan]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        if not self.control.startswith(("tcp://127.0.0.1:", "tcp://localhost:", "ipc://")):
            raise ValueError(
                f"control must be a loopback tcp://127.0.0.1:PORT or ipc:// address, "
                f"got {self.control!r}"
            )
        return self
