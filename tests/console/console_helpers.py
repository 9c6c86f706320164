"""Shared by the console tests (a module name of its own: every test folder has a conftest)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("EMAUTO_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
SURVEY = {"kind": "acquire_image", "name": "survey", "shape": [16, 16], "fov_m": 1e-9}


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def align(frames: int, **extra: Any) -> dict[str, Any]:
    """A probe-alignment step (the shift policy) on the detuned tiny twin."""
    return {"kind": "align_probe", "detune": True, "seed": 5, "max_acquisitions": frames, **extra}
