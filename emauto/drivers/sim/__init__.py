"""The abTEM digital twin (`sim://`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emauto.drivers.sim.twin import SimulatedMicroscope

__all__ = ["SimulatedMicroscope"]


def __getattr__(name: str) -> Any:
    # imported lazily: the twin pulls in torch and abTEM
    if name == "SimulatedMicroscope":
        from emauto.drivers.sim.twin import SimulatedMicroscope

        return SimulatedMicroscope
    raise AttributeError(name)
