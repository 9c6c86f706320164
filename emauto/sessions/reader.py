"""Open a recorded session: its documents, steps and frames.

Opening repairs a torn last line (a crash mid-write) by default; any other damage raises
`SessionCorruptError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from emauto.errors import SessionCorruptError
from emauto.microscope import Frame, MicroscopeDescription, MicroscopeState
from emauto.sessions.store import DOCUMENTS, FRAMES, FrameStore, read_documents


@dataclass(frozen=True)
class Step:
    """One recorded microscope step (an event of the primary stream)."""

    seq: int
    kind: str
    task: str
    action: dict[str, Any]
    error: str
    frame_key: str
    data: dict[str, Any]

    def knob(self, name: str) -> float:
        """The knob's value after this step (SI), NaN if not recorded."""
        value = self.data.get(f"state_{name}")
        return float("nan") if value is None else float(value)

    def truth(self, name: str = "strehl") -> float:
        """The twin's ground truth after this step (``strehl`` or an aberration, m); NaN if
        the backend had none."""
        value = self.data.get(f"truth_{name}")
        return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class EpisodeStep:
    """One recorded environment step (an event of the episode stream)."""

    task: str
    action: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    strehl: float


class Session:
    """A session folder written by `SessionRecorder`."""

    def __init__(self, path: str | Path, *, repair: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SessionCorruptError(f"{self.path}: no such session folder")
        documents, self.torn_bytes = read_documents(self.path / DOCUMENTS, repair=repair)
        if not documents or documents[0][0] != "start":
            raise SessionCorruptError(
                f"{self.path / DOCUMENTS}: the first document must be 'start', got "
                f"{documents[0][0] if documents else 'nothing'}"
            )
        self.start: dict[str, Any] = documents[0][1]
        self.stop: dict[str, Any] | None = None
        streams: dict[str, str] = {}
        self.steps: list[Step] = []
        self.episode: list[EpisodeStep] = []
        for number, (name, doc) in enumerate(documents[1:], start=2):
            try:
                if name == "descriptor":
                    streams[doc["uid"]] = doc["name"]
                elif name == "event":
                    self._add_event(streams[doc["descriptor"]], doc)
                elif name == "stop":
                    self.stop = doc
                else:
                    raise KeyError(f"unknown document type {name!r}")
            except (KeyError, TypeError, ValueError) as exc:
                raise SessionCorruptError(
                    f"{self.path / DOCUMENTS}: line {number} ({name}) is malformed: {exc}"
                ) from exc
        self._frames = FrameStore(self.path / FRAMES)

    def _add_event(self, stream: str, doc: dict[str, Any]) -> None:
        data = doc["data"]
        if stream == "primary":
            self.steps.append(
                Step(
                    seq=len(self.steps),
                    kind=str(data["kind"]),
                    task=str(data["task"]),
                    action=json.loads(data["action"]),
                    error=str(data["error"]),
                    frame_key=str(data["frame"]),
                    data=data,
                )
            )
        elif stream == "episode":
            self.episode.append(
                EpisodeStep(
                    task=str(data["task"]),
                    action=np.asarray(data["action"], dtype=np.float32),
                    reward=float(data["reward"]),
                    terminated=bool(data["terminated"]),
                    truncated=bool(data["truncated"]),
                    strehl=float(data["strehl"]),
                )
            )
        else:
            raise KeyError(f"unknown stream {stream!r}")

    # ------------------------------------------------------------------ queries

    @property
    def complete(self) -> bool:
        """Whether the run ended with a stop document (False after a crash)."""
        return self.stop is not None

    @property
    def exit_status(self) -> str:
        """``success``, ``abort``, ``fail``, or ``incomplete`` without a stop document."""
        return str(self.stop["exit_status"]) if self.stop else "incomplete"

    @cached_property
    def description(self) -> MicroscopeDescription:
        """The backend's description when recording started."""
        return MicroscopeDescription.model_validate(self.start["description"])

    @cached_property
    def initial_state(self) -> MicroscopeState:
        """The backend's state when recording started."""
        return MicroscopeState.model_validate(self.start["initial_state"])

    def frame(self, step: Step) -> Frame:
        """The frame a step acquired (`SessionCorruptError` if it has none or it is gone)."""
        if not step.frame_key:
            raise SessionCorruptError(f"step {step.seq} ({step.kind}) has no frame")
        return self._frames.read(step.frame_key)

    def acquisitions(self, task: str | None = None) -> list[Step]:
        """The steps that took a frame, optionally of one task only."""
        return [s for s in self.steps if s.kind == "acquire" and (task is None or s.task == task)]

    def tasks(self) -> list[str]:
        """Task names in the order they first appear."""
        return list(dict.fromkeys(s.task for s in self.steps))
