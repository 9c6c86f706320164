"""Helpers for the driver tests: server subprocesses and in-process servers on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from emauto.drivers.zmq.server import MicroscopeServer
from emauto.microscope import Microscope
from emauto.wrappers.safety import SafeMicroscope, SafetyConfig

SERVE = (sys.executable, "-m", "emauto", "serve")


class ServerProcess:
    """``emauto serve`` in a subprocess; ``endpoint`` is where it listens."""

    def __init__(self, config: Path, bind: str = "tcp://127.0.0.1:*") -> None:
        self.config = config
        self.bind = bind
        self.process: subprocess.Popen[str] | None = None
        self.endpoint = ""

    def start(self, timeout_s: float = 120.0) -> ServerProcess:
        """Start and wait for the 'serving ... on ENDPOINT' line."""
        self.process = subprocess.Popen(
            [*SERVE, "--config", str(self.config), "--bind", self.bind],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        ready = threading.Event()
        lines: list[str] = []

        def watch() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                lines.append(line)
                if "serving" in line:
                    ready.set()
                    break

        threading.Thread(target=watch, daemon=True).start()
        if not ready.wait(timeout_s):
            self.kill()
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise RuntimeError(f"server did not start: {lines} {stderr[-2000:]}")
        self.endpoint = lines[-1].rsplit(" on ", 1)[1].strip()
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode


def write_server_config(
    path: Path, backend: str, *, sim_config: Path | None = None, **extra: Any
) -> Path:
    """A server YAML for ``backend`` (safety: readback on, no watchdog unless given)."""
    config: dict[str, Any] = {"backend": backend, "safety": {"heartbeat_interval_s": None}}
    if sim_config is not None:
        config["sim_uri"] = f"sim://?config={sim_config}"
    config.update(extra)
    path.write_text(yaml.safe_dump(config))
    return path


class ThreadServer:
    """A `MicroscopeServer` on a background thread of this process (for counting handlers)."""

    def __init__(self, backend: Microscope, config: SafetyConfig | None = None, **kwargs: Any):
        self.scope = SafeMicroscope(backend, config or SafetyConfig())
        self.ops: list[str] = []
        self.server = MicroscopeServer(
            self.scope,
            kwargs.pop("bind", "tcp://127.0.0.1:*"),
            on_request=self.ops.append,
            **kwargs,
        )
        self.endpoint = self.server.open()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_ms": 10})
        self.thread.start()

    def close(self) -> None:
        self.server.stop()
        self.thread.join(timeout=10)
        self.server.close()
