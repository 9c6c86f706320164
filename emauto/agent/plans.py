"""What the daemon does: a plan of steps, validated like every config (`emauto.units`).

Each kind of step is registered once in `STEP_KINDS` (``kind`` -> its model); the plan's
step type is derived from it. A new task adds one line here and a model with ``kind``,
``run(scope, context)`` and ``provenance()`` (see `emauto.tasks.steps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, StringConstraints, model_validator

from emauto.agent.survey import SurveyTask
from emauto.registry import Registry
from emauto.tasks.probe_tuning.plan import POLICY_FOLDER_NAME, AlignProbeTask
from emauto.units import StrictModel

#: Every kind of plan step, by its ``kind`` literal.
STEP_KINDS = Registry(
    "plan step",
    {
        "align_probe": "emauto.tasks.probe_tuning.plan:AlignProbeTask",
        "acquire_image": "emauto.agent.survey:SurveyTask",
        "calibrate": "emauto.calibration.step:CalibrateTask",
    },
)

if TYPE_CHECKING:
    from emauto.calibration.step import CalibrateTask

    Task = AlignProbeTask | SurveyTask | CalibrateTask
else:  # one model per registered kind, told apart by ``kind``
    Task = Annotated[
        Union[tuple(STEP_KINDS.load(kind) for kind in STEP_KINDS)],  # noqa: UP007
        Field(discriminator="kind"),
    ]

__all__ = [
    "STEP_KINDS",
    "AlignProbeTask",
    "ConsoleConfig",
    "DaemonConfig",
    "PlanRequest",
    "SurveyTask",
    "Task",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ConsoleConfig(StrictModel):
    """The daemon's web console (`emauto.agent.console`).

    Loopback by default. Any other ``host`` needs ``tls_cert`` and ``tls_key`` (HTTPS) and
    an operator token (``token_file``, or the ``EMAUTO_CONSOLE_TOKEN`` environment variable):
    without them the console refuses to start (`ConsoleSecurityError`).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port (printed)")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = Field(
        default=None, description="a file holding the operator token (never the token itself)"
    )

    @property
    def loopback(self) -> bool:
        """Whether the console listens on this machine only."""
        return self.host in LOOPBACK_HOSTS


class PlanRequest(StrictModel):
    """A plan submitted to a running daemon (`emauto ctl submit FILE`, the console)."""

    name: str = Field(default="plan", min_length=1, max_length=64)
    plan: tuple[Task, ...] = Field(min_length=1, max_length=64)


class DaemonConfig(StrictModel):
    """``emauto daemon --config FILE``: where to connect, what to run, where to record."""

    microscope: str = "sim://"
    plan: tuple[Task, ...] = Field(default=(AlignProbeTask(), SurveyTask()), min_length=1)
    sessions: Path = Path("sessions")
    control: str = Field(
        default="tcp://127.0.0.1:5580", description="the control socket (loopback only)"
    )
    heartbeat_s: float | None = Field(default=0.5, gt=0, description="tcp:// heartbeat")
    link_timeout_s: float = Field(
        default=1.5,
        gt=0,
        le=2.0,
        description="tcp://: a link with no heartbeat reply (and no command in flight) for "
        "this long, or whose connection drops, trips the daemon",
    )
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    handoff_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="a hand-off question no one answers within this long is answered 'abort' "
        "by the daemon (None: wait for the operator)",
    )
    policy_folders: dict[Annotated[str, StringConstraints(pattern=POLICY_FOLDER_NAME)], Path] = (
        Field(
            default_factory=dict,
            description="trained policy folders on this machine, by name; a plan step picks "
            "one with policy_folder: NAME (a plan never names a path)",
        )
    )

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
        if self.heartbeat_s is not None and self.heartbeat_s >= self.link_timeout_s:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s} s) must be below link_timeout_s "
                f"({self.link_timeout_s} s)"
            )
        for task in self.plan:  # each policy folder a step names is one this config lists
            if isinstance(task, AlignProbeTask):
                task.local_policy_folder(self.policy_folders)
        return self

    def provenance(self) -> list[dict[str, Any]]:
        """What each step that uses a policy records of it (name, version, weight digests)."""
        found = (task.provenance(self.policy_folders) for task in self.plan)
        return [p for p in found if p is not None]
