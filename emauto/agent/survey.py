"""``acquire_image``: the plan step that takes one scanned-detector image."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from emauto.microscope import ImageRequest, Microscope, RasterScan
from emauto.tasks.steps import StepContext
from emauto.units import StrictModel


class SurveyTask(StrictModel):
    """Acquire one scanned-detector image (a survey or a high-resolution frame)."""

    kind: Literal["acquire_image"] = "acquire_image"
    name: str = "survey"
    detector: str = "adf"
    shape: tuple[Annotated[int, Field(ge=8, le=4096)], Annotated[int, Field(ge=8, le=4096)]] = (
        256,
        256,
    )
    fov_m: float = Field(default=8e-9, gt=0)
    dwell_s: float = Field(default=4e-6, gt=0)

    def provenance(self, policy_folders: Mapping[str, Path] | None = None) -> None:
        """No policy, no weights."""
        return None

    def run(self, scope: Microscope, context: StepContext) -> dict[str, Any]:
        """Set the field of view and dwell time, take the image."""
        context.report(0, 1)
        scope.set({"scan_fov": self.fov_m, "scan_dwell": self.dwell_s})
        frame = scope.acquire(
            ImageRequest(detector=self.detector, scan=RasterScan(shape=self.shape))
        )
        context.report(1, 1)
        return {
            "task": self.name,
            "kind": self.kind,
            "shape": list(frame.data.shape),
            "dose_e": frame.dose_e,
            "duration_s": frame.duration_s,
        }
