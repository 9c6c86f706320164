"""Count acquisitions and dose at the Microscope boundary."""

from __future__ import annotations

from emauto.errors import AcquisitionBudgetError
from emauto.microscope import Frame, ImageRequest, Microscope, RonchigramRequest
from emauto.wrappers.base import MicroscopeWrapper

__all__ = ["CountingMicroscope"]


class CountingMicroscope(MicroscopeWrapper):
    """Counts every acquisition and its dose, whoever takes it (an env, or a policy that
    measures on its own), and refuses acquisitions past ``limit`` (None: no limit); the
    other contract methods are forwarded unchanged."""

    def __init__(self, microscope: Microscope, limit: int | None = None) -> None:
        super().__init__(microscope)
        self.acquisitions = 0
        self.dose_e = 0.0  # electrons delivered by the counted acquisitions
        self.limit = limit

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Acquire through the wrapped microscope and count the frame and its dose (e);
        `AcquisitionBudgetError` (nothing acquired) once ``limit`` frames were counted."""
        if self.limit is not None and self.acquisitions >= self.limit:
            raise AcquisitionBudgetError(
                f"the budget of {self.limit} acquisitions is spent; frame refused"
            )
        frame = self.microscope.acquire(request)
        self.acquisitions += 1
        self.dose_e += frame.dose_e
        return frame

    def reset_counts(self) -> None:
        """Start counting again from zero acquisitions and zero electrons."""
        self.acquisitions, self.dose_e = 0, 0.0
