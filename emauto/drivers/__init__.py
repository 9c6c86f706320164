"""Microscope backends, opened by URI through `connect`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from emauto.errors import ConfigError
from emauto.microscope import Microscope
from emauto.registry import Registry

#: Every microscope URI scheme ``connect`` opens: scheme -> ``open(uri, **kwargs)``.
SCHEMES = Registry(
    "microscope URI scheme",
    {
        "sim": "emauto.drivers.sim.uri:open_sim",
        "tcp": "emauto.drivers.zmq.client:connect_remote",
        "ipc": "emauto.drivers.zmq.client:connect_remote",
        "replay": "emauto.drivers.replay:open_replay",
    },
)


def connect(uri: str = "sim://", **kwargs: Any) -> Microscope:
    """Open a microscope backend by URI.

    - ``sim://?specimen=…&fidelity=fast|multislice&seed=…&effects=…`` the abTEM twin;
      keyword arguments override `SimConfig` fields (e.g. ``config=SimConfig(...)``).
    - ``tcp://host:port[?timeout=S&retries=N&key=CLIENT.key_secret&server_key=server.key]``
      an `emauto serve` server over ZeroMQ; keyword arguments go to `RemoteMicroscope`.
    - ``replay://SESSION[?task=NAME]`` a recorded session (`emauto.drivers.replay`).

    ``record=FOLDER`` (any scheme) records every call into a new session folder
    (`emauto.wrappers.recording.RecordingMicroscope`); ``metadata=`` adds to its start document.
    """
    if not isinstance(uri, str):
        raise ConfigError(f"expected a URI string, got {type(uri).__name__}")
    record = kwargs.pop("record", None)
    metadata = kwargs.pop("metadata", None)
    if record is not None:
        from emauto.wrappers.recording import RecordingMicroscope

        inner = connect(uri, **kwargs)
        try:
            return RecordingMicroscope.open(inner, record, {"uri": uri, **(metadata or {})})
        except BaseException:
            inner.close()
            raise
    scheme = urlsplit(uri).scheme
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown microscope URI scheme in {uri!r}; expected one of "
            f"{', '.join(name + '://' for name in SCHEMES)}"
        )
    opener = SCHEMES.load(scheme)
    microscope: Microscope = opener(uri, **kwargs)
    return microscope
