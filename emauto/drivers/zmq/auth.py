"""CURVE keys and the client allow-list, through pyzmq's `zmq.auth`.

A key folder (``emauto keys create DIR``) holds::

    DIR/server.key, DIR/server.key_secret        the server's key pair
    DIR/agents/NAME.key                          public keys allowed as agents
    DIR/operators/NAME.key                       public keys allowed as operators
    DIR/clients/NAME.key, NAME.key_secret        client key pairs (copy to the agent PC)

Agents may read, set knobs and acquire; only operators may change limits or reset the
watchdog. Removing a public key from ``agents/`` or ``operators/`` revokes it within a second.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from emauto.errors import AuthError

Role = Literal["agent", "operator"]


def create_server_keys(folder: Path) -> Path:
    """Create the server key pair in ``folder`` (and the allow-list folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("agents", "operators", "clients"):
        (folder / sub).mkdir(exist_ok=True)
    if not (folder / "server.key_secret").exists():
        zmq.auth.create_certificates(folder, "server")
        os.chmod(folder / "server.key_secret", 0o600)
    return folder / "server.key_secret"


def create_client_keys(folder: Path, name: str, role: Role) -> Path:
    """Create a client key pair ``clients/NAME`` and allow its public key as ``role``."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise AuthError(f"key name must be letters, digits, - or _; got {name!r}")
    create_server_keys(folder)
    clients = folder / "clients"
    public, secret = zmq.auth.create_certificates(clients, name)
    os.chmod(secret, 0o600)
    shutil.copy(public, folder / f"{role}s" / f"{name}.key")
    return Path(secret)


def load_secret(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) key of a ``*.key_secret`` file; raises `AuthError` if unusable."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot load the CURVE key pair {path}: {exc}") from exc
    if secret is None:
        raise AuthError(f"{path} holds no secret key; expected a .key_secret file")
    return public, secret


def load_public(path: Path) -> bytes:
    """The public key of a ``*.key`` file."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot load the CURVE public key {path}: {exc}") from exc
    return public


class KeyRing:
    """The server's CURVE key pair and the allow-lists of agent and operator public keys."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.public, self.secret = load_secret(self.folder / "server.key_secret")
        self._agents: dict[bytes, bool] = {}
        self._operators: dict[bytes, bool] = {}
        self._auth: ThreadAuthenticator | None = None
        self._stamp: tuple[float, ...] = ()
        self._checked = 0.0
        self.reload()

    def _dirs(self) -> tuple[Path, Path]:
        return self.folder / "agents", self.folder / "operators"

    def _mtimes(self) -> tuple[float, ...]:
        stamps: list[float] = []
        for folder in self._dirs():
            stamps.append(folder.stat().st_mtime if folder.exists() else 0.0)
            if folder.exists():
                stamps.extend(p.stat().st_mtime for p in sorted(folder.glob("*.key")))
        return tuple(stamps)

    def reload(self) -> None:
        """Read the allow-lists again and hand them to the authenticator."""
        agents, operators = self._dirs()
        self._agents = zmq.auth.load_certificates(agents) if agents.exists() else {}
        self._operators = zmq.auth.load_certificates(operators) if operators.exists() else {}
        self._stamp = self._mtimes()
        if self._auth is not None:
            self._auth.certs["*"] = {**self._agents, **self._operators}

    def reload_if_changed(self, every_s: float = 0.5) -> None:
        """Reload when a key file was added or removed (checked at most every ``every_s``)."""
        now = time.monotonic()
        if now - self._checked < every_s:
            return
        self._checked = now
        if self._mtimes() != self._stamp:
            self.reload()

    def start(self, context: zmq.Context[Any]) -> None:
        """Start the ZAP authenticator thread with the allow-list."""
        if self._auth is not None:
            return
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.allow_any = False
        self._auth.certs["*"] = {**self._agents, **self._operators}

    def stop(self) -> None:
        """Stop the authenticator thread."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def configure_server(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` a CURVE server with this key pair."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def role_of(self, user_id: str | None) -> Role:
        """The role of an authenticated public key (Z85 text)."""
        if user_id is not None and user_id.encode() in self._operators:
            return "operator"
        return "agent"
