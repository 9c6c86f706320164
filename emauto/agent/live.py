"""What the console shows live: the latest frame, the curves, the knobs and the daemon's log.

The daemon's worker thread publishes into one `LiveState` (thread-safe; every change bumps
``version``) through `LiveMicroscope`, a wrapper that sees each frame and each state the
microscope returns, and through the session recorder's listener (`episode_listener`: the
reward and Strehl ratio of each environment step). The console (`emauto.agent.console`)
reads it from its own thread. Units are those of the contract: SI (m, rad, electrons, s).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emauto.microscope import Frame, ImageRequest, Microscope, MicroscopeState, RonchigramRequest
from emauto.wrappers.base import MicroscopeWrapper

#: Points kept of each series (older ones are dropped; the session keeps everything).
MAX_POINTS = 5000
#: Lines of the daemon's log kept for the console.
MAX_LOG_LINES = 500


@dataclass(frozen=True)
class LiveFrame:
    """The latest frame, its number in this daemon (from 1) and when it arrived (unix s)."""

    id: int
    frame: Frame
    published: float


class LiveState:
    """The latest frame, per-plan series and the log, for the console (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.version = 0
        #: which plan the series belong to (bumped by `new_plan`: the console starts over)
        self.generation = 0
        self._frame: LiveFrame | None = None
        self._frames = 0
        self.steps: deque[dict[str, Any]] = deque(maxlen=MAX_POINTS)
        self.knobs: deque[dict[str, Any]] = deque(maxlen=MAX_POINTS)
        self.units: dict[str, str] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG_LINES)
        self._log_count = 0
        self._step_count = 0
        self._knob_count = 0

    def _bump(self) -> None:
        self.version += 1

    def new_plan(self, units: Mapping[str, str] | None = None) -> None:
        """Start the series over (a new plan, a new session); ``units``: knob -> SI unit."""
        with self._lock:
            self.generation += 1
            self.steps.clear()
            self.knobs.clear()
            self._step_count = self._knob_count = 0
            self.units = dict(units or {})
            self._bump()

    def publish_frame(self, frame: Frame) -> int:
        """Keep ``frame`` as the latest; its id."""
        with self._lock:
            self._frames += 1
            self._frame = LiveFrame(self._frames, frame, time.time())
            self._bump()
            return self._frames

    def latest(self) -> LiveFrame | None:
        """The latest frame, or None before the first."""
        return self._frame

    def publish_state(self, state: MicroscopeState, kind: str) -> None:
        """A state the microscope returned (after a set or an acquisition)."""
        with self._lock:
            self._knob_count += 1
            point = {
                "n": self._knob_count,
                "kind": kind,
                "frame": self._frames if kind == "acquire" else None,
                "dose_e": float(state.dose_e),
                "knobs": {k: _finite(v) for k, v in sorted(state.knobs.items())},
            }
            self.knobs.append(point)
            self._bump()

    def publish_step(self, data: Mapping[str, Any]) -> None:
        """An environment step: its task, reward (the objective) and Strehl ratio."""
        with self._lock:
            self._step_count += 1
            last_dose = self.knobs[-1]["dose_e"] if self.knobs else 0.0
            self.steps.append(
                {
                    "n": self._step_count,
                    "task": str(data.get("task", "")),
                    "reward": _finite(data.get("reward")),
                    "strehl": _finite(data.get("strehl")),
                    "dose_e": last_dose,
                }
            )
            self._bump()

    def publish_log(self, level: str, message: str) -> None:
        """One line of the daemon's log."""
        with self._lock:
            self._log_count += 1
            self.log.append(
                {"n": self._log_count, "t": time.time(), "level": level, "message": message}
            )
            self._bump()

    def since(self, generation: int, steps: int, knobs: int, log: int) -> dict[str, Any]:
        """What is new after the given counts (all of it for another generation)."""
        with self._lock:
            if generation != self.generation:
                steps = knobs = 0
            return {
                "generation": self.generation,
                "units": self.units,
                "steps": [p for p in self.steps if p["n"] > steps],
                "knobs": [p for p in self.knobs if p["n"] > knobs],
                "log": [p for p in self.log if p["n"] > log],
            }

    def episode_listener(self, stream: str, data: Mapping[str, Any]) -> None:
        """A `SessionRecorder` listener: keeps each environment step."""
        if stream == "episode":
            self.publish_step(data)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class LiveMicroscope(MicroscopeWrapper):
    """Publishes every frame and every returned state into a `LiveState`; else unchanged.

    ``busy``: whether a ``set`` or an ``acquire`` is in flight (the link monitor's hint).
    """

    def __init__(self, microscope: Microscope, live: LiveState) -> None:
        super().__init__(microscope)
        self.live = live
        self._in_flight = 0

    def busy(self) -> bool:
        """Whether a command is in flight."""
        return self._in_flight > 0

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Apply the setpoints (SI units); publish the state after."""
        self._in_flight += 1
        try:
            state = self.microscope.set(setpoints)
        finally:
            self._in_flight -= 1
        self.live.publish_state(state, "set")
        return state

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Acquire; publish the frame and the state it was taken at."""
        self._in_flight += 1
        try:
            frame = self.microscope.acquire(request)
        finally:
            self._in_flight -= 1
        self.live.publish_frame(frame)
        self.live.publish_state(frame.state, "acquire")
        return frame


class LiveLogHandler(logging.Handler):
    """A logging handler that copies records into a `LiveState`'s log."""

    def __init__(self, live: LiveState) -> None:
        super().__init__(logging.INFO)
        self.live = live

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.live.publish_log(record.levelname, self.format(record))
        except Exception:  # a log line must never break the daemon
            self.handleError(record)
