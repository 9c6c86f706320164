"""The ZeroMQ client: the Microscope contract over the wire (``tcp://host:port``).

Lazy Pirate (zguide ch. 4): every request has a deadline; on timeout the socket is closed
with LINGER 0, reopened, and the *same* request (same client id and sequence number) is sent
again, a bounded number of times with exponential backoff. The server answers a repeated
sequence number from its cache, so a retry never applies a command twice.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import zmq

from emauto import errors
from emauto.drivers.zmq import protocol
from emauto.drivers.zmq.auth import load_public, load_secret
from emauto.errors import (
    AuthError,
    BackendError,
    ClosedError,
    ConfigError,
    DeadlineExceededError,
    EmautoError,
    InvalidRequestError,
    ProtocolError,
)
from emauto.microscope import (
    Frame,
    ImageRequest,
    MicroscopeDescription,
    MicroscopeState,
    RonchigramRequest,
    validate_setpoints,
)
from emauto.optics import Aberrations
from emauto.wrappers.safety import beam_time_s

CurveKeys = tuple[Path, Path]  # (client .key_secret, server .key)


def error_from_reply(info: protocol.ErrorInfo) -> EmautoError:
    """Rebuild a typed emauto error from a reply; unknown types become `BackendError`."""
    cls = getattr(errors, info.type, None)
    if isinstance(cls, type) and issubclass(cls, EmautoError):
        return cls(info.message)
    return BackendError(f"server error {info.type}: {info.message}")


class Channel:
    """One DEALER socket, one client id, one request at a time; Lazy Pirate retries."""

    def __init__(
        self,
        endpoint: str,
        client_id: str,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        curve: tuple[bytes, bytes, bytes] | None,
        context: zmq.Context[Any],
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._curve = curve
        self._context = context
        self._lock = threading.Lock()
        # time-based start: a client restarted with the same id is never taken for a stale one
        self._seq = time.time_ns() // 1000
        #: sequence number of the latest request sent (for `RemoteMicroscope.applied`)
        self.last_seq: int | None = None
        self._socket: zmq.Socket[Any] | None = None
        self.closed = False

    def _open(self) -> zmq.Socket[Any]:
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REPLY_FRAME_BYTES)
        if self._curve is not None:
            public, secret, server = self._curve
            socket.curve_publickey = public
            socket.curve_secretkey = secret
            socket.curve_serverkey = server
        socket.connect(self.endpoint)
        return socket

    def _drop(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def close(self) -> None:
        """Close the socket; later calls raise `ClosedError`."""
        with self._lock:
            self._drop()
            self.closed = True

    def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        request: RonchigramRequest | ImageRequest | None = None,
        extra_s: float = 0.0,
    ) -> tuple[Any, dict[str, Any]]:
        """Send one request and wait for its reply, retrying on timeout."""
        with self._lock:
            if self.closed:
                raise ClosedError(f"the connection to {self.endpoint} is closed")
            self._seq += 1
            self.last_seq = self._seq
            deadline = min(self.timeout_s + extra_s, 3600.0)
            frames = protocol.encode_request(
                client=self.client_id,
                seq=self._seq,
                op=op,
                deadline_s=deadline,
                args=args,
                request=request,
            )
            for attempt in range(self.retries + 1):
                if self._socket is None:
                    self._socket = self._open()
                reply = None
                if self._send(self._socket, frames, deadline):
                    reply = self._wait(self._socket, self._seq, deadline)
                if reply is not None:
                    header, arrays = reply
                    if not header.ok:
                        assert header.error is not None
                        raise error_from_reply(header.error)
                    return header.result, arrays
                self._drop()  # Lazy Pirate: a fresh socket, the same request
                if attempt < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
            if self._curve is not None:
                hint = " (check the CURVE keys)"
            else:
                hint = (
                    "; is the server running? It may require CURVE keys: connect with "
                    "?key=CLIENT.key_secret&server_key=server.key (--key/--server-key)"
                )
            raise DeadlineExceededError(
                f"{op}: no reply from {self.endpoint} within {deadline:g} s after "
                f"{self.retries + 1} tries{hint}"
            )

    @staticmethod
    def _send(socket: zmq.Socket[Any], frames: list[bytes | memoryview], deadline_s: float) -> bool:
        """Send within the deadline; False when the socket has no peer to queue for (e.g. after
        a failed CURVE handshake), which a blocking send would wait for forever."""
        socket.setsockopt(zmq.SNDTIMEO, max(int(deadline_s * 1000), 1))
        try:
            socket.send_multipart(frames, copy=False)
        except zmq.Again:
            return False
        return True

    @staticmethod
    def _wait(
        socket: zmq.Socket[Any], seq: int, deadline_s: float
    ) -> tuple[protocol.Reply, dict[str, Any]] | None:
        end = time.monotonic() + deadline_s
        while True:
            left_ms = int(max(end - time.monotonic(), 0) * 1000)
            if not socket.poll(left_ms, zmq.POLLIN):
                return None
            header, arrays = protocol.decode_reply(socket.recv_multipart(copy=True))
            if header.seq == seq:
                return header, arrays
            if header.seq == 0 and not header.ok and header.error is not None:
                raise error_from_reply(header.error)  # the server could not decode us
            # otherwise a late reply to an earlier request: ignore it


class RemoteMicroscope:
    """A microscope behind an `emauto serve` server. Thread-safe; one request at a time.

    ``timeout_s`` is the deadline of one try (acquisitions add their beam time); ``retries``
    tries follow a timeout, ``backoff_s`` doubling between them. ``heartbeat_s`` starts a
    background heartbeat on its own socket, for the server's watchdog.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        curve: CurveKeys | None = None,
        client_id: str | None = None,
        heartbeat_s: float | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id or f"c-{uuid.uuid4().hex[:12]}"
        self._settings: dict[str, Any] = {
            "timeout_s": timeout_s,
            "retries": retries,
            "backoff_s": backoff_s,
            "curve": _load_curve(curve) if curve is not None else None,
            "context": context or zmq.Context.instance(),
        }
        self._channel = Channel(endpoint, self.client_id, **self._settings)
        self._call = self._channel.call
        self._description: MicroscopeDescription | None = None
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.hello: dict[str, Any] = self._call("hello")[0]
        if self.hello.get("protocol") != protocol.PROTOCOL_VERSION:
            self.close()
            raise ProtocolError(
                f"server speaks protocol {self.hello.get('protocol')}, "
                f"this client {protocol.PROTOCOL_VERSION}"
            )
        if heartbeat_s is not None:
            self.start_heartbeat(heartbeat_s)

    # ------------------------------------------------------------------ contract

    def describe(self) -> MicroscopeDescription:
        """The server's description (soft limits applied); cached after the first call."""
        if self._description is None:
            result, _ = self._call("describe")
            self._description = MicroscopeDescription.model_validate(result)
        return self._description

    def read(self) -> MicroscopeState:
        """The current state."""
        result, _ = self._call("read")
        return MicroscopeState.model_validate(result)

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Apply absolute setpoints; checked here first, then by the server's safety layer."""
        checked = validate_setpoints(self.describe(), {}, setpoints)
        result, _ = self._call("set", {"setpoints": checked})
        return MicroscopeState.model_validate(result)

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Take a Ronchigram or an image; the deadline grows with the beam time."""
        if not isinstance(request, RonchigramRequest | ImageRequest):
            raise InvalidRequestError(
                f"expected a RonchigramRequest or ImageRequest, got {type(request).__name__}"
            )
        extra = 0.0
        if isinstance(request, RonchigramRequest):
            extra = request.exposure_s + request.wait_s
        else:
            extra = beam_time_s(request, self.describe().scan.max_dwell_s) * 1.5
        result, arrays = self._call("acquire", request=request, extra_s=extra)
        return protocol.frame_from_reply(result, arrays)

    def safe(self) -> None:
        """Blank the beam and stop motion (raises only if the server cannot be reached)."""
        self._call("safe")

    def close(self, *, safe: bool = True) -> None:
        """Make the microscope safe (best effort, one short try), stop the heartbeat and close
        the socket. ``safe=False`` leaves the beam as it is (e.g. to hand over to another
        client); the server's watchdog still guards a silent agent."""
        self.stop_heartbeat()
        if safe and not self._channel.closed:
            channel = self._channel
            timeout, retries = channel.timeout_s, channel.retries
            channel.timeout_s, channel.retries = min(timeout, 1.0), 0
            try:
                channel.call("safe")
            except EmautoError:
                pass  # the server is gone: its own exit path made the microscope safe
            finally:
                channel.timeout_s, channel.retries = timeout, retries
        self._channel.close()

    def __enter__(self) -> RemoteMicroscope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ extras

    def heartbeat(self) -> dict[str, Any]:
        """Tell the watchdog the agent is alive; returns ``{"tripped": bool}``."""
        result, _ = self._call("heartbeat")
        return dict(result)

    def status(self) -> dict[str, Any]:
        """Watchdog, dose budget and limits."""
        result, _ = self._call("status")
        return dict(result)

    @property
    def last_seq(self) -> int | None:
        """Sequence number of this client's latest request (for `applied`)."""
        return self._channel.last_seq

    def applied(self, seq: int | None = None) -> dict[str, Any]:
        """Was this client's request ``seq`` (default: the last one before this call)
        applied? ``state``: ``applied``, ``failed``, ``interrupted`` (the server stopped while
        it ran), ``not_received`` (never arrived; a late copy will be dropped) or
        ``forgotten``. Ask after a `DeadlineExceededError` before doing a command again."""
        if seq is None:
            seq = self._channel.last_seq
            if seq is None:
                raise InvalidRequestError("applied: this client has sent no request yet")
        result, _ = self._call("applied", {"seq": seq})
        return dict(result)

    def reset_watchdog(self) -> dict[str, Any]:
        """Operator only: re-enable commands after the watchdog tripped."""
        result, _ = self._call("reset_watchdog")
        return dict(result)

    def set_limits(self, config: Mapping[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Operator only: merge ``config`` (JSON fields of `SafetyConfig`, ``None`` restores a
        default) into the server's safety configuration; ``replace=True`` installs it whole
        and the server refuses one that does not name every field."""
        args: dict[str, Any] = {"config": dict(config)}
        if replace:
            args["replace"] = True
        result, _ = self._call("set_limits", args)
        self._description = None
        return dict(result)

    def start_heartbeat(self, interval_s: float) -> None:
        """Send heartbeats from a background thread (own socket) every ``interval_s``."""
        if self._heartbeat is not None:
            return
        self._heartbeat_stop.clear()

        pulse = Channel(self.endpoint, f"{self.client_id}-hb", **{**self._settings, "retries": 0})

        def beat() -> None:
            try:
                while not self._heartbeat_stop.wait(interval_s):
                    try:
                        pulse.call("heartbeat", {"for": self.client_id})
                    except EmautoError:
                        continue
            finally:
                pulse.close()

        self._heartbeat = threading.Thread(target=beat, name="emauto-heartbeat", daemon=True)
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread, if any."""
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=self._settings["timeout_s"] + 1)
            self._heartbeat = None


def _load_curve(curve: CurveKeys) -> tuple[bytes, bytes, bytes]:
    secret_path, server_path = curve
    public, secret = load_secret(Path(secret_path))
    server = load_public(Path(server_path))
    if not server:
        raise AuthError(f"{server_path} holds no server public key")
    return public, secret, server


class RemoteTwin(RemoteMicroscope):
    """A `RemoteMicroscope` whose server runs a twin: it also serves the twin's ground truth
    (Strehl ratio, true aberrations), as `SimulatedMicroscope` does in process, so rewards
    and reports that need the truth work over the wire. Real hardware never offers it."""

    def twin_truth(self, after_s: float | None = None) -> dict[str, Any]:
        """``{"strehl": float, "aberrations_m": {name: m}}`` from the server's twin, now or
        ``after_s`` (s) ahead with no further command (its lenses settled)."""
        result, _ = self._call("twin_truth", None if after_s is None else {"after_s": after_s})
        return dict(result)

    def strehl_ratio_after(self, wait_s: float) -> float:
        """The twin's Strehl ratio ``wait_s`` (s) from now, if nothing is commanded."""
        return float(self.twin_truth(float(wait_s))["strehl"])

    def aberrations_after(self, wait_s: float) -> Aberrations:
        """The twin's true aberrations ``wait_s`` (s) from now, if nothing is commanded."""
        return Aberrations.from_mapping(self.twin_truth(float(wait_s))["aberrations_m"])

    def strehl_ratio(self) -> float:
        """Strehl ratio of the twin's true probe over the probe-forming aperture."""
        return float(self.twin_truth()["strehl"])

    def true_aberrations(self) -> Aberrations:
        """The twin's true optical aberrations (m)."""
        return Aberrations.from_mapping(self.twin_truth()["aberrations_m"])


def connect_remote(uri: str, **kwargs: Any) -> RemoteMicroscope:
    """Open ``tcp://host:port[?timeout=S&retries=N&key=PATH&server_key=PATH&heartbeat=S]``."""
    parts = urlsplit(uri)
    if parts.scheme not in ("tcp", "ipc") or (parts.scheme == "tcp" and not parts.port):
        raise ConfigError(f"expected tcp://HOST:PORT, got {uri!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    known = ("heartbeat", "key", "retries", "server_key", "timeout")
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise ConfigError(f"{uri!r}: unknown query parameter(s) {unknown}; expected {known}")
    try:
        if "timeout" in query:
            kwargs.setdefault("timeout_s", float(query["timeout"]))
        if "retries" in query:
            kwargs.setdefault("retries", int(query["retries"]))
        if "heartbeat" in query:
            kwargs.setdefault("heartbeat_s", float(query["heartbeat"]))
    except ValueError as exc:
        raise ConfigError(f"{uri!r}: {exc}") from exc
    if ("key" in query) != ("server_key" in query):
        raise ConfigError(f"{uri!r}: CURVE needs both key= and server_key=")
    if "key" in query:
        kwargs.setdefault("curve", (Path(query["key"]), Path(query["server_key"])))
    endpoint = uri.split("?", 1)[0]
    scope = RemoteMicroscope(endpoint, **kwargs)
    if scope.hello.get("twin_truth") is True:
        scope.__class__ = RemoteTwin  # same connection; the server said it can serve the truth
    return scope
