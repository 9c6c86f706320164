"""Fuzz the session reader: a mutated session gives typed errors only and touches nothing.

Each case copies a small recorded session, applies one random mutation (bytes of a
``documents.jsonl`` line, a value anywhere in a document or in a frame's ``zarr.json``,
deleted, repeated or swapped lines, the bytes of a frame's chunk, a zstd bomb, a symlink to a
file or folder outside the session) and reads it the way ``emauto report`` does (every
document, every frame, the summary and the HTML page). It counts:

- ``crashes``: exceptions that are not an `EmautoError` (a ``KeyError``, a
  ``RecursionError``, a ``MemoryError``...);
- ``files_touched_outside``: files outside the session whose bytes or modification time
  changed, or that appeared or vanished;
- ``files_changed_inside``: the same inside the session (reading must change nothing).

`fuzz_reader` is what ``emauto bench security`` calls; ``tests/sessions/test_fuzz_reader.py``
drives `mutate` from hypothesis.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import zstd  # type: ignore[import-untyped]

from emauto.errors import EmautoError
from emauto.microscope import (
    Calibration,
    DetectorSpec,
    Frame,
    KnobSpec,
    MicroscopeDescription,
    MicroscopeState,
    RonchigramRequest,
    ScanLimits,
)
from emauto.sessions.files import ReaderLimits
from emauto.sessions.reader import Session
from emauto.sessions.recorder import SessionRecorder
from emauto.sessions.report import render_html, summary
from emauto.sessions.store import DOCUMENTS, FRAMES

__all__ = [
    "FUZZ_LIMITS",
    "MUTATIONS",
    "fuzz_reader",
    "mutate",
    "read_like_report",
    "scratch_folder",
    "snapshot",
]

#: Limits of the fuzzed reads: the defaults' checks, at sizes that keep a case fast.
FUZZ_LIMITS = ReaderLimits(max_line_bytes=1 << 20, max_frame_bytes=16 << 20)

_VALUES: list[Any] = [
    None, True, 0, -1, 2**63, 1e308, -1e-300, "", "x" * 5000, "<script>alert(1)</script>",
    "../../outside", "/etc/passwd", "000000", [], {}, [1.0] * 300, {"set": {"C10": "x"}},
    {"acquire": {"kind": "image"}}, [[[[[[[[]]]]]]]], "NaN",
]  # fmt: skip


def write_base_session(path: Path, steps: int = 3) -> Path:
    """A small closed session: a twin-like description, ``steps`` sets and acquisitions of
    16x16 frames, one episode step; written with `SessionRecorder` as any session is."""
    knobs = {
        "C10": KnobSpec(name="C10", unit="m", lower=-1e-6, upper=1e-6, max_step=1e-7),
        "beam_blank": KnobSpec(
            name="beam_blank", unit="", lower=0.0, upper=1.0, max_step=1.0, binary=True
        ),
    }
    description = MicroscopeDescription(
        backend="fuzz",
        energy_eV=200e3,
        beam_current_A=1e-12,
        knobs=knobs,
        detectors={
            "ronchigram": DetectorSpec(
                name="ronchigram",
                kind="camera",
                shape=(16, 16),
                gain_counts_per_e=1.0,
                read_noise_counts=0.0,
                pixel_angle_rad=1e-4,
            )
        },
        scan=ScanLimits(
            max_fov_m=1e-6,
            max_offset_m=1e-6,
            min_dwell_s=1e-7,
            max_dwell_s=1e-3,
            max_positions=1024,
            min_exposure_s=1e-6,
            max_exposure_s=1.0,
            settle_s=0.0,
            flyback_s=0.0,
        ),
    )
    state = MicroscopeState(
        knobs={"C10": 0.0, "beam_blank": 0.0}, beam_blanked=False, time_s=0.0, dose_e=0.0
    )
    recorder = SessionRecorder(path, description, state, with_truth=True)
    rng = np.random.default_rng(0)
    recorder.task = "align_probe"
    for step in range(steps):
        state = state.model_copy(update={"knobs": {"C10": 1e-9 * step, "beam_blank": 0.0}})
        recorder.record_step("set", {"set": {"C10": 1e-9 * step}}, state, truth={"strehl": 0.5})
        request = RonchigramRequest(exposure_s=1e-3)
        frame = Frame(
            kind="ronchigram",
            detector="ronchigram",
            data=rng.random((16, 16), dtype=np.float32),
            calibrations=(Calibration(name="theta", units="rad", scale=1e-4),) * 2,
            dose_e=1.0,
            dose_e_per_m2=1.0,
            exposure_s=1e-3,
            duration_s=1e-3,
            state=state,
            request=request,
        )
        recorder.record_step(
            "acquire", {"acquire": request.model_dump(mode="json")}, state, frame=frame
        )
    recorder.record_episode_step(
        [0.1, -0.2], reward=0.5, terminated=False, truncated=False, strehl=0.5
    )
    recorder.record_step("safe", {"safe": True}, state)
    recorder.close()
    return path


# --------------------------------------------------------------------------- mutations


def _random_value(rng: random.Random) -> Any:
    return rng.choice(_VALUES) if rng.random() < 0.8 else rng.uniform(-1e9, 1e9)


def _replace_somewhere(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """``value`` with one random leaf or branch replaced by a random value."""
    children: list[Any] = []
    if isinstance(value, dict):
        children = list(value)
    elif isinstance(value, list):
        children = list(range(len(value)))
    if not children or (depth and rng.random() < 0.25):
        return _random_value(rng)
    key = rng.choice(children)
    if rng.random() < 0.1 and isinstance(value, dict):
        del value[key]
        return value
    value[key] = _replace_somewhere(value[key], rng, depth + 1)
    return value


def _flip_bytes(data: bytes, rng: random.Random) -> bytes:
    raw = bytearray(data)
    operation = rng.randrange(4)
    if operation == 0 and raw:
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif operation == 1:
        raw = raw[: rng.randrange(len(raw) + 1)]
    elif operation == 2:
        at = rng.randrange(len(raw) + 1)
        raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        raw = bytearray(rng.randbytes(rng.randint(0, 256)))
    return bytes(raw)


def _lines(path: Path) -> list[bytes]:
    return (path / DOCUMENTS).read_bytes().splitlines(keepends=True)


def _set_lines(path: Path, lines: list[bytes]) -> None:
    (path / DOCUMENTS).write_bytes(b"".join(lines))


def _frame_folders(path: Path) -> list[Path]:
    return sorted(p for p in (path / FRAMES).iterdir() if p.is_dir())


def _line_bytes(path: Path, rng: random.Random, outside: Path) -> None:
    lines = _lines(path)
    index = rng.randrange(len(lines))
    lines[index] = _flip_bytes(lines[index], rng) + (b"\n" if rng.random() < 0.7 else b"")
    _set_lines(path, lines)


def _line_json(path: Path, rng: random.Random, outside: Path) -> None:
    lines = _lines(path)
    index = rng.randrange(len(lines))
    document = json.loads(lines[index])
    action_text = document[1].get("data", {}).get("action") if document[0] == "event" else None
    if rng.random() < 0.3 and isinstance(action_text, str):
        action = json.loads(action_text)  # the JSON text inside the JSON
        document[1]["data"]["action"] = json.dumps(_replace_somewhere(action, rng))
    else:
        document = _replace_somewhere(document, rng)
    lines[index] = json.dumps(document).encode() + b"\n"
    _set_lines(path, lines)


def _line_order(path: Path, rng: random.Random, outside: Path) -> None:
    lines = _lines(path)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    operation = rng.randrange(4)
    if operation == 0:
        del lines[i]
    elif operation == 1:
        lines.insert(j, lines[i])
    elif operation == 2:
        lines[i], lines[j] = lines[j], lines[i]
    else:
        depth = rng.choice([100, 10_000, 200_000])
        lines.insert(j, b"[" * depth + b"]" * depth + b"\n")
    _set_lines(path, lines)


def _frame_metadata(path: Path, rng: random.Random, outside: Path) -> None:
    file = rng.choice(_frame_folders(path)) / "zarr.json"
    metadata = json.loads(file.read_bytes())
    choice = rng.randrange(3)
    if choice == 0:
        shape = [rng.choice([0, 1, 16, 4096, 60_000, 2**31]) for _ in range(rng.randint(1, 5))]
        metadata["shape"] = shape
        if rng.random() < 0.7:
            metadata["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": shape}}
    elif choice == 1:
        metadata["data_type"] = rng.choice(["float64", "uint8", "object", "<U4", "complex64", 3])
    else:
        metadata = _replace_somewhere(metadata, rng)
    file.write_text(json.dumps(metadata))


def _chunk_bytes(path: Path, rng: random.Random, outside: Path) -> None:
    chunks = [
        f for folder in _frame_folders(path) for f in folder.iterdir() if f.name != "zarr.json"
    ]
    chunk = rng.choice(chunks)
    choice = rng.randrange(4)
    if choice == 0:
        chunk.write_bytes(_flip_bytes(chunk.read_bytes(), rng))
    elif choice == 1:  # a bomb: small on disk, large decoded
        chunk.write_bytes(zstd.compress(bytes(rng.choice([1024, 1 << 20, 64 << 20]))))
    elif choice == 2:
        chunk.write_bytes(zstd.compress(rng.randbytes(rng.choice([0, 1020, 1024, 1028]))))
    else:
        chunk.unlink()


def _symlink(path: Path, rng: random.Random, outside: Path) -> None:
    folder = rng.choice(_frame_folders(path))
    victim = rng.choice(
        [path / DOCUMENTS, path / FRAMES, folder, folder / "zarr.json", *folder.glob("0*")]
    )
    target = rng.choice([outside / "canary.txt", outside / "frame", outside / "documents.jsonl"])
    if victim.is_dir():
        shutil.rmtree(victim)
    else:
        victim.unlink()
    victim.symlink_to(target)


#: Every kind of mutation, by name.
MUTATIONS: dict[str, Callable[[Path, random.Random, Path], None]] = {
    "line_bytes": _line_bytes,
    "line_json": _line_json,
    "line_order": _line_order,
    "frame_metadata": _frame_metadata,
    "chunk_bytes": _chunk_bytes,
    "symlink": _symlink,
}


def mutate(path: Path, rng: random.Random, outside: Path, kind: str | None = None) -> str:
    """Apply one mutation (``kind``, or one at random) to the session ``path``; symlinks may
    point into ``outside``. Returns the mutation's name."""
    kind = kind or rng.choice(sorted(MUTATIONS))
    MUTATIONS[kind](path, rng, outside)
    return kind


def make_outside(folder: Path, base: Path) -> Path:
    """A folder of files that reading a session must never touch: a canary file, a copy of a
    frame folder and a document log with a torn tail (what a symlink may point at)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "canary.txt").write_bytes(b"do not touch\n")
    shutil.copytree(_frame_folders(base)[0], folder / "frame")
    (folder / "documents.jsonl").write_bytes((base / DOCUMENTS).read_bytes() + b'["torn')
    return folder


def snapshot(folder: Path) -> dict[str, tuple[str, bytes, int]]:
    """Every name under ``folder`` (links not followed): its kind, bytes and mtime (ns)."""
    state: dict[str, tuple[str, bytes, int]] = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(root) / name
            info = path.lstat()
            if path.is_symlink():
                state[str(path)] = ("link", os.readlink(path).encode(), info.st_mtime_ns)
            elif path.is_file():
                state[str(path)] = ("file", path.read_bytes(), info.st_mtime_ns)
            else:
                state[str(path)] = ("folder", b"", info.st_mtime_ns)
    return state


def read_like_report(path: Path, limits: ReaderLimits = FUZZ_LIMITS) -> None:
    """Read ``path`` as ``emauto report`` does, without the picture: every document, every
    frame, the summary, the HTML page."""
    session = Session(path, limits=limits)
    for step in session.acquisitions():
        session.frame(step)
    summary(session)
    render_html(session, b"")


def scratch_folder() -> Path | None:
    """A memory-backed folder for the cases (``/dev/shm``, 3x faster) when there is one."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def fuzz_reader(n: int = 200, seed: int = 0, folder: Path | None = None) -> dict[str, Any]:
    """Read ``n`` mutated sessions (in a temporary folder under ``folder``, by default
    `scratch_folder`); counts of cases, typed errors, accepted sessions, ``crashes``
    (non-typed exceptions), ``files_touched_outside`` and ``files_changed_inside``, per
    mutation, with the first crashes as examples."""
    folder = folder or scratch_folder()
    rng = random.Random(seed)
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    per_mutation: Counter[str] = Counter()
    examples: list[str] = []
    with tempfile.TemporaryDirectory(dir=folder) as temporary:
        root = Path(temporary)
        base = write_base_session(root / "base")
        outside = make_outside(root / "outside", base)
        for case in range(n):
            path = root / f"case-{case}"
            shutil.copytree(base, path)
            kind = mutate(path, rng, outside)
            per_mutation[kind] += 1
            before_outside, before_inside = snapshot(outside), snapshot(path)
            try:
                read_like_report(path)
                counts["accepted"] += 1
            except EmautoError:
                counts["typed_errors"] += 1
            except Exception as exc:  # what the fuzzer is looking for
                counts["crashes"] += 1
                if len(examples) < 5:
                    examples.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")
            counts["files_touched_outside"] += _changed(before_outside, snapshot(outside))
            counts["files_changed_inside"] += _changed(before_inside, snapshot(path))
            shutil.rmtree(path)
    return {
        "cases": n,
        "seed": seed,
        "typed_errors": counts["typed_errors"],
        "accepted": counts["accepted"],
        "crashes": counts["crashes"],
        "files_touched_outside": counts["files_touched_outside"],
        "files_changed_inside": counts["files_changed_inside"],
        "mutations": dict(sorted(per_mutation.items())),
        "crash_examples": examples,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _changed(before: dict[str, Any], after: dict[str, Any]) -> int:
    return sum(before.get(name) != after.get(name) for name in before.keys() | after.keys())
