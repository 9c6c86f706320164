"""What a step of the daemon's plan gets from the daemon while it runs.

A plan step is a pydantic model with a ``kind`` literal (its name in the daemon's registry,
`emauto.agent.plans.STEP_KINDS`) and ``run(scope, context) -> dict``; ``provenance()`` says
which policy and weights it uses, for the session's start document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from emauto.sessions.recorder import SessionRecorder


@dataclass
class StepContext:
    """The session being written, whether to show progress, and where to report it."""

    recorder: SessionRecorder
    progress: bool
    #: ``report(done, total)``: frames acquired so far and frames planned (``ctl status``).
    report: Callable[[int, int], None]
    #: The daemon configuration's own trained policy folders, by name (a plan step names one
    #: of these, never a path).
    policy_folders: Mapping[str, Path] = field(default_factory=dict)
