"""How ``emauto serve`` opens each registered backend (`BACKENDS`) from its config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emauto.errors import ConfigError
from emauto.microscope import Microscope

if TYPE_CHECKING:
    from emauto.drivers.zmq.config import ServerConfig


def open_sim_backend(config: ServerConfig) -> Microscope:
    """The twin at ``config.sim_uri`` (a ``sim://`` URI)."""
    from emauto.drivers.sim.uri import open_sim

    if not config.sim_uri.startswith("sim://"):
        raise ConfigError(f"sim_uri must be a sim:// URI, got {config.sim_uri!r}")
    return open_sim(config.sim_uri)


def open_temscript_backend(config: ServerConfig) -> Microscope:
    """A Thermo Fisher microscope through temscript (``config.temscript``)."""
    from emauto.drivers.vendors.temscript import TemscriptMicroscope, open_temscript

    return TemscriptMicroscope(open_temscript(config.temscript))


def open_nion_backend(config: ServerConfig) -> Microscope:
    """A Nion microscope through nionswift-instrumentation."""
    from emauto.drivers.vendors.nion import NionMicroscope

    return NionMicroscope()
