"""``replay://SESSION``: a recorded session served as a Microscope.

The replay follows the recording with a cursor. ``set`` checks setpoints against the
recorded description (typed errors, nothing applied on a bad one), applies them to the
replayed state, and notes a `Divergence` when they differ from the next recorded command.
``acquire`` serves the next recorded frame whose request is the same as the one asked for,
skipping recorded frames nobody asks for (e.g. a policy's own measurements when only the
environment's actions are replayed); with none left it raises `ReplayExhaustedError`. An
operator's pause in the recording (the daemon's ``safe``, then ``set beam_blank 0`` on
resume) is not a command of the policy: a replayed ``set`` is never matched against it. The same
calls give the same frames, so a deterministic policy reproduces its run exactly.

A session recorded from a twin also replays the twin's ground truth (`ReplayTwin`): the Strehl
ratio and aberrations recorded at the cursor, which is the truth of the recorded run, valid
as long as the replayed commands do not diverge from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emauto.errors import ClosedError, ConfigError, ReplayExhaustedError
from emauto.microscope import (
    Frame,
    ImageRequest,
    MicroscopeDescription,
    MicroscopeState,
    RonchigramRequest,
    validate_setpoints,
)
from emauto.optics import ABERRATION_NAMES, Aberrations
from emauto.sessions.reader import Session, Step


@dataclass(frozen=True)
class Divergence:
    """Where a replayed command differs from the recorded one (``recorded`` None: the
    recording had no further command of that kind)."""

    step: int | None
    kind: str
    recorded: dict[str, Any] | None
    replayed: dict[str, Any]


def _same(recorded: Mapping[str, Any], replayed: Mapping[str, Any]) -> bool:
    if recorded.keys() != replayed.keys():
        return False
    for key, value in recorded.items():
        other = replayed[key]
        if isinstance(value, float | int) and isinstance(other, float | int):
            if not math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-15):
                return False
        elif value != other:
            return False
    return True


def _is_unblank(step: Step) -> bool:
    """Whether ``step`` is the resume of a pause: a ``set`` of ``beam_blank`` to 0 alone."""
    return step.kind == "set" and step.action == {"set": {"beam_blank": 0.0}}


class ReplayMicroscope:
    """Serve ``session`` (optionally only the steps of ``task``) through the contract."""

    def __init__(self, session: Session | str | Path, task: str | None = None) -> None:
        self.session = session if isinstance(session, Session) else Session(session)
        steps = self.session.steps
        if task is not None:
            if task not in self.session.tasks():
                raise ConfigError(
                    f"{self.session.path}: no task {task!r}; recorded: {self.session.tasks()}"
                )
            first = next(i for i, s in enumerate(steps) if s.task == task)
            self._steps = [s for s in steps if s.task == task]
            before = steps[first - 1] if first > 0 else None
        else:
            self._steps, before = list(steps), None
        recorded = self.session.description
        self._description = recorded.model_copy(update={"backend": f"replay:{recorded.backend}"})
        initial = self.session.initial_state
        knobs = dict(initial.knobs)
        if before is not None:
            knobs = {k: before.knob(k) for k in knobs if not math.isnan(before.knob(k))}
        self._state = initial.model_copy(update={"knobs": knobs})
        # an operator's pause (the daemon's checkpoint): a ``safe``, then on resume
        # ``set beam_blank 0``; not the policy's command, so never matched against one
        self._resumes = {
            index
            for index, step in enumerate(self._steps)
            if index > 0 and self._steps[index - 1].kind == "safe" and _is_unblank(step)
        }
        self._cursor = 0  # index into self._steps of the next step to match
        self._truth_step: Step | None = before
        self.divergences: list[Divergence] = []
        self.served = 0
        self._closed = False

    # ------------------------------------------------------------------ contract

    def describe(self) -> MicroscopeDescription:
        return self._description

    def read(self) -> MicroscopeState:
        self._check_open()
        return self._state

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        self._check_open()
        checked = validate_setpoints(self._description, self._state.knobs, setpoints)
        index = self._next("set", lambda _: True)
        replayed = {"set": checked}
        if index is None:
            self.divergences.append(Divergence(None, "set", None, replayed))
        else:
            step = self._steps[index]
            if not _same(step.action.get("set", {}), checked):
                self.divergences.append(Divergence(step.seq, "set", step.action, replayed))
            self._advance(index)
        knobs = {**self._state.knobs, **checked}
        self._state = self._state.model_copy(update={"knobs": knobs})
        return self._state

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        self._check_open()
        wanted = request.model_dump(mode="json")
        index = self._next("acquire", lambda s: s.action.get("acquire") == wanted)
        if index is None:
            raise ReplayExhaustedError(
                f"{self.session.path}: no recorded frame left for {request.kind} request "
                f"{wanted} after step {self._cursor}"
            )
        step = self._steps[index]
        self._advance(index)
        frame = self.session.frame(step)
        self._state = frame.state.model_copy(update={"knobs": dict(self._state.knobs)})
        self.served += 1
        return frame

    def safe(self) -> None:
        if not self._closed:
            self._state = self._state.model_copy(update={"beam_blanked": True})

    def close(self) -> None:
        self.safe()
        self._closed = True

    def __enter__(self) -> ReplayMicroscope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _next(self, kind: str, matches: Callable[[Step], bool]) -> int | None:
        for index in range(self._cursor, len(self._steps)):
            step = self._steps[index]
            if step.kind == kind and index not in self._resumes and matches(step):
                return index
        return None

    def _advance(self, index: int) -> None:
        self._cursor = index + 1
        self._truth_step = self._steps[index]

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"replay of {self.session.path} is closed")


class ReplayTwin(ReplayMicroscope):
    """A replay of a twin's session: also serves the recorded ground truth."""

    def strehl_ratio(self) -> float:
        """The recorded Strehl ratio at the cursor."""
        return self._truth("strehl")

    def true_aberrations(self) -> Aberrations:
        """The recorded true aberrations (m) at the cursor."""
        return Aberrations.from_mapping({n: self._truth(n) for n in ABERRATION_NAMES})

    def _truth(self, name: str) -> float:
        step = self._truth_step
        if step is None:  # before the first step: the truth of the first recorded step
            step = self._steps[0]
        return step.truth(name)


def open_replay(uri_or_path: str | Path, task: str | None = None) -> ReplayMicroscope:
    """Open ``replay://PATH[?task=NAME]`` or a session folder."""
    text = str(uri_or_path)
    if text.startswith("replay://"):
        parts = urlsplit(text)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - {"task"})
        if unknown:
            raise ConfigError(f"{text!r}: unknown query parameter(s) {unknown}; expected ['task']")
        task = query.get("task", task)
        path = Path(parts.netloc + parts.path)
        if not str(path) or str(path) == ".":
            raise ConfigError(f"expected replay://SESSION_FOLDER, got {text!r}")
    else:
        path = Path(text)
    session = Session(path)
    has_truth = any(not math.isnan(s.truth()) for s in session.steps)
    cls = ReplayTwin if has_truth else ReplayMicroscope
    return cls(session, task)
