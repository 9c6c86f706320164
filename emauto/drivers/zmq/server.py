"""The microscope-side server: a ROUTER socket in front of a `SafeMicroscope`.

One thread, one request at a time. Every message is validated (sizes, schema, version,
arrays) before anything reaches the safety layer, and the safety layer checks every command
before the backend sees it. Replies are cached per client by sequence number, so a retried
request is answered from the cache and never applied twice. The server stays up on any bad
input; it goes safe on every exit path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from emauto.drivers.zmq import protocol
from emauto.drivers.zmq.auth import KeyRing
from emauto.errors import (
    ConfigError,
    EmautoError,
    InvalidRequestError,
    PermissionDeniedError,
    ProtocolError,
)
from emauto.microscope import GroundTruth, ImageRequest, RonchigramRequest
from emauto.version import __version__
from emauto.wrappers.safety import SafeMicroscope, beam_time_s

log = logging.getLogger(__name__)

Frames = list[bytes | memoryview]


class MicroscopeServer:
    """Serve ``microscope`` on ``bind``; CURVE with an allow-list when ``keys`` is given.

    ``on_request`` (tests) is called with the op of every request that passed validation,
    i.e. that reached the handler.
    """

    def __init__(
        self,
        microscope: SafeMicroscope,
        bind: str = "tcp://127.0.0.1:5555",
        *,
        keys: KeyRing | None = None,
        max_clients: int = 64,
        on_request: Callable[[str], None] | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.microscope = microscope
        self.bind = bind
        self.keys = keys
        self.on_request = on_request
        self.handled = 0
        self.rejected = 0
        #: requests whose handling raised past every typed check (a bug; the server stays up)
        self.crashes = 0
        self._cache: OrderedDict[str, tuple[int, Frames]] = OrderedDict()
        self._max_clients = max_clients
        # a context of its own: the ZAP handler's inproc endpoint is one per context
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._stop = threading.Event()
        self._socket: zmq.Socket[Any] | None = None
        self.endpoint: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> str:
        """Bind the socket (and start the authenticator); returns the bound endpoint."""
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REQUEST_FRAME_BYTES)
        socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.keys is not None:
            self.keys.start(self._context)
            self.keys.configure_server(socket)
        socket.bind(self.bind)
        self._socket = socket
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.endpoint

    def stop(self) -> None:
        """Ask `serve_forever` to return (thread-safe)."""
        self._stop.set()

    def close(self) -> None:
        """Go safe, close the socket and the backend."""
        try:
            self.microscope.close()
        finally:
            if self._socket is not None:
                self._socket.close(linger=0)
                self._socket = None
            if self.keys is not None:
                self.keys.stop()
            if self._own_context:
                self._context.term()

    def serve_forever(self, poll_ms: int = 50) -> None:
        """Handle requests until `stop`; checks the watchdog between requests."""
        if self._socket is None:
            self.open()
        assert self._socket is not None
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                self.microscope.check_watchdog()
                if self.keys is not None:
                    self.keys.reload_if_changed()
                if not poller.poll(poll_ms):
                    continue
                try:
                    frames = self._socket.recv_multipart(copy=False)
                except zmq.ZMQError as exc:  # pragma: no cover - transport hiccup
                    log.warning("receive failed: %s", exc)
                    continue
                try:
                    self._serve_one(frames)
                except Exception as exc:  # the last line of defence: the server stays up
                    self.crashes += 1
                    log.exception("request handling failed")
                    self.microscope.audit.record(
                        "server", "failed", caller="server", role="system", error=exc
                    )
                finally:
                    del frames
        finally:
            self.microscope.safe(caller="server", role="system")

    # ------------------------------------------------------------------ one request

    def _serve_one(self, frames: Sequence[zmq.Frame]) -> None:
        assert self._socket is not None
        if len(frames) < 2:
            self.rejected += 1
            return
        identity = frames[0].bytes
        user = _user_id(frames[1])
        payload = [f.bytes for f in frames[1:]]
        try:
            header, arrays = protocol.decode_request(payload)
        except ProtocolError as exc:
            self.rejected += 1
            self.microscope.audit.record("decode", "rejected", caller=user or "?", error=exc)
            self._send(identity, protocol.encode_reply(0, error=exc))
            return
        key = f"{user}/{header.client}"
        cached = self._cache.get(key)
        if cached is not None:
            if header.seq == cached[0]:
                self._send(identity, cached[1])
                return
            if header.seq < cached[0]:
                return  # a stale (reordered or late-retried) request: the client moved on
        reply = self._handle(header, arrays, user)
        self._cache[key] = (header.seq, reply)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_clients:
            self._cache.popitem(last=False)
        self._send(identity, reply)

    def _send(self, identity: bytes, frames: Frames) -> None:
        assert self._socket is not None
        try:
            self._socket.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # the peer went away: nothing to do
            log.info("reply dropped: %s", exc)

    def role_of(self, user: str | None) -> str:
        """``operator`` or ``agent``; without CURVE (loopback) every client is an operator."""
        if self.keys is None:
            return "operator"
        return self.keys.role_of(user)

    def _handle(self, header: protocol.Request, arrays: dict[str, Any], user: str | None) -> Frames:
        role = self.role_of(user)
        caller = f"{header.client}@{(user or 'loopback')[:12]}"
        scope = self.microscope
        try:
            if header.op in protocol.OPERATOR_OPS and role != "operator":
                raise PermissionDeniedError(
                    f"{header.op} needs an operator key; this client is an {role}"
                )
            op = header.op
            # everything below has passed validation: it reaches the handler
            self.handled += 1
            if self.on_request is not None:
                self.on_request(op)
            result: Any
            if op == "hello":
                result = self._hello(role)
            elif op == "describe":
                scope.heartbeat(caller=caller)
                result = scope.describe()
            elif op == "read":
                result = scope.read(caller=caller, role=role)
            elif op == "set":
                result = scope.set(protocol.parse_set_args(header.args), caller=caller, role=role)
            elif op == "acquire":
                request = protocol.parse_acquisition(header.args, arrays)
                self._check_deadline(request, header.deadline_s)
                result = scope.acquire(request, caller=caller, role=role)
            elif op == "safe":
                scope.safe(caller=caller, role=role)
                result = None
            elif op == "heartbeat":
                scope.heartbeat(caller=caller)
                result = {"tripped": scope.tripped}
            elif op == "status":
                result = scope.status()
            elif op == "twin_truth":
                result = self._twin_truth()
            elif op == "reset_watchdog":
                scope.reset_watchdog(caller=caller)
                result = scope.status()
            else:  # set_limits
                patch, replace = _limits_args(header.args)
                scope.update_limits(patch, replace=replace, caller=caller)
                result = scope.status()
            return protocol.encode_reply(header.seq, result=result)
        except EmautoError as exc:
            if isinstance(exc, PermissionDeniedError | ProtocolError | ConfigError):
                scope.audit.record(header.op, "rejected", caller=caller, role=role, error=exc)
            return protocol.encode_reply(header.seq, error=exc)
        except Exception as exc:  # a backend bug must not take the server down
            log.exception("request %s failed", header.op)
            scope.audit.record(header.op, "failed", caller=caller, role=role, error=exc)
            return protocol.encode_reply(header.seq, error=exc)

    def _check_deadline(self, request: RonchigramRequest | ImageRequest, deadline_s: float) -> None:
        """Refuse an acquisition whose beam time alone outlasts the client's deadline: the
        client would give up and retry while the beam is still on."""
        dwell = 0.0
        if isinstance(request, ImageRequest) and request.dwell_s is None:
            dwell = self.microscope.read(caller="server", role="system").knobs["scan_dwell"]
        needed = beam_time_s(request, dwell)
        if isinstance(request, RonchigramRequest):
            needed += request.wait_s
        if needed > deadline_s:
            raise InvalidRequestError(
                f"the acquisition needs {needed:.3g} s of beam and wait time, more than the "
                f"request's deadline of {deadline_s:.3g} s; raise the client's timeout"
            )

    def _hello(self, role: str) -> dict[str, Any]:
        ops = protocol.OPS if role == "operator" else protocol.AGENT_OPS
        config = self.microscope.config
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "server": f"emauto {__version__}",
            "backend": self.microscope.describe().backend,
            "role": role,
            "ops": list(ops),
            "heartbeat_interval_s": config.heartbeat_interval_s,
            "limits": {
                "max_header_bytes": protocol.MAX_HEADER_BYTES,
                "max_request_frame_bytes": protocol.MAX_REQUEST_FRAME_BYTES,
                "max_reply_frame_bytes": protocol.MAX_REPLY_FRAME_BYTES,
                "max_frames": protocol.MAX_FRAMES,
            },
            "time": time.time(),
            "twin_truth": self._has_twin_truth(),
        }

    def _has_twin_truth(self) -> bool:
        return isinstance(self.microscope.unwrapped, GroundTruth)

    def _twin_truth(self) -> dict[str, Any]:
        """A twin's ground truth: the Strehl ratio and the true aberrations (m)."""
        backend = self.microscope.unwrapped
        if not isinstance(backend, GroundTruth):
            raise InvalidRequestError("twin_truth: this backend is not a twin; it has no truth")
        return {
            "strehl": float(backend.strehl_ratio()),
            "aberrations_m": backend.true_aberrations().to_dict(),
        }


def _limits_args(args: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``set_limits`` arguments: ``{"config": {...}, "replace": false}``."""
    unknown = sorted(set(args) - {"config", "replace"})
    config, replace = args.get("config"), args.get("replace", False)
    if unknown or not isinstance(config, dict) or not isinstance(replace, bool):
        raise ProtocolError(
            'set_limits expects args {"config": {...SafetyConfig fields...}, "replace": bool}, '
            f"got keys {sorted(args)}"
        )
    return config, replace


def _user_id(frame: zmq.Frame) -> str | None:
    """The CURVE public key (Z85) the authenticator attached to this message, if any."""
    try:
        user = frame.get("User-Id")
    except (zmq.ZMQError, KeyError, AttributeError):
        return None
    return user if isinstance(user, str) and user else None
