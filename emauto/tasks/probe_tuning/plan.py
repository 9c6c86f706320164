"""``align_probe``: the probe-tuning step of the daemon's plan, and reading it back from a
session (replay, Minari export)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field
from tqdm import tqdm

from emauto.errors import SessionError
from emauto.microscope import Microscope
from emauto.models.weights import file_digest
from emauto.sessions.reader import Session
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.policies.registry import METHODS
from emauto.tasks.steps import StepContext
from emauto.units import StrictModel
from emauto.version import __version__

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
    policy_path: str | None = Field(default=None, description="an SB3 policy folder for 'rl'")
    max_acquisitions: int = Field(default=61, ge=2, le=10_000)
    detune: bool = False
    seed: int = Field(default=0, ge=0)
    env: ProbeTuningConfig = Field(default_factory=ProbeTuningConfig)

    def provenance(self) -> dict[str, str]:
        """The policy's name, emauto's version and digests of its weights, for the record."""
        from emauto.tasks.probe_tuning.policies.factories import weights_used

        version = {"policy": self.policy, "emauto": __version__}
        for role, path in weights_used(self.policy, self.policy_path).items():
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
        policy = make_policy(self.policy, env, seed=self.seed, policy_path=self.policy_path)
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


def alignment_tasks(session: Session) -> list[AlignProbeTask]:
    """The recorded session's probe-alignment tasks, as they were configured."""
    tasks = [
        AlignProbeTask.model_validate(task)
        for task in session.start.get("plan", [])
        if task.get("kind") == "align_probe" and task["name"] in session.tasks()
    ]
    if not tasks:
        raise SessionError(f"{session.path}: no recorded probe-alignment task to replay")
    return tasks
