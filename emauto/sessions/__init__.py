"""Recorded sessions: the recorder, the reader, report, export.

The wrapper that records at the Microscope boundary is `emauto.wrappers.recording`.
"""

from emauto.sessions.reader import EpisodeStep, Session, Step
from emauto.sessions.recorder import SessionRecorder

__all__ = ["EpisodeStep", "Session", "SessionRecorder", "Step"]
