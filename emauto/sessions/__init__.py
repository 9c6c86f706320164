"""Recorded sessions: the recorder at the Microscope boundary, the reader, report, export."""

from emauto.sessions.reader import EpisodeStep, Session, Step
from emauto.sessions.recorder import RecordingMicroscope, SessionRecorder

__all__ = ["EpisodeStep", "RecordingMicroscope", "Session", "SessionRecorder", "Step"]
