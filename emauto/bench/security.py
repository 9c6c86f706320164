"""``emauto bench security``: how the ZeroMQ server stands up to hostile input and to faults.

Figures, each over real sockets on loopback in front of `StaticMicroscope` (an in-memory
backend, so the figures are the driver's):

- fuzz: messages of random and hostile shapes (garbage, mutated headers, deep nesting, huge
  integers, wrong types, extra frames); crashes of the server, backend calls caused by
  invalid input, the server's peak RSS growth (MB);
- kill -9 / restart: a client's command in flight while the server is killed and restarted
  (the ledger persists); duplicate applications seen by the backend's audit log;
- watchdog: the controlling client is killed while another client keeps polling ``read``:
  trips within the bound; and legitimate long acquisitions by a heartbeating client: trips.

``python -m emauto.bench.security serve BIND DIR`` runs the server used here (also by the
tests): it prints its endpoint, keeps the audit log and the ledger in DIR.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from emauto.bench.driver import StaticMicroscope
from emauto.wrappers.safety import SafetyConfig


def serve_static(
    bind: str,
    state: Path,
    *,
    heartbeat_s: float | None = None,
    missed: int = 3,
    shape: int = 64,
    scan_s_per_point: float = 0.0,
) -> None:
    """Serve a `StaticMicroscope` on ``bind`` with its audit log and ledger in ``state``;
    print the endpoint when ready; stop on SIGTERM."""
    from emauto.drivers.zmq.ledger import Ledger
    from emauto.drivers.zmq.server import MicroscopeServer
    from emauto.wrappers.audit import AuditLog
    from emauto.wrappers.safety import SafeMicroscope

    state.mkdir(parents=True, exist_ok=True)
    config = SafetyConfig(heartbeat_interval_s=heartbeat_s, missed_heartbeats=missed)
    backend = SlowScanMicroscope(shape=(shape, shape), s_per_point=scan_s_per_point)
    scope = SafeMicroscope(backend, config, audit=AuditLog(state / "audit.jsonl"))
    server = MicroscopeServer(scope, bind, ledger=Ledger(state / "ledger.jsonl"))
    print(server.open(), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve_forever(poll_ms=10)
    finally:
        server.close()


class SlowScanMicroscope(StaticMicroscope):
    """`StaticMicroscope` whose image scans take ``s_per_point`` per probe position (a long
    legitimate acquisition, for the watchdog)."""

    def __init__(self, shape: tuple[int, int], s_per_point: float = 0.0) -> None:
        super().__init__(shape=shape)
        self.s_per_point = s_per_point

    def acquire(self, request: Any) -> Any:
        """As `StaticMicroscope`, after sleeping for the scan's beam time."""
        from emauto.microscope import ImageRequest, RonchigramRequest
        from emauto.wrappers.safety import scan_points

        if isinstance(request, ImageRequest):
            time.sleep(scan_points(request) * self.s_per_point)
            request = RonchigramRequest(exposure_s=1e-3)
        return super().acquire(request)


class ServerProcess:
    """`serve_static` in a subprocess on a fixed endpoint: start, kill -9, restart."""

    def __init__(self, state: Path, bind: str = "tcp://127.0.0.1:*", **options: Any) -> None:
        self.state = state
        self.bind = bind
        self.options = options
        self.process: subprocess.Popen[str] | None = None
        self.endpoint = ""

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        """Start (on the endpoint of the first start, when restarting) and wait until ready."""
        bind = self.endpoint or self.bind
        argv = [sys.executable, "-m", "emauto.bench.security", "serve", bind, str(self.state)]
        for name, value in self.options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = [""]

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            line[0] = self.process.stdout.readline().strip()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not line[0].startswith(("tcp://", "ipc://")):
            self.kill()
            raise RuntimeError(f"the security bench server did not start: {line[0]!r}")
        self.endpoint = line[0]
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def audit(self) -> list[dict[str, Any]]:
        """The audit records of every run so far."""
        path = self.state / "audit.jsonl"
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line torn by kill -9
        return records


def _rss_mb(pid: int) -> float:
    """Resident set size of process ``pid``, MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _hwm_mb(pid: int) -> float:
    """Peak resident set size of process ``pid``, MB (Linux /proc VmHWM)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    """``serve BIND DIR`` (the server used by the bench and the tests)."""
    parser = argparse.ArgumentParser(prog="python -m emauto.bench.security")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("bind")
    serve.add_argument("state", type=Path)
    serve.add_argument("--heartbeat-s", type=float, default=None)
    serve.add_argument("--missed", type=int, default=3)
    serve.add_argument("--shape", type=int, default=64)
    serve.add_argument("--scan-s-per-point", type=float, default=0.0)
    args = parser.parse_args(argv)
    serve_static(
        args.bind,
        args.state,
        heartbeat_s=args.heartbeat_s,
        missed=args.missed,
        shape=args.shape,
        scan_s_per_point=args.scan_s_per_point,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
