"""Start a microscope-side server: build the backend, wrap it in the safety layer, serve."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import zmq

from emauto.drivers.vendors import BACKENDS
from emauto.drivers.zmq.auth import KeyRing
from emauto.drivers.zmq.config import ServerConfig, check_bind, ledger_path
from emauto.drivers.zmq.ledger import Ledger
from emauto.drivers.zmq.server import MicroscopeServer, bind_error
from emauto.microscope import Microscope
from emauto.wrappers.audit import AuditLog
from emauto.wrappers.safety import SafeMicroscope

log = logging.getLogger(__name__)


def build_backend(config: ServerConfig) -> Microscope:
    """The backend named by ``config.backend`` (vendor adapters need their extras)."""
    opener = BACKENDS.load(config.backend)
    backend: Microscope = opener(config)
    return backend


def check_free(bind: str) -> None:
    """Raise `AddressInUseError` now when ``bind`` is taken (before a slow backend starts)."""
    context = zmq.Context.instance()
    probe = context.socket(zmq.ROUTER)
    probe.setsockopt(zmq.LINGER, 0)
    try:
        probe.bind(bind)
    except zmq.ZMQError as exc:
        raise bind_error(bind, exc) from exc
    finally:
        probe.close(linger=0)


def make_server(
    config: ServerConfig, *, on_request: Callable[[str], None] | None = None
) -> MicroscopeServer:
    """A bound server for ``config`` (checks the bind and that it is free, loads keys, opens
    the audit log and the request ledger)."""
    check_bind(config)
    if not config.bind.endswith(":*") and not config.bind.endswith(":0"):
        check_free(config.bind)
    keys = KeyRing(config.keys_dir) if config.keys_dir is not None else None
    backend = build_backend(config)
    try:
        scope = SafeMicroscope(backend, config.safety, audit=AuditLog(config.audit_log))
        ledger = Ledger(ledger_path(config))
        server = MicroscopeServer(
            scope, config.bind, keys=keys, ledger=ledger, on_request=on_request
        )
        server.open()
    except BaseException:
        backend.safe()
        backend.close()
        raise
    return server


def serve(config: ServerConfig, *, ready: Callable[[str], Any] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; the microscope is made safe on every exit path."""
    server = make_server(config)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: server.stop())
    try:
        if ready is not None:
            ready(server.endpoint or config.bind)
        server.serve_forever()
    finally:
        server.close()
