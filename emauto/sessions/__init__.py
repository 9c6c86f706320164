"""Recorded sessions: the recorder, the reader, report, export.

The wrapper that records at the Microscope boundary is `emauto.wrappers.recording`. The
reader treats a session folder as untrusted input (`emauto.sessions.files`).
"""

from emauto.sessions.files import ReaderLimits
from emauto.sessions.reader import EpisodeStep, Session, Step
from emauto.sessions.recorder import SessionRecorder

__all__ = ["EpisodeStep", "ReaderLimits", "Session", "SessionRecorder", "Step"]
