"""Record every call that crosses the Microscope boundary into a session folder.

`RecordingMicroscope` wraps any backend (twin, ZeroMQ client, replay) and hands each call to
a `SessionRecorder` (`emauto.sessions.recorder`, which describes the documents written).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from emauto.errors import EmautoError
from emauto.microscope import (
    Frame,
    GroundTruth,
    ImageRequest,
    Microscope,
    MicroscopeState,
    RonchigramRequest,
)
from emauto.sessions.durable import FileSystem
from emauto.sessions.recorder import ExitStatus, SessionRecorder
from emauto.wrappers.base import MicroscopeWrapper, unwrap

__all__ = ["RecordingMicroscope"]


class RecordingMicroscope(MicroscopeWrapper):
    """A Microscope that records every ``set``, ``acquire`` and ``safe`` to ``recorder``.

    Rejected commands (any `EmautoError` from the backend) are recorded with their error and
    re-raised. When the innermost backend is a twin (`GroundTruth`: in process, over the
    wire or replayed) each step also records the ground truth (Strehl ratio, aberrations in m).
    """

    def __init__(self, microscope: Microscope, recorder: SessionRecorder) -> None:
        super().__init__(microscope)
        self.recorder = recorder
        twin = unwrap(microscope)
        self._truth: Callable[[], dict[str, float]] | None = None
        if recorder.with_truth and isinstance(twin, GroundTruth):
            self._truth = lambda: {
                "strehl": float(twin.strehl_ratio()),
                **twin.true_aberrations().to_dict(),
            }

    @classmethod
    def open(
        cls,
        microscope: Microscope,
        path: str | Path,
        metadata: Mapping[str, Any] | None = None,
        *,
        file_system: FileSystem | None = None,
    ) -> RecordingMicroscope:
        """Start recording ``microscope`` into the new session folder ``path`` (written through
        ``file_system``, the operating system's by default)."""
        truth = isinstance(unwrap(microscope), GroundTruth)
        recorder = SessionRecorder(
            path,
            microscope.describe(),
            microscope.read(),
            metadata=metadata,
            with_truth=truth,
            file_system=file_system,
        )
        return cls(microscope, recorder)

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Apply the setpoints (SI units) and record the step, or the rejection."""
        action = {"set": {str(k): _jsonable(v) for k, v in dict(setpoints).items()}}
        try:
            state = self.microscope.set(setpoints)
        except EmautoError as exc:
            self._record_rejected(action, exc)
            raise
        self.recorder.record_step("set", action, state, truth=self._read_truth())
        return state

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Acquire and record the step with its frame, or the rejection."""
        action = {"acquire": request.model_dump(mode="json")}
        try:
            frame = self.microscope.acquire(request)
        except EmautoError as exc:
            self._record_rejected(action, exc)
            raise
        self.recorder.record_step(
            "acquire", action, frame.state, frame=frame, truth=self._read_truth()
        )
        return frame

    def safe(self) -> None:
        """Go safe and record the state after."""
        self.microscope.safe()
        self.recorder.record_step("safe", {"safe": True}, self.microscope.read())

    def close(self, exit_status: ExitStatus = "success", reason: str = "") -> None:
        """Go safe (recorded), close the backend and the session."""
        try:
            if not self.recorder.closed:
                self.safe()
        finally:
            try:
                self.microscope.close()
            finally:
                self.recorder.close(exit_status, reason)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(
            "success" if exc_type is None else "fail", "" if exc_type is None else exc_type.__name__
        )

    def _read_truth(self) -> dict[str, float] | None:
        return self._truth() if self._truth is not None else None

    def _record_rejected(self, action: Mapping[str, Any], exc: EmautoError) -> None:
        try:
            state = self.microscope.read()
        except EmautoError:
            return  # the link is gone; the caller sees the original error
        self.recorder.record_step("rejected", action, state, error=f"{type(exc).__name__}: {exc}")


def _jsonable(value: Any) -> Any:
    """A setpoint as JSON can hold it (non-finite numbers as strings, for the record)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return repr(value)
    return number if np.isfinite(number) else repr(number)
