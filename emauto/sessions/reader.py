"""Open a recorded session: its documents, steps and frames.

A session folder is untrusted input: opening checks every document, reads within
`~emauto.sessions.files.ReaderLimits`, follows no symlink inside the folder and writes
nothing (a torn last line is left out; ``repair=True`` cuts it off the file). Damage raises
`SessionCorruptError` (or its `SessionFormatError` for what the recorder never writes) naming
the file, the line and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from emauto.errors import SessionCorruptError, SessionFormatError
from emauto.microscope import Frame, MicroscopeDescription, MicroscopeState
from emauto.sessions.files import DEFAULT_LIMITS, ReaderLimits, SessionFolder
from emauto.sessions.store import DOCUMENTS, FrameReader, first_error, read_documents


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


#: The kinds of a primary event and the exit statuses of a stop document.
STEP_KINDS = ("set", "acquire", "safe", "rejected")
EXIT_STATUSES = ("success", "abort", "fail")
#: The event streams a session may hold (``operator``: the daemon's hand-offs).
STREAMS = ("primary", "episode", "operator")
OPERATOR_KEYS = ("task", "kind", "question_id", "text", "choice")
_MAX_ACTION_LENGTH = 256  # numbers in an episode step's action


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Session:
    """A session folder written by `SessionRecorder`, read as untrusted input.

    Opening reads and checks every document (`SessionFormatError` for one that is not what
    the recorder writes, `SessionCorruptError` for other damage), within ``limits``; frames are
    read on demand, bounded the same way. Nothing below ``path`` is followed if it is a
    symlink, and nothing is written: a torn last line (a crash mid-write) is left out and
    counted in ``torn_bytes``, and cut off the file only when ``repair`` is asked for.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        repair: bool = False,
        limits: ReaderLimits = DEFAULT_LIMITS,
    ) -> None:
        self.path = Path(path)
        self.limits = limits
        self._folder = SessionFolder(self.path)
        documents, self.torn_bytes = read_documents(self._folder, repair=repair, limits=limits)
        log = self.path / DOCUMENTS
        if not documents or documents[0][0] != "start":
            raise SessionCorruptError(
                f"{log}: the first document must be 'start', got "
                f"{documents[0][0] if documents else 'nothing'}"
            )
        self.start: dict[str, Any] = documents[0][1]
        try:
            self.description = MicroscopeDescription.model_validate(self.start["description"])
            self.initial_state = MicroscopeState.model_validate(self.start["initial_state"])
        except KeyError as exc:
            raise SessionFormatError(f"{log}: line 1 (start) has no {exc}") from exc
        except ValidationError as exc:
            raise SessionFormatError(f"{log}: line 1 (start): {first_error(exc)}") from exc
        self.stop: dict[str, Any] | None = None
        streams: dict[str, str] = {}
        self.steps: list[Step] = []
        self.episode: list[EpisodeStep] = []
        #: the daemon's questions to its operator and the answers (hand-offs), in order
        self.operator: list[dict[str, Any]] = []
        for number, (name, doc) in enumerate(documents[1:], start=2):
            try:
                if self.stop is not None:
                    raise ValueError("a document after the stop document")
                if name == "descriptor":
                    uid, stream = doc.get("uid"), doc.get("name")
                    if not isinstance(uid, str) or stream not in STREAMS:
                        raise ValueError(f"expected a uid and a name in {list(STREAMS)}")
                    streams[uid] = stream
                elif name == "event":
                    descriptor, data = doc.get("descriptor"), doc.get("data")
                    if not isinstance(descriptor, str) or descriptor not in streams:
                        raise ValueError(f"no descriptor {str(descriptor)[:80]!r} before it")
                    if not isinstance(data, dict):
                        raise ValueError("its data is not a mapping")
                    self._add_event(streams[descriptor], data)
                elif name == "stop":
                    if doc.get("exit_status") not in EXIT_STATUSES:
                        raise ValueError(f"exit_status must be one of {list(EXIT_STATUSES)}")
                    if not isinstance(doc.get("reason", ""), str):
                        raise ValueError("reason must be text")
                    self.stop = doc
                else:
                    raise ValueError(f"unknown document type {name[:80]!r}")
            except (KeyError, TypeError, ValueError, RecursionError) as exc:
                raise SessionFormatError(
                    f"{log}: line {number} ({name[:80]}) is malformed: {str(exc)[:300]}"
                ) from exc
        self._frames = FrameReader(self._folder, limits)

    def _add_event(self, stream: str, data: dict[str, Any]) -> None:
        if stream == "primary":
            self.steps.append(self._step(data))
        elif stream == "operator":
            if data.get("kind") not in ("question", "answer", "label"):
                raise ValueError("an operator event is a 'question', an 'answer' or a 'label'")
            if not all(isinstance(data.get(k), str) for k in ("task", "text", "choice")):
                raise ValueError("an operator event's task, text and choice are text")
            if not isinstance(data.get("question_id"), int):
                raise ValueError("an operator event's question_id is an integer")
            self.operator.append({k: data[k] for k in OPERATOR_KEYS})
        else:
            action = data["action"]
            if not isinstance(action, list) or not 1 <= len(action) <= _MAX_ACTION_LENGTH:
                raise ValueError(f"an episode action is 1 to {_MAX_ACTION_LENGTH} numbers")
            if not all(_number(a) for a in action):
                raise ValueError("an episode action holds numbers only")
            for key in ("reward", "strehl"):
                if not _number(data[key]):
                    raise ValueError(f"{key} must be a number")
            if not isinstance(data["task"], str):
                raise ValueError("task must be text")
            if not isinstance(data["terminated"], bool) or not isinstance(data["truncated"], bool):
                raise ValueError("terminated and truncated must be booleans")
            self.episode.append(
                EpisodeStep(
                    task=data["task"],
                    action=np.asarray(action, dtype=np.float32),
                    reward=float(data["reward"]),
                    terminated=data["terminated"],
                    truncated=data["truncated"],
                    strehl=float(data["strehl"]),
                )
            )

    def _step(self, data: dict[str, Any]) -> Step:
        """One primary event, checked: what the recorder writes, nothing else."""
        kind, task, error, frame = data["kind"], data["task"], data["error"], data["frame"]
        if kind not in STEP_KINDS:
            raise ValueError(f"kind must be one of {list(STEP_KINDS)}, got {str(kind)[:80]!r}")
        if not all(isinstance(v, str) for v in (task, error, frame)):
            raise ValueError("task, error and frame must be text")
        if frame and (not frame.isascii() or not frame.isdigit() or len(frame) > 12):
            raise ValueError(f"frame {frame[:80]!r} is not a step number")
        if kind == "acquire" and not frame:
            raise ValueError("an acquisition without its frame")
        text = data["action"]
        if not isinstance(text, str) or len(text) > self.limits.max_action_bytes:
            raise ValueError(f"action must be JSON text of at most {self.limits.max_action_bytes}")
        action = json.loads(text)
        if not isinstance(action, dict):
            raise ValueError("action must be a JSON object")
        if kind == "set" and not (
            isinstance(action.get("set"), dict) and all(_number(v) for v in action["set"].values())
        ):
            raise ValueError("a set action maps knob names to numbers")
        if kind == "acquire" and not (
            isinstance(action.get("acquire"), dict)
            and action["acquire"].get("kind") in ("ronchigram", "image")
        ):
            raise ValueError("an acquire action holds the request with its kind")
        for key, value in data.items():
            if not isinstance(key, str):
                raise ValueError("data keys must be text")
            numeric = key.startswith(("state_", "truth_")) or key in ("dose_e", "time_s")
            if numeric and value is not None and not _number(value):
                raise ValueError(f"{key[:80]} must be a number or null")
        if not isinstance(data["beam_blanked"], bool):
            raise ValueError("beam_blanked must be a boolean")
        if "dose_e" not in data or "time_s" not in data:
            raise KeyError("dose_e and time_s")
        return Step(
            seq=len(self.steps),
            kind=kind,
            task=task,
            action=action,
            error=error,
            frame_key=frame,
            data=data,
        )

    # ------------------------------------------------------------------ queries

    @property
    def complete(self) -> bool:
        """Whether the run ended with a stop document (False after a crash)."""
        return self.stop is not None

    @property
    def exit_status(self) -> str:
        """``success``, ``abort``, ``fail``, or ``incomplete`` without a stop document."""
        return str(self.stop["exit_status"]) if self.stop else "incomplete"

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
