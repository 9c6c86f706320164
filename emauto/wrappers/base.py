"""The base of every Microscope wrapper: the contract forwarded explicitly, and `unwrapped`.

A wrapper implements the Microscope contract over another Microscope and stacks (safety,
recording, counting, a checkpoint). `MicroscopeWrapper` forwards each contract method, one
by one, to the wrapped microscope; a subclass overrides only what it changes. Nothing else
passes through: an attribute that is not in the contract (a twin's ground truth, another
wrapper's counters) is reached on the object that owns it, e.g. on `unwrapped`, the innermost
backend, as with Gymnasium's ``Wrapper.unwrapped``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Self

from emauto.microscope import (
    Frame,
    ImageRequest,
    Microscope,
    MicroscopeDescription,
    MicroscopeState,
    RonchigramRequest,
)

__all__ = ["MicroscopeWrapper", "unwrap"]


class MicroscopeWrapper:
    """A Microscope over ``microscope`` that forwards every contract method to it unchanged.

    Units and geometry are those of the contract (`emauto.microscope`): SI throughout.
    """

    def __init__(self, microscope: Microscope) -> None:
        self.microscope = microscope

    @property
    def unwrapped(self) -> Microscope:
        """The innermost backend below this wrapper and any wrappers it wraps."""
        return unwrap(self.microscope)

    # ------------------------------------------------------------------ contract

    def describe(self) -> MicroscopeDescription:
        """Knobs (unit, limits, max step), detectors, scan limits, beam."""
        return self.microscope.describe()

    def read(self) -> MicroscopeState:
        """The current state (knob setpoints in SI units, dose in electrons, time in s)."""
        return self.microscope.read()

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Apply absolute setpoints (SI units) atomically; the state after."""
        return self.microscope.set(setpoints)

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Take a Ronchigram or a scanned-detector image."""
        return self.microscope.acquire(request)

    def safe(self) -> None:
        """Blank the beam and stop all motion."""
        self.microscope.safe()

    def close(self) -> None:
        """Go safe and release the wrapped microscope."""
        self.microscope.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}{self.microscope!r}>"


def unwrap(microscope: Microscope) -> Microscope:
    """The innermost backend below any `MicroscopeWrapper`s (``microscope`` itself if none)."""
    return microscope.unwrapped if isinstance(microscope, MicroscopeWrapper) else microscope
