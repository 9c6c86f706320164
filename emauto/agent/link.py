"""The daemon's watch on its link to a microscope server: heartbeats, and the TCP connection.

`LinkMonitor` sends the server's heartbeats (for the daemon's command client, so the server's
watchdog sees it alive) from its own DEALER socket every ``interval_s`` and watches two things:

- the connection itself, through a ZeroMQ socket monitor: a server that is killed or whose
  machine closes the connection is seen at once (``EVENT_DISCONNECTED``);
- the replies: none for ``bound_s`` while the daemon has no command in flight means the
  server hangs or the network is gone. While a command is in flight (a long acquisition on a
  server that answers one request at a time) silence is expected; the command's own deadline
  covers it, and the bound counts again from its end.

``on_lost(reason)`` is called once, from the monitor's thread. Zguide's Paranoid Pirate is
the model (heartbeats both ways, a liveness bound).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from emauto.drivers.zmq import protocol
from emauto.errors import EmautoError

log = logging.getLogger(__name__)

#: The longest a lost link may go unseen (s): the issue's heartbeat bound.
MAX_BOUND_S = 2.0


class LinkMonitor:
    """Heartbeats for ``beats_for`` to ``endpoint``; ``on_lost(reason)`` when the link goes."""

    def __init__(
        self,
        endpoint: str,
        beats_for: str,
        on_lost: Callable[[str], None],
        *,
        interval_s: float = 0.25,
        bound_s: float = 1.5,
        busy: Callable[[], bool] = lambda: False,
        curve: tuple[bytes, bytes, bytes] | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if not 0 < interval_s < bound_s <= MAX_BOUND_S:
            raise ValueError(
                f"expected 0 < interval_s < bound_s <= {MAX_BOUND_S} s, got {interval_s} and "
                f"{bound_s}"
            )
        self.endpoint = endpoint
        self.beats_for = beats_for
        self.interval_s = interval_s
        self.bound_s = bound_s
        self._on_lost = on_lost
        self._busy = busy
        self._curve = curve
        self._context = context or zmq.Context.instance()
        self._stop = threading.Event()
        self.lost: str | None = None
        self.lost_at: float | None = None
        self.replies = 0
        self._thread = threading.Thread(target=self._run, name="emauto-link", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop beating (the plan is over)."""
        self._stop.set()
        self._thread.join(timeout=2.0)

    # ------------------------------------------------------------------ the thread

    def _socket(self) -> zmq.Socket[Any]:
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        socket.setsockopt(zmq.SNDHWM, 4)
        if self._curve is not None:
            public, secret, server = self._curve
            socket.curve_publickey = public
            socket.curve_secretkey = secret
            socket.curve_serverkey = server
        return socket

    def _run(self) -> None:
        socket = self._socket()
        monitor = socket.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
        )
        socket.connect(self.endpoint)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        client = f"{self.beats_for}-link"
        seq = time.time_ns() // 1000
        quiet_since = time.monotonic()
        next_beat = quiet_since
        connected = False
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    seq += 1
                    frames = protocol.encode_request(
                        client=client,
                        seq=seq,
                        op="heartbeat",
                        deadline_s=self.bound_s,
                        args={"for": self.beats_for},
                    )
                    with contextlib.suppress(zmq.Again):  # not connected yet, or queue full
                        socket.send_multipart(frames, zmq.NOBLOCK)
                    next_beat = now + self.interval_s
                events = dict(poller.poll(20))
                if monitor in events:
                    event = recv_monitor_message(monitor)["event"]
                    if event in (zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED):
                        connected = True
                    elif event == zmq.EVENT_DISCONNECTED and connected:
                        self._lose(f"the connection to {self.endpoint} dropped")
                        return
                if socket in events:
                    try:
                        header, _ = protocol.decode_reply(socket.recv_multipart())
                    except EmautoError as exc:
                        log.warning("link monitor: a malformed reply: %s", exc)
                    else:
                        if header.ok:
                            self.replies += 1
                            quiet_since = time.monotonic()
                now = time.monotonic()
                if self._busy():
                    quiet_since = now
                elif now - quiet_since > self.bound_s:
                    self._lose(f"no heartbeat reply from {self.endpoint} within {self.bound_s:g} s")
                    return
        finally:
            socket.disable_monitor()
            monitor.close(linger=0)
            socket.close(linger=0)

    def _lose(self, reason: str) -> None:
        self.lost, self.lost_at = reason, time.monotonic()
        log.error("link lost: %s", reason)
        try:
            self._on_lost(reason)
        except Exception:  # the daemon's handler must not kill the monitor silently
            log.exception("the lost-link handler failed")
