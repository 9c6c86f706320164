"""The daemon's control socket: ``status``, ``pause``, ``resume``, ``abort``, ``reset``,
``submit`` (a plan for the queue), ``answer`` (to a hand-off question), ``label`` (an
operator's class for a patch, for the few-shot classifier) and ``shutdown``.

A ZeroMQ ROUTER socket on loopback (or ipc://), spoken to by REQ clients. A request is one
single-part JSON object ``{"command": NAME}`` (``submit`` adds ``"name"`` and ``"plan"``,
``answer`` adds ``"choice"``; ``label`` adds ``"label"`` and either ``"x_px"``, ``"y_px"``
(the patch of the latest image centred on that pixel) or ``"counts"`` (32x32 raw counts),
``"electrons_per_pixel"`` and optionally ``"x_m"``, ``"y_m"``); the reply is
``{"ok": true, "status": {...}}`` or ``{"ok": false, "error": {"type": ..., "message":
...}}``. Malformed requests (several parts, bad JSON, unknown commands) get an error reply
and change nothing. A ROUTER socket has no send/receive state machine, so no message can
wedge it (a REP socket raised EFSM on a two-part request and stopped answering).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emauto.errors import DeadlineExceededError, EmautoError, ProtocolError

Command = Literal[
    "status", "pause", "resume", "abort", "reset", "submit", "answer", "label", "shutdown"
]
MAX_REQUEST_BYTES = 256 * 1024  # a submitted plan

log = logging.getLogger(__name__)


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    command: Command
    name: str | None = Field(default=None, max_length=64)
    plan: list[dict[str, Any]] | None = Field(default=None, max_length=64)
    choice: str | None = Field(default=None, max_length=32)
    label: str | None = Field(default=None, max_length=64)
    x_px: float | None = None
    y_px: float | None = None
    counts: list[list[float]] | None = Field(default=None, max_length=64)
    electrons_per_pixel: float | None = None
    x_m: float | None = None
    y_m: float | None = None

    def payload(self) -> dict[str, Any]:
        """The arguments given (none for the plain commands)."""
        return self.model_dump(exclude={"command"}, exclude_none=True)


class ControlServer:
    """Serve ``handler(command[, payload]) -> status`` on ``address`` from a background
    thread (the payload only when the request carries arguments)."""

    def __init__(self, address: str, handler: Callable[..., dict[str, Any]]) -> None:
        self.address = address
        self._handler = handler
        self._context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            self._socket.bind(address)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise EmautoError(f"cannot bind the control socket {address}: {exc}") from exc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="emauto-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                try:
                    frames = self._socket.recv_multipart()
                except zmq.ZMQError:
                    continue
                self._answer(frames)
        finally:
            self._socket.close()

    def _answer(self, frames: list[bytes]) -> None:
        """Reply to one ROUTER message ``[identity, (b""), body...]`` (REQ adds the empty
        delimiter; a DEALER may not)."""
        identity, rest = frames[0], frames[1:]
        envelope = [identity]
        if rest and rest[0] == b"":
            envelope.append(b"")
            rest = rest[1:]
        if len(rest) != 1:
            reply = _error(
                ProtocolError(f"expected a single-part request, got {len(rest)} part(s)")
            )
        else:
            reply = self._reply(rest[0])
        with contextlib.suppress(zmq.ZMQError):  # the peer went away: nothing to answer
            self._socket.send_multipart([*envelope, json.dumps(reply).encode()], zmq.NOBLOCK)

    def _reply(self, raw: bytes) -> dict[str, Any]:
        try:
            request = ControlRequest.model_validate_json(raw)
            payload = request.payload()
            if payload:
                return {"ok": True, "status": self._handler(request.command, payload)}
            return {"ok": True, "status": self._handler(request.command)}
        except ValidationError as exc:
            return _error(
                ProtocolError(
                    f'expected {{"command": one of {list(Command.__args__)}}}, '  # type: ignore[attr-defined]
                    f"got {raw[:200]!r}: {exc.errors()[0]['msg']}"
                )
            )
        except EmautoError as exc:
            return _error(exc)
        except Exception as exc:  # a handler bug must not silence the control socket
            log.exception("control command failed")
            return _error(exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def _error(error: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": {"type": type(error).__name__, "message": str(error)[:1000]}}


def send_command(
    address: str,
    command: str,
    timeout_s: float = 5.0,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send one command (with ``payload``'s arguments) to a daemon; return its reply."""
    context = zmq.Context.instance()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(address)
        socket.send(json.dumps({"command": command, **(payload or {})}).encode())
        if not socket.poll(int(timeout_s * 1000)):
            raise DeadlineExceededError(
                f"no daemon answered on {address} within {timeout_s:g} s; is it running?"
            )
        reply: dict[str, Any] = json.loads(socket.recv())
        return reply
    finally:
        socket.close()
