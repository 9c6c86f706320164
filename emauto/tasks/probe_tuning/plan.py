"""``align_probe``: the probe-tuning step of the daemon's plan, and reading it back from a
session (replay, Minari export).

A plan step never names a file to load: a plan may come from elsewhere (another machine,
a recorded session) and loading a policy folder runs its network. A step with ``policy: rl``
runs the shipped policy, or the trained folder the DAEMON's own configuration lists under
``policy_folders: {NAME: PATH}``, chosen by ``policy_folder: NAME``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator
from tqdm import tqdm

from emauto.errors import PolicySourceError, SessionError
from emauto.microscope import Microscope
from emauto.models.weights import file_digest
from emauto.sessions.reader import Session
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.policies.registry import METHODS
from emauto.tasks.steps import StepContext
from emauto.units import StrictModel
from emauto.version import __version__

#: A name in the daemon config's ``policy_folders`` (not a path: no slash, no leading dot).
POLICY_FOLDER_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
LEGACY_PATH_MESSAGE = (
    "policy_path is no longer accepted in a plan step: a plan (from a file, the wire or a "
    "recorded session) never names a folder to load. List the folder in the daemon config "
    "(policy_folders: {NAME: PATH}) and write policy_folder: NAME in the step"
)

if TYPE_CHECKING:
    PolicyName = str
else:  # the registry's names, as a literal: the schema lists them, a typo fails validation
    PolicyName = Literal[METHODS]


class AlignProbeTask(StrictModel):
    """Correct the probe's aberrations with a tuning policy (`ProbeTuning-v0` underneath).

    ``detune`` first detunes the probe by random aberrations from ``env.start`` (a twin demo
    or a test); on a real microscope leave it False to tune from where the probe is.
    """

    kind: Literal["align_probe"] = "align_probe"
    name: str = "align_probe"
    policy: PolicyName = "shift"
    policy_folder: str | None = Field(
        default=None,
        pattern=POLICY_FOLDER_NAME,
        description="for 'rl', 'rl_decide', 'handoff': the NAME of a trained policy folder in "
        "the daemon config's policy_folders (default: the shipped policy); never a path",
    )
    max_acquisitions: int = Field(default=61, ge=2, le=10_000)
    detune: bool = False
    seed: int = Field(default=0, ge=0)
    env: ProbeTuningConfig = Field(default_factory=ProbeTuningConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_paths(cls, data: Any) -> Any:
        if isinstance(data, dict) and "policy_path" in data:
            if data["policy_path"] is not None:
                raise ValueError(LEGACY_PATH_MESSAGE)
            data = {k: v for k, v in data.items() if k != "policy_path"}  # old files: null
        return data

    @model_validator(mode="after")
    def _folder_for_rl(self) -> AlignProbeTask:
        from emauto.tasks.probe_tuning.policies.factories import reads_policy_folder

        if self.policy_folder is not None and not reads_policy_folder(self.policy):
            raise ValueError(
                f"policy_folder is for 'rl', 'rl_decide' and 'handoff', not {self.policy!r}"
            )
        return self

    def local_policy_folder(self, policy_folders: Mapping[str, Path] | None = None) -> str | None:
        """The local folder of ``policy_folder`` in the daemon's ``policy_folders`` (None: the
        shipped policy); `PolicySourceError` if the daemon does not list it."""
        if self.policy_folder is None:
            return None
        folders = policy_folders or {}
        if self.policy_folder not in folders:
            raise PolicySourceError(
                f"task {self.name!r} names the policy folder {self.policy_folder!r}, which the "
                f"daemon's configuration does not list (policy_folders: {sorted(folders)}); a "
                "plan never names a path: add NAME: PATH under policy_folders in the daemon "
                "config"
            )
        return str(folders[self.policy_folder])

    def provenance(self, policy_folders: Mapping[str, Path] | None = None) -> dict[str, str]:
        """The policy's name, emauto's version and digests of its weights, for the record."""
        from emauto.tasks.probe_tuning.policies.factories import weights_used

        version = {"policy": self.policy, "emauto": __version__}
        if self.policy_folder is not None:
            version["policy_folder"] = self.policy_folder
        for role, path in weights_used(
            self.policy, self.local_policy_folder(policy_folders)
        ).items():
            version[f"{role}_sha256"] = file_digest(path)[:16]
        return version

    def run(self, scope: Microscope, context: StepContext) -> dict[str, Any]:
        """Run one episode of the policy on ``scope``; the outcome as a JSON-able dict."""
        from emauto.tasks.probe_tuning.env import ProbeTuningEnv
        from emauto.tasks.probe_tuning.policies.base import run_episode
        from emauto.tasks.probe_tuning.policies.registry import make_policy
        from emauto.wrappers.counting import CountingMicroscope

        counter = CountingMicroscope(scope)
        config = self.env.model_copy(update={"max_steps": self.max_acquisitions})
        env = ProbeTuningEnv(counter, config)
        path = self.local_policy_folder(context.policy_folders)
        policy = make_policy(self.policy, env, seed=self.seed, policy_path=path)
        options = None if self.detune else {"offsets": dict.fromkeys(env.reference, 0.0)}
        context.report(0, self.max_acquisitions)
        bar = tqdm(
            total=self.max_acquisitions,
            desc=f"{self.name} ({self.policy})",
            unit="frame",
            file=sys.stderr,
            disable=not context.progress,
        )

        def on_step(
            action: np.ndarray, reward: float, terminated: bool, truncated: bool, info: Any
        ) -> None:
            context.recorder.record_episode_step(
                action, reward, terminated, truncated, info["strehl"]
            )
            context.report(counter.acquisitions, self.max_acquisitions)
            bar.update(counter.acquisitions - bar.n)
            bar.set_postfix(strehl=f"{info['strehl']:.2f}")

        try:
            result = run_episode(
                env,
                policy,
                seed=self.seed,
                counter=counter,
                max_acquisitions=self.max_acquisitions,
                on_step=on_step,
                options=options,
            )
        finally:
            bar.close()
            close = getattr(policy, "close", None)  # e.g. the simplex's ask/tell thread
            if callable(close):
                close()
        return {
            "task": self.name,
            "kind": self.kind,
            "policy": self.policy,
            "declared_aligned": result.declared_aligned,
            "needs_operator": result.needs_operator,
            "confidence": result.confidence,
            "ended_by": result.ended_by,
            "acquisitions": result.acquisitions,
            # ground truth, on a twin only: scored after the episode, never used to steer it
            "success": result.success,
            "start_strehl": result.strehl_path[0],
            "final_strehl": result.final_strehl,
            "dose_e": result.dose_e,
            "wall_s": round(result.wall_s, 3),
        }


def _recorded_steps(session: Session) -> list[dict[str, Any]]:
    return [
        task
        for task in session.start.get("plan", [])
        if isinstance(task, dict)
        and task.get("kind") == "align_probe"
        and task.get("name") in session.tasks()
    ]


def alignment_tasks(session: Session) -> list[AlignProbeTask]:
    """The recorded session's probe-alignment tasks, as they were configured (a policy
    folder a session of an older emauto recorded by path is left out: see
    `recorded_policy_source`)."""
    from emauto.units import validate_model

    tasks = [
        validate_model(
            {k: v for k, v in task.items() if k != "policy_path"},
            AlignProbeTask,
            source=f"{session.path}: plan step {task.get('name')!r}",
        )
        for task in _recorded_steps(session)
    ]
    if not tasks:
        raise SessionError(f"{session.path}: no recorded probe-alignment task to replay")
    return tasks


def recorded_policy_source(session: Session, task_name: str) -> str | None:
    """The trained policy folder (a name, or a path recorded by an older emauto) the session
    says task ``task_name`` ran; None for the shipped policy. Never loaded: for messages."""
    for task in _recorded_steps(session):
        if task.get("name") == task_name:
            source = task.get("policy_folder") or task.get("policy_path")
            return str(source) if source is not None else None
    return None
