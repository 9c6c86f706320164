"""The daemon's ``calibrate`` plan step: record the calibration plan into the session.

Registered once in `emauto.agent.plans.STEP_KINDS`. After the daemon's run, ``emauto
calibrate SESSION --out sim.yaml`` fits the session (one ``calibrate`` step per session: a
second one's frames would carry the same labels).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from emauto.calibration.plan import CalibrationPlan, run_calibration_plan
from emauto.microscope import Microscope
from emauto.tasks.steps import StepContext
from emauto.units import StrictModel


def planned_frames(plan: CalibrationPlan, knobs: Mapping[str, Any]) -> int:
    """How many frames ``plan`` takes on a microscope with these knobs."""
    axes = sum(1 for k in plan.sign_steps_m if k in knobs)
    return (
        2 * plan.flat_frames
        + 5
        + len(plan.drift_waits_s)
        + 1
        + 6 * len(plan.lag_delays_s)
        + 6 * axes
        + plan.flat_field_grid**2
    )


class CalibrateTask(StrictModel):
    """Record the calibration plan (`CalibrationPlan`) for `emauto calibrate`."""

    kind: Literal["calibrate"] = "calibrate"
    name: str = "calibrate"
    plan: CalibrationPlan = Field(default_factory=CalibrationPlan)

    def provenance(self, policy_folders: Mapping[str, Path] | None = None) -> None:
        """No policy, no weights."""
        return None

    def run(self, scope: Microscope, context: StepContext) -> dict[str, Any]:
        """Run the plan on ``scope``, each call labelled in the session being written."""
        recorder = context.recorder
        previous = recorder.task
        total = planned_frames(self.plan, scope.describe().knobs)
        context.report(0, total)

        def label(role: str) -> None:
            recorder.task = role

        try:
            frames = run_calibration_plan(
                scope, self.plan, label, lambda done: context.report(done, total)
            )
        finally:
            recorder.task = previous
        return {"task": self.name, "kind": self.kind, "frames": frames}
