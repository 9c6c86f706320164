"""Microscope backends, opened by URI through `connect`."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emauto.drivers.sim.config import EffectsConfig, SimConfig
from emauto.errors import ConfigError
from emauto.microscope import Microscope
from emauto.units import load_yaml, validate_model

SIM_QUERY_KEYS = ("specimen", "fidelity", "seed", "config", "effects")


def sim_config_from_uri(uri: str) -> SimConfig:
    """Parse ``sim://[?specimen=NAME|PATH&fidelity=fast|multislice&seed=N&effects=...]``.

    ``config=PATH`` loads a YAML `SimConfig` first; the other parameters override it.
    ``effects`` is ``all`` (default), ``none``, or a comma list of the effects to keep on
    (``poisson,detector_noise,drift,lens_lag,hysteresis,scan_jitter``).
    """
    parts = urlsplit(uri)
    if parts.scheme != "sim":
        raise ConfigError(f"expected a sim:// URI, got {uri!r}")
    if parts.netloc or parts.path not in ("", "/"):
        raise ConfigError(f"{uri!r}: put the specimen in the query, e.g. sim://?specimen=srtio3")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(query) - set(SIM_QUERY_KEYS))
    if unknown:
        raise ConfigError(
            f"{uri!r}: unknown query parameter(s) {unknown}; expected {list(SIM_QUERY_KEYS)}"
        )
    values = {key: items[-1] for key, items in query.items()}
    base: dict[str, Any] = {}
    if "config" in values:
        base = load_yaml(Path(values.pop("config")), SimConfig).model_dump()
    effects_spec = values.pop("effects", None)
    base.update(values)
    if effects_spec is not None:
        base["effects"] = _effects(effects_spec, uri)
    return validate_model(base, SimConfig, source=uri)


def _effects(spec: str, uri: str) -> dict[str, Any]:
    names = ("poisson", "detector_noise", "drift", "lens_lag", "hysteresis", "scan_jitter")
    if spec == "all":
        return EffectsConfig().model_dump()
    chosen = [] if spec in ("none", "") else [part.strip() for part in spec.split(",")]
    bad = sorted(set(chosen) - set(names))
    if bad:
        raise ConfigError(f"{uri!r}: unknown effect(s) {bad}; expected 'all', 'none' or {names}")
    return EffectsConfig().model_copy(update={n: n in chosen for n in names}).model_dump()


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
    if scheme == "sim":
        from emauto.drivers.sim import SimulatedMicroscope

        config = kwargs.pop("config", None) or sim_config_from_uri(uri)
        if kwargs:
            config = validate_model({**config.model_dump(), **kwargs}, SimConfig, source=uri)
        return SimulatedMicroscope(config)
    if scheme in ("tcp", "ipc"):
        from emauto.drivers.zmq.client import connect_remote

        return connect_remote(uri, **kwargs)
    if scheme == "replay":
        from emauto.drivers.replay import open_replay

        return open_replay(uri, **kwargs)
    raise ConfigError(
        f"unknown microscope URI scheme in {uri!r}; expected sim://, tcp:// or replay://"
    )
