"""Pass every command that changes the microscope through a checkpoint first.

The agent daemon (`emauto.agent.daemon`) gives its state machine's checkpoint: a pause
blanks the beam and waits there, an abort raises out of the command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from emauto.microscope import (
    Frame,
    ImageRequest,
    Microscope,
    MicroscopeState,
    RonchigramRequest,
)
from emauto.wrappers.base import MicroscopeWrapper

__all__ = ["CheckpointedMicroscope"]


class CheckpointedMicroscope(MicroscopeWrapper):
    """Calls ``checkpoint()`` before each ``set`` and ``acquire``.

    ``checkpoint`` blocks while paused and raises (e.g. `AbortedError`) to stop the command;
    ``paused()`` says whether it would block. When paused the beam is made safe first (beam
    blanked, motion stopped) and, once the checkpoint lets go, unblanked again (when the
    backend has a ``beam_blank`` knob) before the checkpoint is passed once more.
    """

    def __init__(
        self,
        microscope: Microscope,
        checkpoint: Callable[[], None],
        paused: Callable[[], bool],
    ) -> None:
        super().__init__(microscope)
        self._checkpoint = checkpoint
        self._paused = paused

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Pass the checkpoint, then apply the setpoints (SI units)."""
        self._pass()
        return self.microscope.set(setpoints)

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Pass the checkpoint, then acquire."""
        self._pass()
        return self.microscope.acquire(request)

    def _pass(self) -> None:
        if self._paused():
            self.microscope.safe()  # paused: beam blanked, nothing moves
            self._checkpoint()
            if "beam_blank" in self.microscope.describe().knobs:
                self.microscope.set({"beam_blank": 0.0})
        self._checkpoint()
