"""The daemon's web console: the live frame, curves, knobs, state and buttons, queue,
sessions and log, in a browser.

Why Starlette + uvicorn: an ASGI toolkit of a few thousand lines with WebSockets built in,
well kept (the base of FastAPI), no build step and no JavaScript framework of its own; the
page is plain HTML and one small vanilla JS file. Panel/Bokeh would bring a large JavaScript
bundle and its own server and event model for a handful of plots; FastAPI's extra (OpenAPI,
dependency injection) is not needed by six JSON routes.

`ConsoleServer` runs uvicorn in a thread of the daemon. It listens on loopback by default;
any other address needs HTTPS (``tls_cert`` + ``tls_key``) and an operator token, or it
refuses to start with `ConsoleSecurityError`. The app itself is in `app`, the frame's
picture in `render`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from emauto.agent.console.app import ConsoleBackend, create_app
from emauto.agent.plans import ConsoleConfig
from emauto.errors import ConsoleSecurityError, EmautoError

__all__ = ["ConsoleServer", "console_token"]

TOKEN_ENV = "EMAUTO_CONSOLE_TOKEN"
MIN_TOKEN_LENGTH = 16
START_TIMEOUT_S = 20.0


def console_token(config: ConsoleConfig) -> str | None:
    """The operator token: ``token_file``'s content, else ``$EMAUTO_CONSOLE_TOKEN``, else None."""
    if config.token_file is not None:
        try:
            token = config.token_file.read_text().strip()
        except OSError as exc:
            raise ConsoleSecurityError(
                f"cannot read the token file {config.token_file}: {exc}"
            ) from exc
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConsoleSecurityError(
            f"the operator token must be at least {MIN_TOKEN_LENGTH} characters, got {len(token)}"
        )
    return token


def check_security(config: ConsoleConfig) -> str | None:
    """The token to require; `ConsoleSecurityError` for a non-loopback bind without TLS and a
    token, or TLS half configured."""
    token = console_token(config)
    tls = (config.tls_cert is not None, config.tls_key is not None)
    if tls[0] != tls[1]:
        raise ConsoleSecurityError("console TLS needs both tls_cert and tls_key")
    if not config.loopback:
        missing = []
        if not all(tls):
            missing.append("TLS (console.tls_cert and console.tls_key)")
        if token is None:
            missing.append(f"an operator token (console.token_file or ${TOKEN_ENV})")
        if missing:
            raise ConsoleSecurityError(
                f"the console would listen on {config.host}, beyond this machine, without "
                f"{' and '.join(missing)}; bind 127.0.0.1 or configure them"
            )
    for path in (config.tls_cert, config.tls_key):
        if path is not None and not path.is_file():
            raise ConsoleSecurityError(f"console TLS file {path} does not exist")
    return token


class ConsoleServer:
    """Serve the console for ``daemon`` (its ``config.console``) from a background thread."""

    def __init__(self, daemon: Any, config: ConsoleConfig | None = None) -> None:
        import uvicorn

        self.config = config or daemon.config.console
        token = check_security(self.config)
        backend: ConsoleBackend = daemon
        secure = self.config.tls_cert is not None
        self._closing = threading.Event()
        app = create_app(
            backend, daemon.config.sessions, token=token, secure=secure, closing=self._closing
        )
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((self.config.host, self.config.port))
        except OSError as exc:
            self._socket.close()
            raise EmautoError(
                f"cannot listen on {self.config.host}:{self.config.port} for the console: {exc}"
            ) from exc
        self._socket.listen(64)
        self.port = int(self._socket.getsockname()[1])
        host = f"[{self.config.host}]" if family == socket.AF_INET6 else self.config.host
        self.url = f"{'https' if secure else 'http'}://{host}:{self.port}"
        settings = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            ssl_certfile=str(self.config.tls_cert) if secure else None,
            ssl_keyfile=str(self.config.tls_key) if secure else None,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(settings)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="emauto-console",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise EmautoError(f"the console did not start on {self.url}")
            time.sleep(0.01)

    def close(self) -> None:
        """Stop serving (open WebSockets are closed)."""
        self._closing.set()
        time.sleep(2 * 0.02)  # the WebSocket loops see it and close
        self._server.should_exit = True
        self._thread.join(timeout=5.0)
        self._socket.close()
