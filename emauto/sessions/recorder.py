"""Record everything that crosses the Microscope boundary as a bluesky event-model run.

`emauto.wrappers.recording.RecordingMicroscope` wraps any backend (twin, ZeroMQ client,
replay) and hands each call to a `SessionRecorder`, which writes:

- a **start** document: emauto version, the backend's description and first state, and what
  the caller adds (seed, policy and its version, limits, plan, backend URI);
- a **primary** descriptor and one event per step (``set``, ``acquire``, ``safe``, or a
  rejected command): the action, the state after it (one ``state_<knob>`` number per knob),
  the dose, a reference to the frame in ``frames.zarr``, and, on a twin, the ground truth
  (Strehl ratio and true aberrations);
- an **episode** descriptor and one event per environment step (normalised action, reward,
  termination), written by whoever runs a policy (`record_episode_step`), for replay and
  offline RL;
- an **operator** descriptor and one event per question the daemon asks its operator, per
  answer (`record_operator`: a hand-off) and per operator label of a patch;
- a **stop** document with the exit status.

``listeners`` are called with ``(stream, data)`` after each event is written (the daemon's live
console).

Every event is fsync'd before the call returns (`emauto.sessions.store`), and so is the
session folder's name in its parent; ``write_s`` keeps the time each step spent writing, for
the recorder's benchmark. ``file_system`` (`emauto.sessions.durable`) is the operating
system's unless a test or the benchmark hands in a `PowerCutFileSystem`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import event_model
import numpy as np

from emauto.errors import SessionError
from emauto.microscope import Frame, MicroscopeDescription, MicroscopeState
from emauto.optics import ABERRATION_NAMES
from emauto.sessions.durable import FileSystem, OsFileSystem, make_folders
from emauto.sessions.store import DOCUMENTS, FRAMES, DocumentLog, FrameStore
from emauto.version import __version__

ExitStatus = Literal["success", "abort", "fail"]
StepKind = Literal["set", "acquire", "safe", "rejected"]


def _key(dtype: str, source: str, units: str | None = None, **extra: Any) -> dict[str, Any]:
    key: dict[str, Any] = {"dtype": dtype, "shape": [], "source": source, **extra}
    if units is not None:
        key["units"] = units
    return key


class SessionRecorder:
    """Write one session folder; see the module docstring for its documents."""

    def __init__(
        self,
        path: str | Path,
        description: MicroscopeDescription,
        initial_state: MicroscopeState,
        *,
        metadata: Mapping[str, Any] | None = None,
        with_truth: bool = False,
        file_system: FileSystem | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()):
            raise SessionError(f"{self.path} exists and is not empty; a session needs a new folder")
        file_system = file_system or OsFileSystem()
        make_folders(file_system, self.path)
        self.knobs = sorted(description.knobs)
        self.with_truth = with_truth
        self.task = ""
        self.write_s: list[float] = []  # seconds each step spent writing, and its kind
        self.write_kinds: list[str] = []
        self._log = DocumentLog(self.path / DOCUMENTS, file_system)
        self._frames = FrameStore(self.path / FRAMES, file_system=file_system)
        self._closed = False
        run_metadata = {
            "emauto": __version__,
            "backend": description.backend,
            "description": description.model_dump(mode="json"),
            "initial_state": initial_state.model_dump(mode="json"),
            **dict(metadata or {}),
        }
        self._run = event_model.compose_run(metadata=json.loads(json.dumps(run_metadata)))
        self._log.append("start", dict(self._run.start_doc))
        self._primary = self._run.compose_descriptor(
            name="primary", data_keys=self._primary_keys(description)
        )
        self._log.append("descriptor", dict(self._primary.descriptor_doc))
        self._episode: Any = None
        self._operator: Any = None
        self.steps = 0
        #: called with (stream, data) after each event is written
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def _primary_keys(self, description: MicroscopeDescription) -> dict[str, Any]:
        keys = {
            "kind": _key("string", "emauto", description="set | acquire | safe | rejected"),
            "task": _key("string", "emauto", description="the plan task that made the call"),
            "action": _key("string", "emauto", description="the command as JSON (SI units)"),
            "error": _key("string", "emauto", description="why a command was rejected"),
            "frame": _key("string", "emauto", description=f"array in {FRAMES}, '' if none"),
            "dose_e": _key("number", "microscope", "electrons"),
            "time_s": _key("number", "microscope", "s"),
            "beam_blanked": _key("boolean", "microscope"),
        }
        for name in self.knobs:
            keys[f"state_{name}"] = _key("number", "microscope", description.knobs[name].unit)
        if self.with_truth:
            keys["truth_strehl"] = _key("number", "twin")
            for name in ABERRATION_NAMES:
                keys[f"truth_{name}"] = _key("number", "twin", "m")
        return keys

    # ------------------------------------------------------------------ steps

    def record_step(
        self,
        kind: StepKind,
        action: Mapping[str, Any],
        state: MicroscopeState,
        *,
        frame: Frame | None = None,
        error: str = "",
        truth: Mapping[str, float] | None = None,
    ) -> int:
        """Write one microscope step (its frame first); return its sequence number."""
        self._check_open()
        started = time.perf_counter()
        key = ""
        if frame is not None:
            key = f"{self.steps:06d}"
            self._frames.write(key, frame)
        data: dict[str, Any] = {
            "kind": kind,
            "task": self.task,
            "action": json.dumps(dict(action), allow_nan=False),
            "error": error,
            "frame": key,
            "dose_e": float(state.dose_e),
            "time_s": float(state.time_s),
            "beam_blanked": bool(state.beam_blanked),
        }
        for name in self.knobs:
            data[f"state_{name}"] = float(state.knobs.get(name, float("nan")))
        if self.with_truth:
            truth = truth or {}
            for name in ("strehl", *ABERRATION_NAMES):
                data[f"truth_{name}"] = float(truth.get(name, float("nan")))
        data = {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in data.items()
        }
        now = time.time()
        event = self._primary.compose_event(data=data, timestamps=dict.fromkeys(data, now))
        self._log.append("event", dict(event))
        self.write_s.append(time.perf_counter() - started)
        self.write_kinds.append(kind)
        self.steps += 1
        self._tell("primary", data)
        return self.steps - 1

    def record_episode_step(
        self,
        action: Sequence[float] | np.ndarray,
        reward: float,
        terminated: bool,
        truncated: bool,
        strehl: float,
    ) -> None:
        """Write one environment step of the running task (normalised action in [-1, 1])."""
        self._check_open()
        if self._episode is None:
            keys = {
                "task": _key("string", "emauto"),
                "action": {"dtype": "array", "shape": [len(action)], "source": "policy"},
                "reward": _key("number", "env"),
                "terminated": _key("boolean", "env"),
                "truncated": _key("boolean", "env"),
                "strehl": _key("number", "env"),
            }
            self._episode = self._run.compose_descriptor(name="episode", data_keys=keys)
            self._log.append("descriptor", dict(self._episode.descriptor_doc))
        data = {
            "task": self.task,
            "action": [float(a) for a in action],
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "strehl": float(strehl),
        }
        event = self._episode.compose_event(data=data, timestamps=dict.fromkeys(data, time.time()))
        self._log.append("event", dict(event))
        self._tell("episode", data)

    def record_operator(
        self,
        kind: Literal["question", "answer", "label"],
        question_id: int,
        text: str,
        choice: str = "",
    ) -> None:
        """Write a question the daemon asked its operator, the operator's answer, or an
        operator's label of a patch (``text``: where, as JSON; ``choice``: the class)."""
        self._check_open()
        if self._operator is None:
            keys = {
                "task": _key("string", "emauto"),
                "kind": _key("string", "emauto", description="question | answer | label"),
                "question_id": _key("integer", "emauto"),
                "text": _key("string", "emauto", description="the question, or who answered"),
                "choice": _key("string", "operator", description="the answer ('' for a question)"),
            }
            self._operator = self._run.compose_descriptor(name="operator", data_keys=keys)
            self._log.append("descriptor", dict(self._operator.descriptor_doc))
        data = {
            "task": self.task,
            "kind": kind,
            "question_id": int(question_id),
            "text": str(text)[:2000],
            "choice": str(choice)[:200],
        }
        event = self._operator.compose_event(data=data, timestamps=dict.fromkeys(data, time.time()))
        self._log.append("event", dict(event))
        self._tell("operator", data)

    def _tell(self, stream: str, data: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(stream, data)
            except Exception as exc:  # a listener (the live console) never stops the record
                print(f"emauto recorder: a listener failed: {exc}", file=sys.stderr)

    def close(self, exit_status: ExitStatus = "success", reason: str = "") -> None:
        """Write the stop document; later calls do nothing.

        The stop document tells the truth about how the run ended: asked for ``success``
        while an exception is propagating (``close`` called from a ``finally`` clause or an
        ``__exit__``, e.g. an env closed after Ctrl-C), it records ``abort`` for a
        `KeyboardInterrupt` and ``fail`` for anything else, with the exception as reason; a
        run ended by a `KeyboardInterrupt` in flight is always an ``abort`` (the user's).
        """
        if self._closed:
            return
        self._closed = True
        in_flight = sys.exc_info()[1]
        interrupted = isinstance(in_flight, KeyboardInterrupt)
        if in_flight is not None and (exit_status == "success" or interrupted):
            exit_status = "abort" if interrupted else "fail"
            name, detail = type(in_flight).__name__, str(in_flight)
            reason = reason or (f"{name}: {detail}"[:500] if detail else name)
        try:
            self._log.append(
                "stop", dict(self._run.compose_stop(exit_status=exit_status, reason=reason))
            )
        finally:
            self._log.close()

    @property
    def closed(self) -> bool:
        """Whether the stop document is written."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(f"session {self.path} is closed")
