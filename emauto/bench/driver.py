"""``emauto bench driver``: round trip and frame rate of the ZeroMQ driver over loopback.

The server runs in a subprocess in front of `StaticMicroscope`, an in-memory backend whose
frames cost nothing, so the figures are the driver's (protocol, safety layer, sockets), not
the twin's. The in-process reference calls the same safety layer on the same backend.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from emauto.drivers.sim.knobs import default_values, twin_knobs
from emauto.errors import BeamBlankedError
from emauto.microscope import (
    Calibration,
    DetectorSpec,
    Frame,
    ImageRequest,
    Microscope,
    MicroscopeDescription,
    MicroscopeState,
    RonchigramRequest,
    ScanLimits,
    validate_setpoints,
)
from emauto.units import ELECTRON_CHARGE_C
from emauto.wrappers.safety import SafeMicroscope, SafetyConfig

FRAME_SHAPE = (512, 512)


class StaticMicroscope:
    """An in-memory microscope with the twin's knobs and a fixed 512x512 float32 frame."""

    def __init__(self, shape: tuple[int, int] = FRAME_SHAPE) -> None:
        self._knobs = default_values()
        self._data = np.random.default_rng(0).random(shape, dtype=np.float32)
        self._dose_e = 0.0
        self._description = MicroscopeDescription(
            backend="static",
            energy_eV=200e3,
            beam_current_A=1e-12,
            knobs=twin_knobs(),
            detectors={
                "ronchigram": DetectorSpec(
                    name="ronchigram",
                    kind="camera",
                    shape=shape,
                    pixel_angle_rad=1e-4,
                    gain_counts_per_e=1.0,
                    read_noise_counts=0.0,
                )
            },
            scan=ScanLimits(
                max_fov_m=2e-6,
                max_offset_m=2e-6,
                min_dwell_s=1e-7,
                max_dwell_s=1e-3,
                max_positions=1 << 20,
                min_exposure_s=1e-6,
                max_exposure_s=10.0,
                settle_s=0.0,
                flyback_s=0.0,
            ),
        )

    def describe(self) -> MicroscopeDescription:
        """The twin's knob table and one camera."""
        return self._description

    def read(self) -> MicroscopeState:
        """Knob values as set."""
        return MicroscopeState(
            knobs=dict(self._knobs),
            beam_blanked=self._knobs["beam_blank"] == 1.0,
            time_s=0.0,
            dose_e=self._dose_e,
        )

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Store validated setpoints."""
        self._knobs.update(validate_setpoints(self._description, self._knobs, setpoints))
        return self.read()

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """The fixed frame (Ronchigrams only); sleeps ``wait_s``, the exposure is free."""
        if self._knobs["beam_blank"] == 1.0:
            raise BeamBlankedError("the beam is blanked")
        if isinstance(request, RonchigramRequest) and request.wait_s:
            time.sleep(request.wait_s)
        electrons = 1e-12 * 1e-3 / ELECTRON_CHARGE_C
        self._dose_e += electrons
        pixel = Calibration(name="theta", units="rad", scale=1e-4)
        return Frame(
            kind="ronchigram",
            detector="ronchigram",
            data=self._data,
            calibrations=(pixel, pixel),
            dose_e=electrons,
            dose_e_per_m2=electrons,
            exposure_s=1e-3,
            duration_s=1e-3,
            state=self.read(),
            request=request,
        )

    def safe(self) -> None:
        """Blank the beam."""
        self._knobs["beam_blank"] = 1.0

    def close(self) -> None:
        """Go safe."""
        self.safe()


def _percentiles_ms(samples: list[float]) -> tuple[float, float]:
    array = np.asarray(samples) * 1e3
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


def _round_trips(scope: Microscope, count: int) -> list[float]:
    """Alternate read() and set() of one knob; seconds per call."""
    times: list[float] = []
    for index in range(count):
        start = time.perf_counter()
        if index % 2:
            scope.set({"C10": 1e-9 * (index % 7)})
        else:
            scope.read()
        times.append(time.perf_counter() - start)
    return times


def _frames_per_s(scope: Microscope, count: int) -> float:
    request = RonchigramRequest(exposure_s=1e-3)
    scope.acquire(request)
    start = time.perf_counter()
    for _ in range(count):
        scope.acquire(request)
    return count / (time.perf_counter() - start)


def _start_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "emauto.bench.driver", "tcp://127.0.0.1:*"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("tcp://"):
        process.kill()
        raise RuntimeError(f"benchmark server did not start: {line!r}")
    return process, line


def run_driver_benchmark(requests: int = 2000, frames: int = 300) -> dict[str, Any]:
    """Loopback figures: read/set round trip p50/p99 (ms), 512x512 float32 frames/s."""
    from emauto.drivers.zmq.client import RemoteMicroscope

    config = SafetyConfig(readback=True)
    local = SafeMicroscope(StaticMicroscope(), config)
    local.set({"beam_blank": 0.0})
    _round_trips(local, 200)
    in_p50, in_p99 = _percentiles_ms(_round_trips(local, requests))
    in_fps = _frames_per_s(local, frames)

    process, endpoint = _start_server()
    try:
        remote = RemoteMicroscope(endpoint, timeout_s=10.0)
        remote.set({"beam_blank": 0.0})
        _round_trips(remote, 200)
        p50, p99 = _percentiles_ms(_round_trips(remote, requests))
        fps = _frames_per_s(remote, frames)
        remote.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    return {
        "rtt_p50_ms": round(p50, 4),
        "rtt_p99_ms": round(p99, 4),
        "frames_per_s": round(fps, 1),
        "frame_shape": list(FRAME_SHAPE),
        "frame_dtype": "float32",
        "inprocess_rtt_p50_ms": round(in_p50, 4),
        "inprocess_rtt_p99_ms": round(in_p99, 4),
        "inprocess_frames_per_s": round(in_fps, 1),
        "overhead_vs_inprocess": round(p50 / in_p50, 2),
        "requests": requests,
        "frames": frames,
        "goal_rtt_p99_ms": 1.0,
        "goal_frames_per_s": 500.0,
    }


def _serve(bind: str) -> None:
    """Serve a `StaticMicroscope` on ``bind``; print the endpoint when ready."""
    from emauto.drivers.zmq.server import MicroscopeServer

    server = MicroscopeServer(SafeMicroscope(StaticMicroscope(), SafetyConfig()), bind)
    print(server.open(), flush=True)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve_forever()
    finally:
        server.close()


if __name__ == "__main__":
    _serve(sys.argv[1])
