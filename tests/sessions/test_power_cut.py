"""A power cut at any point of a recording loses no acknowledged step.

A kill -9 leaves the page cache to reach the disk, so it cannot show a missing fsync. Here
every write and fsync of the store goes through a `PowerCutFileSystem`, which builds the disk a
power cut after any number of operations would leave (only what was fsync'd survives, names
only once their folder was fsync'd: `emauto.sessions.powercut`); each test cuts at every
point of a recording and opens the session that survived.

The check is shown to fail when durability is broken. Each mutation below breaks the store
on purpose (through a file system that drops the fsyncs, or by reordering the writes), and
its test asserts that the same sweep then reports the loss:

- (a) no fsync at all: the session is lost once acknowledged;
- (b) no folder fsync: the session folder's name is lost, so the session is;
- (b') no fsync of the frames' folders only: acknowledged steps lose their frames;
- (c) no fsync of the document line: acknowledged events are lost;
- (d) the event appended before its frame is written: events whose frame is gone (the step
  is not yet acknowledged then, so it shows as a dangling event, not a lost step).

Applied by hand to the real code (the calls deleted from `store.py`, `durable.py`,
`recorder.py`, the normal tests run, the edit reverted), every mutation fails
``test_every_cut_point_keeps_every_acknowledged_step``,
``test_cuts_with_partial_writeback_keep_every_acknowledged_step``,
``test_twin_sessions_with_positions_survive_every_cut`` and
``test_the_benchmark_trials_lose_nothing``; all but (d) also fail
``test_the_image_after_close_is_the_live_session`` and
``test_the_os_file_system_fsyncs_every_file_and_folder_of_a_session``. So do two more: the
session folder's parents not fsync'd (the recorder did not, before these tests), and the
Zarr group's ``zarr.json`` not fsync'd. An `OsFileSystem` whose fsync does nothing fails only
the spy test. ``tests/sessions/test_kill.py`` passes under every one of them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import emauto
from emauto.bench.driver import StaticMicroscope
from emauto.bench.recorder import PowerCutRecording, power_cut_trials, record_on_power_cut_disk
from emauto.errors import SessionError
from emauto.microscope import Frame, ImageRequest, PositionsScan, RonchigramRequest
from emauto.sessions import Session
from emauto.sessions.durable import AppendFile, FileSystem
from emauto.sessions.powercut import PowerCutFileSystem, Survivor
from emauto.sessions.store import FRAMES, DocumentLog, FrameStore
from emauto.wrappers.recording import RecordingMicroscope

STEPS = 6  # set, acquire, set, acquire, set, acquire; then close (safe, stop)


def record(
    tmp_path: Path, wrap: Callable[[PowerCutFileSystem], FileSystem] | None = None
) -> PowerCutRecording:
    return record_on_power_cut_disk(tmp_path / "disk", StaticMicroscope((16, 16)), STEPS, wrap=wrap)


def sweep(
    recording: PowerCutRecording, folder: Path, writeback: random.Random | None = None
) -> list[Survivor]:
    """Cut power after 0, 1, ..., all operations (images in the new ``folder``); the survivor
    of each cut."""
    return [
        recording.cut(after, folder / f"cut-{after}", writeback)
        for after in range(recording.operations + 1)
    ]


def failures(survivors: list[Survivor]) -> list[tuple[int, Survivor]]:
    return [(after, s) for after, s in enumerate(survivors) if not s.ok]


# ---------------------------------------------------------------------- the recorder holds


def test_every_cut_point_keeps_every_acknowledged_step(tmp_path: Path) -> None:
    recording = record(tmp_path)
    survivors = sweep(recording, tmp_path)
    assert failures(survivors) == []
    # the sweep covers cuts before the session exists, in the middle of steps and after all
    assert survivors[0].recorded == 0 and survivors[-1].acknowledged == STEPS + 1
    assert survivors[-1].recorded == STEPS + 1
    acknowledged = [s.acknowledged for s in survivors]
    assert sorted(set(acknowledged)) == list(range(STEPS + 2))
    # a step's event is durable before its call returns: the step in flight may be there
    assert any(s.recorded == s.acknowledged + 1 for s in survivors)
    # the start document survives once the recorder has opened
    opened = [s for i, s in enumerate(survivors) if i >= recording.opened_at]
    assert all(not s.session_lost for s in opened)


def test_cuts_with_partial_writeback_keep_every_acknowledged_step(tmp_path: Path) -> None:
    """The kernel may have written back any part of what was not fsync'd: a torn line, a
    frame's name without its bytes. Nothing acknowledged is lost, torn lines are cut off."""
    recording = record(tmp_path)
    survivors = [
        s
        for seed in range(3)
        for s in sweep(recording, tmp_path / f"seed-{seed}", random.Random(seed))
    ]
    assert failures(survivors) == []
    assert any(s.torn for s in survivors)


def test_twin_sessions_with_positions_survive_every_cut(tmp_path: Path, tiny_sim_uri: str) -> None:
    positions = ImageRequest(scan=PositionsScan(positions_m=[[0, 0], [1e-10, 2e-10], [3e-10, 0]]))
    recording = record_on_power_cut_disk(
        tmp_path / "disk",
        emauto.connect(tiny_sim_uri),
        4,
        requests=(positions, RonchigramRequest(exposure_s=1e-3)),
    )
    assert failures(sweep(recording, tmp_path)) == []
    session = Session(recording.disk.root / recording.session)
    frame = session.frame(session.steps[1])
    assert frame.positions_m is not None and frame.data.shape == (3,)
    assert np.isfinite(session.steps[1].truth())


def test_the_image_after_close_is_the_live_session(tmp_path: Path) -> None:
    """Everything is fsync'd by close(): the model then keeps every byte the disk holds, so
    the journal misses no write."""
    recording = record(tmp_path)
    image = recording.disk.image(tmp_path / "image")
    assert tree(image) == tree(recording.disk.root)


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def test_the_benchmark_trials_lose_nothing(tmp_path: Path) -> None:
    figures = power_cut_trials(tmp_path, 10, random.Random(0))
    assert figures["power_cut_trials"] == 10 and figures["power_cut_trials_failed"] == 0
    assert figures["power_cut_acknowledged_steps_lost"] == 0


# ---------------------------------------------------------------------- the model


def test_the_model_keeps_only_what_was_fsynced(tmp_path: Path) -> None:
    disk = PowerCutFileSystem(tmp_path / "disk")
    root = disk.root
    disk.mkdir(root / "a")
    disk.create(root / "a" / "f", b"frame")
    disk.fsync_file(root / "a" / "f")
    assert tree(disk.image(tmp_path / "1")) == {}  # the name "a" is not durable yet
    disk.fsync_folder(root)
    assert tree(disk.image(tmp_path / "2")) == {"a": None}  # "a" is, "a/f" is not
    disk.fsync_folder(root / "a")
    log = disk.open_append(root / "a" / "log")
    log.write(b"line 1\n")
    log.sync()
    log.write(b"line 2\n")
    assert tree(disk.image(tmp_path / "3")) == {"a": None, "a/f": b"frame"}
    disk.fsync_folder(root / "a")
    assert tree(disk.image(tmp_path / "4"))["a/log"] == b"line 1\n"  # not the unsynced line
    log.sync()
    assert tree(disk.image(tmp_path / "5"))["a/log"] == b"line 1\nline 2\n"
    assert tree(disk.image(tmp_path / "6", after=6)) == {"a": None, "a/f": b"frame"}
    kept = {
        tree(disk.image(tmp_path / f"w{i}", 10, writeback=random.Random(i))).get("a/log")
        for i in range(40)
    }
    assert kept <= {None, *(b"line 1\nline 2\n"[:n] for n in range(7, 15))} and len(kept) > 3
    log.close()
    # what the real disk holds is untouched by the images
    assert (root / "a" / "log").read_bytes() == b"line 1\nline 2\n"


def test_the_disk_must_start_empty_and_be_written_through_the_model(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SessionError, match="starts empty"):
        PowerCutFileSystem(tmp_path / "full")
    disk = PowerCutFileSystem(tmp_path / "disk")
    with pytest.raises(SessionError, match="outside"):
        disk.mkdir(tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
    disk.fsync_folder(tmp_path)  # the root's parents are durable: allowed, not journalled
    assert disk.operations == []


def test_the_os_file_system_fsyncs_every_file_and_folder_of_a_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the model cannot see: that `OsFileSystem` really calls fsync(2). A spy (the real
    fsync still runs) notes each inode fsync'd while recording on the real disk."""
    synced: set[int] = set()
    real_fsync = os.fsync

    def spy(descriptor: int) -> None:
        synced.add(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", spy)
    scope = RecordingMicroscope.open(StaticMicroscope((16, 16)), tmp_path / "new" / "s")
    scope.set({"C10": 1e-9})
    scope.acquire(RonchigramRequest(exposure_s=1e-3))
    scope.close()
    session = tmp_path / "new" / "s"
    every = [tmp_path, tmp_path / "new", session, *session.rglob("*")]
    assert [p for p in every if p.stat().st_ino not in synced] == []


# ---------------------------------------------------------------------- the check is sensitive


class Dropping:
    """The disk with some fsyncs dropped: a store that forgot to make them."""

    def __init__(self, disk: PowerCutFileSystem, drop: Callable[[str, Path], bool]) -> None:
        self.disk, self.drop = disk, drop

    def mkdir(self, path: Path) -> None:
        self.disk.mkdir(path)

    def create(self, path: Path, data: bytes) -> None:
        self.disk.create(path, data)

    def open_append(self, path: Path) -> AppendFile:
        return DroppingAppend(self.disk.open_append(path), self.drop("line", path))

    def truncate(self, path: Path, size: int) -> None:
        self.disk.truncate(path, size)

    def fsync_file(self, path: Path) -> None:
        if not self.drop("file", path):
            self.disk.fsync_file(path)

    def fsync_folder(self, path: Path) -> None:
        if not self.drop("folder", path):
            self.disk.fsync_folder(path)


class DroppingAppend:
    def __init__(self, inner: AppendFile, drop: bool) -> None:
        self.inner, self.drop = inner, drop

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    def sync(self) -> None:
        if not self.drop:
            self.inner.sync()

    def close(self) -> None:
        self.inner.close()


MUTATIONS: dict[str, Callable[[str, Path], bool]] = {
    "a: no fsync at all": lambda kind, path: True,
    "b: no folder fsync": lambda kind, path: kind == "folder",
    "b': no fsync of the frames' folders": lambda kind, path: (
        kind == "folder" and path.parent.name == FRAMES
    ),
    "c: no fsync of the document line": lambda kind, path: kind == "line",
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_dropped_fsync_loses_acknowledged_steps(tmp_path: Path, mutation: str) -> None:
    recording = record(tmp_path, lambda disk: Dropping(disk, MUTATIONS[mutation]))
    survivors = sweep(recording, tmp_path)
    assert failures(survivors)
    assert any(s.lost > 0 for s in survivors)
    if mutation.startswith(("a", "b:")):
        assert any(s.session_lost for s in survivors)
    # the live folder is fine: only a power cut shows the loss (a kill -9 would not)
    live = Session(recording.disk.root / recording.session)
    assert len(live.steps) == STEPS + 1 and all(
        live.frame(s).data.shape == (16, 16) for s in live.acquisitions()
    )


@pytest.fixture
def event_before_frame(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """(d): the frame is written (and fsync'd) only after its event line is appended."""
    pending: list[tuple[FrameStore, str, Frame]] = []
    write, append = FrameStore.write, DocumentLog.append

    def write_later(store: FrameStore, key: str, frame: Frame) -> None:
        pending.append((store, key, frame))

    def append_then_write(log: DocumentLog, name: str, document: dict[str, Any]) -> None:
        append(log, name, document)
        while pending:
            write(*pending.pop())

    monkeypatch.setattr(FrameStore, "write", write_later)
    monkeypatch.setattr(DocumentLog, "append", append_then_write)
    yield


@pytest.mark.usefixtures("event_before_frame")
def test_an_event_before_its_frame_leaves_events_without_frames(tmp_path: Path) -> None:
    survivors = sweep(record(tmp_path), tmp_path)
    assert failures(survivors)
    assert any(s.dangling > 0 for s in survivors)
