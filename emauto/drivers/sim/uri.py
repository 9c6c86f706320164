"""``sim://`` URIs: the twin's configuration from a URI, and opening the twin by URI."""

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

    ``config=PATH`` loads a YAML `SimConfig` first; the other parameters override it. A
    relative recipe path in that file's ``specimen`` is taken from the file's folder (when
    a recipe is there; else from the working directory, as before).
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
        config_path = Path(values.pop("config"))
        base = load_yaml(config_path, SimConfig).model_dump()
        base["specimen"] = specimen_beside(base["specimen"], config_path)
    effects_spec = values.pop("effects", None)
    base.update(values)
    if effects_spec is not None:
        base["effects"] = _effects(effects_spec, uri)
    return validate_model(base, SimConfig, source=uri)


def specimen_beside(specimen: str, config_path: Path) -> str:
    """A relative recipe path from a config file, resolved against the file's folder when
    the recipe is there; a built-in name or anything else is returned unchanged."""
    path = Path(specimen)
    looks_like_path = path.suffix in (".yaml", ".yml") or len(path.parts) > 1
    if not looks_like_path or path.is_absolute():
        return specimen
    candidate = config_path.parent / path
    return str(candidate) if candidate.is_file() else specimen


def _effects(spec: str, uri: str) -> dict[str, Any]:
    names = ("poisson", "detector_noise", "drift", "lens_lag", "hysteresis", "scan_jitter")
    if spec == "all":
        return EffectsConfig().model_dump()
    chosen = [] if spec in ("none", "") else [part.strip() for part in spec.split(",")]
    bad = sorted(set(chosen) - set(names))
    if bad:
        raise ConfigError(f"{uri!r}: unknown effect(s) {bad}; expected 'all', 'none' or {names}")
    return EffectsConfig().model_copy(update={n: n in chosen for n in names}).model_dump()


def open_sim(uri: str, **kwargs: Any) -> Microscope:
    """The twin for ``uri``; keyword arguments override `SimConfig` fields (e.g.
    ``config=SimConfig(...)``, ``cache_dir=...``)."""
    from emauto.drivers.sim.twin import SimulatedMicroscope

    config = kwargs.pop("config", None) or sim_config_from_uri(uri)
    if kwargs:
        config = validate_model({**config.model_dump(), **kwargs}, SimConfig, source=uri)
    return SimulatedMicroscope(config)
