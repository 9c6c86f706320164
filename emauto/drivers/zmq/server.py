"""The microscope-side server: a ROUTER socket in front of a `SafeMicroscope`.

One thread, one request at a time. Every message is validated (sizes, schema, version,
arrays) before anything reaches the safety layer, and the safety layer checks every command
before the backend sees it. Exactly-once: a `Ledger` remembers each client's recent outcomes
(persisted with fsync when it has a file), so a retried command is answered from the reply
cache, or from the ledger, and never applied twice, also after the cache let the reply go or
the server restarted. The reply cache is bounded in bytes. The server stays up on any bad
input; it goes safe on every exit path.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from emauto.drivers.zmq import protocol
from emauto.drivers.zmq.auth import KeyRing
from emauto.drivers.zmq.client import error_from_reply
from emauto.drivers.zmq.ledger import MUTATING, Ledger, Outcome
from emauto.errors import (
    AddressInUseError,
    AlreadyAppliedError,
    ConfigError,
    EmautoError,
    InvalidRequestError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ProtocolError,
)
from emauto.microscope import GroundTruth, ImageRequest, RonchigramRequest, SettlingGroundTruth
from emauto.version import __version__
from emauto.wrappers.safety import SafeMicroscope, beam_time_s

log = logging.getLogger(__name__)

Frames = list[bytes | memoryview]


#: Default bound of the reply cache, bytes (replies beyond it are answered from the ledger).
MAX_CACHE_BYTES = 64 * 1024 * 1024


class MicroscopeServer:
    """Serve ``microscope`` on ``bind``; CURVE with an allow-list when ``keys`` is given.

    ``ledger`` remembers outcomes for exactly-once (give it a file to survive restarts; the
    default keeps them in memory for ``max_clients`` clients). ``max_cache_bytes`` bounds
    the cached replies. ``on_request`` (tests) is called with the op of every request that
    passed validation, i.e. that reached the handler.
    """

    def __init__(
        self,
        microscope: SafeMicroscope,
        bind: str = "tcp://127.0.0.1:5555",
        *,
        keys: KeyRing | None = None,
        max_clients: int = 4096,
        max_cache_bytes: int = MAX_CACHE_BYTES,
        ledger: Ledger | None = None,
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
        self.ledger = ledger if ledger is not None else Ledger(max_clients=max_clients)
        self._cache: OrderedDict[str, tuple[int, Frames, int]] = OrderedDict()
        self._cache_bytes = 0
        self._max_cache_bytes = max_cache_bytes
        # a context of its own: the ZAP handler's inproc endpoint is one per context
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._stop = threading.Event()
        self._socket: zmq.Socket[Any] | None = None
        self.endpoint: str | None = None

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the reply cache."""
        return self._cache_bytes

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> str:
        """Bind the socket (and start the authenticator); returns the bound endpoint.
        Raises `AddressInUseError` at once when another process listens there."""
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REQUEST_FRAME_BYTES)
        socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            if self.keys is not None:
                self.keys.start(self._context)
                self.keys.configure_server(socket)
            socket.bind(self.bind)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            if self.keys is not None:
                self.keys.stop()
            raise bind_error(self.bind, exc) from exc
        self._socket = socket
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.endpoint

    def stop(self) -> None:
        """Ask `serve_forever` to return (thread-safe)."""
        self._stop.set()

    def close(self) -> None:
        """Go safe, close the socket, the backend and the ledger."""
        try:
            self.microscope.close()
        finally:
            self.ledger.close()
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
        # count and size before anything is copied out of the received message
        payload: list[bytes | memoryview] = [f.buffer for f in frames[1:]]
        try:
            header, arrays = protocol.decode_request(payload)
        except ProtocolError as exc:
            self.rejected += 1
            self.microscope.audit.record("decode", "rejected", caller=user or "?", error=exc)
            self._send(identity, protocol.encode_reply(0, error=exc))
            return
        finally:
            del payload
        key = f"{user}/{header.client}"
        last = self.ledger.last(key)
        if last is not None and last.state == "fence" and header.seq <= last.seq:
            return  # fenced off after `applied` answered not_received: never applied
        if last is not None and header.seq == last.seq:
            self._send(identity, self._repeat(key, header, last))
            return
        if last is not None and header.seq < last.seq:
            return  # a stale (reordered or late-retried) request: the client moved on
        mutating = header.op in MUTATING
        if last is None and mutating and header.seq <= self.ledger.floor:
            forgotten = OutcomeUnknownError(
                f"{header.op} seq {header.seq}: this server no longer remembers client "
                f"{header.client!r} and cannot tell a new command from a retry of one applied "
                f"before; not applied. Start sequence numbers above {self.ledger.floor}"
            )
            self._send(identity, protocol.encode_reply(header.seq, error=forgotten))
            return
        try:  # arguments are checked before anything is logged or applied
            parsed = _parse_args(header, arrays)
        except ProtocolError as exc:
            self.rejected += 1
            self.microscope.audit.record(header.op, "rejected", caller=key[:100], error=exc)
            self._send(identity, protocol.encode_reply(header.seq, error=exc))
            return
        if mutating:
            self.ledger.start(key, header.seq, header.op)  # fsync'd before it is applied
        reply, error = self._handle(header, parsed, user)
        self.ledger.finish(
            key,
            header.seq,
            header.op,
            ok=error is None,
            error=_error_info(error),
            header=bytes(reply[0]) if len(reply) == 1 else None,
        )  # fsync'd before the reply leaves
        self._remember(key, header.seq, reply)
        self._send(identity, reply)

    def _repeat(self, key: str, header: protocol.Request, last: Outcome) -> Frames:
        """The reply to a retry of the client's latest request: never applied again."""
        cached = self._cache.get(key)
        if cached is not None and cached[0] == header.seq:
            self._cache.move_to_end(key)
            return cached[1]
        if last.state == "started":
            error: EmautoError = OutcomeUnknownError(
                f"{last.op} seq {last.seq}: the server stopped while this command ran; it may "
                "or may not have reached the microscope and is not applied again. Read the "
                "state before going on"
            )
            return protocol.encode_reply(header.seq, error=error)
        if last.header is not None:
            return [last.header.encode("utf-8")]
        if last.ok:
            error = AlreadyAppliedError(
                f"{last.op} seq {last.seq} was applied at {_clock(last.time)} and is not "
                "applied again; its reply (e.g. the image) is no longer held"
            )
        elif last.error is not None:
            error = error_from_reply(protocol.ErrorInfo.model_validate(last.error))
        else:  # pragma: no cover - a done outcome has ok or an error
            error = OutcomeUnknownError(f"{last.op} seq {last.seq}: outcome not recorded")
        return protocol.encode_reply(header.seq, error=error)

    def _remember(self, key: str, seq: int, reply: Frames) -> None:
        """Cache ``reply`` for retries, within `max_cache_bytes` (oldest clients go first)."""
        old = self._cache.pop(key, None)
        if old is not None:
            self._cache_bytes -= old[2]
        size = sum(len(frame) for frame in reply)
        if size <= self._max_cache_bytes:
            self._cache[key] = (seq, reply, size)
            self._cache_bytes += size
        while self._cache_bytes > self._max_cache_bytes or len(self._cache) > (
            self.ledger.max_clients
        ):
            _, (_, _, freed) = self._cache.popitem(last=False)
            self._cache_bytes -= freed

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

    def _handle(
        self, header: protocol.Request, parsed: Any, user: str | None
    ) -> tuple[Frames, BaseException | None]:
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
                result = scope.set(parsed, caller=caller, role=role)
            elif op == "acquire":
                self._check_deadline(parsed, header.deadline_s)
                result = scope.acquire(parsed, caller=caller, role=role)
            elif op == "safe":
                scope.safe(caller=caller, role=role)
                result = None
            elif op == "heartbeat":
                if parsed is not None:  # beats for another client id (its command socket)
                    caller = f"{parsed}@{(user or 'loopback')[:12]}"
                scope.heartbeat(caller=caller)
                result = {"tripped": scope.tripped}
            elif op == "applied":
                result = self._applied(header, parsed, user)
            elif op == "status":
                result = scope.status()
            elif op == "twin_truth":
                result = self._twin_truth(parsed)
            elif op == "reset_watchdog":
                scope.reset_watchdog(caller=caller)
                result = scope.status()
            else:  # set_limits
                patch, replace = parsed
                scope.update_limits(patch, replace=replace, caller=caller)
                result = scope.status()
            return protocol.encode_reply(header.seq, result=result), None
        except EmautoError as exc:
            if isinstance(exc, PermissionDeniedError | ProtocolError | ConfigError):
                scope.audit.record(header.op, "rejected", caller=caller, role=role, error=exc)
            return protocol.encode_reply(header.seq, error=exc), exc
        except Exception as exc:  # a backend bug must not take the server down
            log.exception("request %s failed", header.op)
            scope.audit.record(header.op, "failed", caller=caller, role=role, error=exc)
            return protocol.encode_reply(header.seq, error=exc), exc

    def _applied(
        self, header: protocol.Request, args: protocol.AppliedArgs, user: str | None
    ) -> dict[str, Any]:
        """Was request ``seq`` of ``client`` (default: the asker) applied? ``state``:
        ``applied``, ``failed`` (refused or failed; ``error`` says how), ``interrupted`` (the
        server stopped while it ran: it may have reached the microscope), ``not_received``
        (never arrived; from now on a late copy is dropped, never applied) or ``forgotten``.
        """
        client = args.client or header.client
        key = f"{user}/{client}"
        answer: dict[str, Any] = {"client": client, "seq": args.seq}
        outcome = self.ledger.find(key, args.seq)
        if outcome is not None:
            state = "interrupted"
            if outcome.state == "done":
                state = "applied" if outcome.ok else "failed"
            answer.update(state=state, op=outcome.op, time=outcome.time, error=outcome.error)
            return answer
        last = self.ledger.last(key)
        if (last is None and args.seq > self.ledger.floor) or (
            last is not None and last.seq < args.seq
        ):
            self.ledger.fence(key, args.seq)  # a late copy can no longer be applied
            answer["state"] = "not_received"
        else:
            answer["state"] = "forgotten"
        answer["persistent"] = self.ledger.persistent
        return answer

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
                "max_request_bytes": protocol.MAX_REQUEST_BYTES,
            },
            "time": time.time(),
            "twin_truth": self._has_twin_truth(),
            "exactly_once": "persistent" if self.ledger.persistent else "memory",
        }

    def _has_twin_truth(self) -> bool:
        return isinstance(self.microscope.unwrapped, GroundTruth)

    def _twin_truth(self, after_s: float | None = None) -> dict[str, Any]:
        """A twin's ground truth: the Strehl ratio and the true aberrations (m), now or
        ``after_s`` ahead with no further command (the lenses settled)."""
        backend = self.microscope.unwrapped
        if not isinstance(backend, GroundTruth):
            raise InvalidRequestError("twin_truth: this backend is not a twin; it has no truth")
        if after_s is None:
            return {
                "strehl": float(backend.strehl_ratio()),
                "aberrations_m": backend.true_aberrations().to_dict(),
            }
        if not isinstance(backend, SettlingGroundTruth):
            raise InvalidRequestError("twin_truth: this twin cannot look ahead (after_s)")
        return {
            "strehl": float(backend.strehl_ratio_after(after_s)),
            "aberrations_m": backend.aberrations_after(after_s).to_dict(),
        }


def _parse_args(header: protocol.Request, arrays: dict[str, Any]) -> Any:
    """The op's arguments, strictly checked (`ProtocolError`); None for ops without any."""
    op = header.op
    if op == "set":
        return protocol.parse_set_args(header.args)
    if op == "acquire":
        return protocol.parse_acquisition(header.args, arrays)
    if op == "set_limits":
        return _limits_args(header.args)
    if op == "heartbeat":
        return protocol.parse_heartbeat_args(header.args)
    if op == "applied":
        return protocol.parse_applied_args(header.args)
    if op == "twin_truth":
        return protocol.parse_twin_truth_args(header.args)
    if arrays:
        raise ProtocolError(f"{op} takes no array frames; got {sorted(arrays)}")
    return None


def bind_error(bind: str, exc: zmq.ZMQError) -> ConfigError:
    """A typed error for a failed bind (address in use, bad endpoint)."""
    if exc.errno == errno.EADDRINUSE:
        return AddressInUseError(
            f"cannot listen on {bind}: the address is already in use (another emauto serve "
            "there?); stop it or choose another --bind port"
        )
    return ConfigError(f"cannot listen on {bind}: {exc}")


def _error_info(error: BaseException | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": type(error).__name__[:64], "message": str(error)[:4096]}


def _clock(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


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
