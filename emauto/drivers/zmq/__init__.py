"""The ZeroMQ driver: wire protocol, client, microscope-side server, CURVE auth."""

from __future__ import annotations

from emauto.drivers.zmq.client import RemoteMicroscope

__all__ = ["RemoteMicroscope"]
