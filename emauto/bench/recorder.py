"""`emauto bench recorder`: what durability costs, and what a kill -9 loses.

- **fsync cost per step**: the twin records ``steps`` steps (a knob change, then a 128x128
  Ronchigram: the frame's Zarr array and the event line, each fsync'd); the figures are the
  median and 99th percentile of the time each step spent in the recorder, in ms, over all
  steps and per kind, beside one bare fsync on the same file system (the reference).
- **kill trials**: ``trials`` times, a child process records steps as fast as it can and
  prints ``ACK n`` once step n is on disk; the parent sends SIGKILL after a random delay,
  then opens the session (which repairs a torn tail) and counts *acknowledged* steps that are
  missing or whose frame is unreadable. The goal is zero: at most the step in flight (never
  acknowledged) may be lost. A killed process's writes are still in the page cache, so these
  trials cannot see a missing fsync; the power-cut trials can.
- **power-cut trials**: a session of ``POWER_CUT_STEPS`` steps (set, acquire of a 128x128
  frame, ..., then close) is recorded once on a `PowerCutFileSystem`, which journals every
  write and fsync; ``power_cuts`` times, a random cut point in that journal is drawn and the
  disk a power cut there would leave is built (only what was fsync'd survives; every other
  trial also keeps a random part of what was not, as the kernel's writeback might), then the
  session in it is opened and checked (`check_survivor`): every step acknowledged before the
  cut present with its frame, no event whose frame is gone, the session readable once opened.

The folder under test decides the fsync cost (``--dir``; default: a temporary folder in the
current directory, not /tmp, which may be RAM).
"""

from __future__ import annotations

import bisect
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emauto.errors import EmautoError
from emauto.microscope import ImageRequest, Microscope, RonchigramRequest
from emauto.sessions.durable import FileSystem
from emauto.sessions.powercut import PowerCutFileSystem, Survivor, check_survivor
from emauto.sessions.reader import Session
from emauto.wrappers.recording import RecordingMicroscope

#: Steps of the session the power-cut trials cut (set and acquire alternately, then close).
POWER_CUT_STEPS = 40


def _percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1e3, q)), 3)


def fsync_cost(folder: Path, steps: int, uri: str = "sim://") -> dict[str, Any]:
    """Median and p99 (ms) of the recorder's time per step on the twin."""
    from emauto.drivers import connect

    scope = RecordingMicroscope.open(connect(uri), folder / "fsync-session")
    rng = np.random.default_rng(0)
    try:
        for _ in range(steps // 2):
            scope.set({"C10": float(rng.uniform(-5e-9, 5e-9))})
            scope.acquire(RonchigramRequest(exposure_s=1e-3))
    finally:
        scope.close()
    samples = scope.recorder.write_s
    kinds = scope.recorder.write_kinds
    figures: dict[str, Any] = {
        "fsync_step_median_ms": _percentile_ms(samples, 50),
        "fsync_step_p99_ms": _percentile_ms(samples, 99),
        "fsync_steps": len(samples),
    }
    for kind in ("set", "acquire"):
        chosen = [t for t, k in zip(samples, kinds, strict=True) if k == kind]
        figures[f"fsync_{kind}_median_ms"] = _percentile_ms(chosen, 50)
        figures[f"fsync_{kind}_p99_ms"] = _percentile_ms(chosen, 99)
    figures["raw_fsync_median_ms"] = _raw_fsync_ms(folder)
    return figures


def _raw_fsync_ms(folder: Path, count: int = 100) -> float:
    """One bare write + fsync of a 100-byte line on the same file system: the reference."""
    times = []
    with open(folder / "raw-fsync.bin", "ab") as handle:
        for _ in range(count):
            started = time.perf_counter()
            handle.write(b"x" * 99 + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            times.append(time.perf_counter() - started)
    return _percentile_ms(times, 50)


def record_until_killed(folder: Path, backend: str) -> None:
    """The child of a kill trial: record set + acquire steps forever, acknowledging each."""
    if backend == "static":
        from emauto.bench.driver import StaticMicroscope

        inner: Any = StaticMicroscope(shape=(128, 128))
    else:
        from emauto.drivers import connect

        inner = connect(backend)
    scope = RecordingMicroscope.open(inner, folder)
    value = 0.0
    while True:
        value = -value + 1e-9
        scope.set({"C10": value})
        print(f"ACK {scope.recorder.steps - 1}", flush=True)
        scope.acquire(RonchigramRequest(exposure_s=1e-3))
        print(f"ACK {scope.recorder.steps - 1}", flush=True)


def kill_trial(folder: Path, backend: str, rng: random.Random) -> dict[str, int]:
    """One trial: start a recording child, SIGKILL it at a random moment, check the session."""
    child = subprocess.Popen(
        [sys.executable, "-m", "emauto.bench.recorder", "--child", str(folder), backend],
        stdout=subprocess.PIPE,
        text=True,
    )
    acknowledged = [-1]
    first = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("ACK "):
                acknowledged[0] = int(line.split()[1])
                first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not first.wait(120):
        child.kill()
        raise EmautoError(f"the recording child never acknowledged a step ({backend})")
    time.sleep(rng.uniform(0.05, 1.5))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reader.join(5)
    session = Session(folder)
    recorded = len(session.steps)
    lost = 0
    for step in session.steps[: acknowledged[0] + 1]:
        if step.frame_key:
            try:
                session.frame(step)
            except EmautoError:
                lost += 1
    lost += max(0, acknowledged[0] + 1 - recorded)
    return {
        "acknowledged": acknowledged[0] + 1,
        "recorded": recorded,
        "lost": lost,
        "torn": int(session.torn_bytes > 0),
    }


@dataclass(frozen=True)
class PowerCutRecording:
    """A session recorded on a `PowerCutFileSystem`, and when each step was acknowledged."""

    disk: PowerCutFileSystem
    session: str  #: the session folder, relative to the disk's root
    opened_at: int  #: operations journalled when the recorder had opened (start written)
    acknowledged_at: tuple[int, ...]  #: operations journalled when step i's call returned
    expected: tuple[tuple[str, np.ndarray | None], ...]  #: each step's kind and frame data

    @property
    def operations(self) -> int:
        """Operations in the journal: the cut points are 0 to this, both included."""
        return len(self.disk.operations)

    def cut(self, after: int, dest: Path, writeback: random.Random | None = None) -> Survivor:
        """Build the disk a power cut after ``after`` operations leaves in the new folder
        ``dest`` and check the session in it."""
        self.disk.image(dest, after, writeback=writeback)
        return check_survivor(
            dest / self.session,
            bisect.bisect_right(self.acknowledged_at, after),
            after >= self.opened_at,
            self.expected,
        )


def record_on_power_cut_disk(
    root: Path,
    microscope: Microscope,
    steps: int,
    requests: Sequence[RonchigramRequest | ImageRequest] = (RonchigramRequest(exposure_s=1e-3),),
    wrap: Callable[[PowerCutFileSystem], FileSystem] | None = None,
) -> PowerCutRecording:
    """Record ``steps`` steps (a C10 change, an acquisition of the next of ``requests``, ...),
    then close (a ``safe`` step and the stop document), on a new `PowerCutFileSystem` at
    ``root``. The store writes through ``wrap(disk)`` when given (for the tests that break
    durability on purpose), else straight through the disk."""
    disk = PowerCutFileSystem(root)
    session = "sessions/run"  # two new folders, whose names the recorder must make durable
    scope = RecordingMicroscope.open(
        microscope,
        disk.root / session,
        {"bench": "power-cut"},
        file_system=wrap(disk) if wrap is not None else disk,
    )
    opened_at = len(disk.operations)
    acknowledged_at: list[int] = []
    expected: list[tuple[str, np.ndarray | None]] = []
    for index in range(steps):
        if index % 2 == 0:
            scope.set({"C10": (-1) ** (index // 2) * 1e-9 * (1 + index % 7)})
            expected.append(("set", None))
        else:
            frame = scope.acquire(requests[(index // 2) % len(requests)])
            expected.append(("acquire", np.array(frame.data)))
        acknowledged_at.append(len(disk.operations))
    scope.close()
    expected.append(("safe", None))
    acknowledged_at.append(len(disk.operations))
    return PowerCutRecording(disk, session, opened_at, tuple(acknowledged_at), tuple(expected))


def power_cut_trials(folder: Path, trials: int, rng: random.Random) -> dict[str, Any]:
    """``trials`` random power cuts of one recording of the static microscope (128x128)."""
    from emauto.bench.driver import StaticMicroscope

    recording = record_on_power_cut_disk(
        folder / "disk", StaticMicroscope(shape=(128, 128)), POWER_CUT_STEPS
    )
    results: list[Survivor] = []
    for trial in range(trials):
        writeback = random.Random(rng.random()) if trial % 2 else None
        dest = folder / f"cut-{trial:04d}"
        results.append(recording.cut(rng.randint(0, recording.operations), dest, writeback))
        shutil.rmtree(dest)
    return {
        "power_cut_trials": trials,
        "power_cut_acknowledged_steps_lost": sum(r.lost for r in results),
        "power_cut_dangling_frames": sum(r.dangling for r in results),
        "power_cut_sessions_lost": sum(r.session_lost for r in results),
        "power_cut_trials_failed": sum(not r.ok for r in results),
        "power_cut_torn_tails_repaired": sum(r.torn for r in results),
        "power_cut_median_acknowledged_steps": (
            statistics.median(r.acknowledged for r in results) if results else 0
        ),
        "power_cut_journal_operations": recording.operations,
    }


def run_recorder_benchmark(
    steps: int = 400,
    trials: int = 20,
    seed: int = 0,
    folder: str | Path | None = None,
    backend: str = "static",
    uri: str = "sim://",
    power_cuts: int = 200,
) -> dict[str, Any]:
    """fsync cost per step on the twin, lost acknowledged steps over kill trials and over
    simulated power cuts."""
    base = Path(folder) if folder is not None else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="emauto-bench-recorder-", dir=base) as work:
        root = Path(work)
        figures = fsync_cost(root, steps, uri)
        results = [kill_trial(root / f"trial-{i:03d}", backend, rng) for i in range(trials)]
        cuts = power_cut_trials(root / "power-cut", power_cuts, rng)
    figures.update(
        {
            "kill_trials": trials,
            "kill_lost_acknowledged_steps": sum(r["lost"] for r in results),
            "kill_torn_tails_repaired": sum(r["torn"] for r in results),
            "kill_median_acknowledged_steps": statistics.median(r["acknowledged"] for r in results),
            "kill_backend": backend,
            "folder_filesystem": str(base),
            **cuts,
        }
    )
    return figures


if __name__ == "__main__":  # the child of a kill trial
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        record_until_killed(Path(sys.argv[2]), sys.argv[3])
