"""The server's YAML configuration (``emauto serve --config FILE``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field

from emauto.drivers.vendors import BACKENDS
from emauto.errors import AuthError, ConfigError
from emauto.units import StrictModel, load_yaml
from emauto.wrappers.safety import SafetyConfig

if TYPE_CHECKING:
    BackendName = str
else:  # the registry's names, as a literal
    BackendName = Literal[BACKENDS.names()]


class ServerConfig(StrictModel):
    """Where to listen, which backend to serve, keys, audit log and safety limits."""

    backend: BackendName = "sim"
    sim_uri: str = Field(default="sim://", description="sim backend: the twin's sim:// URI")
    temscript: str = Field(
        default="local",
        pattern=r"^(local|null|[A-Za-z0-9_.-]+:[0-9]{1,5})$",
        description="temscript backend: 'local' (COM, on the microscope PC), 'null' "
        "(temscript's NullMicroscope emulator) or HOST:PORT of a temscript server (JSON)",
    )
    bind: str = "tcp://127.0.0.1:5555"
    keys_dir: Path | None = Field(default=None, description="CURVE keys (emauto keys create)")
    audit_log: Path | None = Field(default=None, description="JSON Lines audit log")
    ledger: Path | None = Field(
        default=None,
        description="request ledger for exactly-once across restarts (JSON Lines, fsync'd); "
        "default: AUDIT_LOG.ledger beside the audit log, in memory only without one",
    )
    safety: SafetyConfig = SafetyConfig(heartbeat_interval_s=1.0, missed_heartbeats=5)


def ledger_path(config: ServerConfig) -> Path | None:
    """Where the request ledger lives: ``ledger``, else beside the audit log, else nowhere."""
    if config.ledger is not None:
        return config.ledger
    if config.audit_log is not None:
        return config.audit_log.with_name(config.audit_log.name + ".ledger")
    return None


def load_server_config(path: Path) -> ServerConfig:
    """Load and validate a server YAML file (errors name the bad field)."""
    return load_yaml(path, ServerConfig)


def is_loopback(bind: str) -> bool:
    """True for ipc://, inproc:// and tcp:// endpoints on a loopback address."""
    parts = urlsplit(bind)
    if parts.scheme in ("ipc", "inproc"):
        return True
    if parts.scheme != "tcp":
        raise ConfigError(f"expected a tcp://HOST:PORT endpoint, got {bind!r}")
    host = (parts.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(config: ServerConfig) -> None:
    """Refuse a non-loopback bind without CURVE keys and a client allow-list."""
    if is_loopback(config.bind):
        return
    keys = config.keys_dir
    if keys is None or not (keys / "server.key_secret").exists():
        raise AuthError(
            f"binding {config.bind} (not loopback) needs CURVE keys: run "
            "'emauto keys create DIR' and pass --keys DIR"
        )
    allowed = [*keys.glob("agents/*.key"), *keys.glob("operators/*.key")]
    if not allowed:
        raise AuthError(f"binding {config.bind} needs an allow-list; {keys} has no client keys")
