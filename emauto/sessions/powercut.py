"""A simulated disk that loses what was not fsync'd: what a power cut leaves of a session.

A ``kill -9`` cannot show a missing fsync: the killed process's writes are still in the page
cache and reach the disk anyway. `PowerCutFileSystem` is the store's `FileSystem` that also
keeps a journal of every operation, and `PowerCutFileSystem.image` writes, into a new folder,
what a power cut after the first ``after`` operations would leave, under this model:

- a file's bytes survive up to its last fsync (`FileSystem.fsync_file`), and no further;
- a file's or folder's *name* survives only if its parent folder was fsync'd after the name
  was made (`FileSystem.fsync_folder`; POSIX's rule, stricter than ext4 in practice);
- a folder whose name survives keeps only the names it had at its own last fsync; a file
  whose name survives but which was never fsync'd is empty;
- with ``writeback`` (a random generator), the kernel may also have written back any part of
  what was not fsync'd: each unsynced name survives or not at random, and each file keeps a
  random length of its unsynced appended bytes (a torn line), never more than was written.

Operations are atomic in the journal (a power cut falls between two of them), and the disk
never reorders or corrupts fsync'd data. The folder `root` stands for the disk: it must be new
or empty and every write under it must go through this object; it and its parents are
durable.

`check_survivor` opens the session in an image and counts what an acknowledged recording must
not lose.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from emauto.errors import SessionCorruptError, SessionError
from emauto.sessions.durable import AppendFile, FileSystem, OsFileSystem
from emauto.sessions.reader import Session

__all__ = ["Operation", "PowerCutFileSystem", "Survivor", "check_survivor"]

OperationKind = Literal["mkdir", "create", "append", "truncate", "fsync_file", "fsync_folder"]


@dataclass(frozen=True)
class Operation:
    """One journalled operation; ``path`` is relative to the disk's root (``""``: the root)."""

    kind: OperationKind
    path: str
    data: bytes = b""
    size: int = 0


class _JournalledAppendFile:
    def __init__(self, disk: PowerCutFileSystem, relative: str, inner: AppendFile) -> None:
        self._operations, self._relative, self._inner = disk.operations, relative, inner

    def write(self, data: bytes) -> None:
        self._inner.write(data)
        self._operations.append(Operation("append", self._relative, bytes(data)))

    def sync(self) -> None:
        self._inner.sync()
        self._operations.append(Operation("fsync_file", self._relative))

    def close(self) -> None:
        self._inner.close()


class PowerCutFileSystem:
    """A `FileSystem` that does each operation on ``inner`` (the real one) under ``root`` and
    journals it, so that `image` can rebuild what survives a power cut at any point."""

    def __init__(self, root: Path, inner: FileSystem | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        if any(self.root.iterdir()):
            raise SessionError(f"{self.root}: a simulated disk starts empty")
        self._inner = inner or OsFileSystem()
        #: Every operation so far, in order.
        self.operations: list[Operation] = []

    # ------------------------------------------------------------------ FileSystem

    def mkdir(self, path: Path) -> None:
        """Create one folder and journal it."""
        relative = self._relative(path)
        self._inner.mkdir(path)
        self.operations.append(Operation("mkdir", relative))

    def create(self, path: Path, data: bytes) -> None:
        """Create a file holding ``data`` and journal it."""
        relative = self._relative(path)
        self._inner.create(path, data)
        self.operations.append(Operation("create", relative, bytes(data)))

    def open_append(self, path: Path) -> AppendFile:
        """Open for appending (journalled as a create when the file is new)."""
        relative = self._relative(path)
        existed = path.exists()
        handle = self._inner.open_append(path)
        if not existed:
            self.operations.append(Operation("create", relative))
        return _JournalledAppendFile(self, relative, handle)

    def truncate(self, path: Path, size: int) -> None:
        """Cut a file and journal it."""
        relative = self._relative(path)
        self._inner.truncate(path, size)
        self.operations.append(Operation("truncate", relative, size=size))

    def fsync_file(self, path: Path) -> None:
        """fsync a file and journal it."""
        relative = self._relative(path)
        self._inner.fsync_file(path)
        self.operations.append(Operation("fsync_file", relative))

    def fsync_folder(self, path: Path) -> None:
        """fsync a folder and journal it (the root's parents are durable: not journalled)."""
        if Path(path).resolve() in self.root.parents:
            self._inner.fsync_folder(path)
            return
        relative = self._relative(path)
        self._inner.fsync_folder(path)
        self.operations.append(Operation("fsync_folder", relative))

    def _relative(self, path: Path) -> str:
        """``path`` relative to the root (``""``: the root); `SessionError` if outside."""
        resolved = Path(path).resolve()
        if resolved == self.root:
            return ""
        if self.root not in resolved.parents:
            raise SessionError(f"{path} is outside the simulated disk {self.root}")
        return resolved.relative_to(self.root).as_posix()

    # ------------------------------------------------------------------ power cut

    def image(
        self, dest: Path, after: int | None = None, *, writeback: random.Random | None = None
    ) -> Path:
        """Write into the new folder ``dest`` what survives a power cut after the first
        ``after`` operations (all so far by default); returns ``dest``, which stands for
        ``root``."""
        state = _State()
        for operation in self.operations[: len(self.operations) if after is None else after]:
            state.apply(operation)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=False)
        state.write(dest, "", writeback)
        return dest


class _State:
    """The disk after a prefix of the journal: what is written, and what is durable."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {"": []}  # folder: names in it, in creation order
        self.durable_names: dict[str, set[str]] = {"": set()}  # as of the folder's last fsync
        self.data: dict[str, bytearray] = {}  # file: bytes written
        self.durable_data: dict[str, bytes] = {}  # as of the file's last fsync

    def apply(self, operation: Operation) -> None:
        path = operation.path
        if operation.kind in ("mkdir", "create"):
            parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
            self.names["" if parent == "." else parent].append(name)
            if operation.kind == "mkdir":
                self.names[path] = []
            else:
                self.data[path] = bytearray(operation.data)
        elif operation.kind == "append":
            self.data[path] += operation.data
        elif operation.kind == "truncate":
            del self.data[path][operation.size :]
        elif operation.kind == "fsync_file":
            self.durable_data[path] = bytes(self.data[path])
        else:
            self.durable_names[path] = set(self.names[path])

    def write(self, dest: Path, folder: str, writeback: random.Random | None) -> None:
        """Write the surviving content of ``folder`` into ``dest``, recursively."""
        durable = self.durable_names.get(folder, set())
        for name in self.names[folder]:
            if name not in durable and (writeback is None or writeback.random() < 0.5):
                continue
            path = f"{folder}/{name}" if folder else name
            if path in self.names:
                (dest / name).mkdir()
                self.write(dest / name, path, writeback)
            else:
                (dest / name).write_bytes(self._content(path, writeback))

    def _content(self, path: str, writeback: random.Random | None) -> bytes:
        synced = self.durable_data.get(path, b"")
        if writeback is None:
            return synced
        written = bytes(self.data[path])
        if written.startswith(synced):  # appended since: any part of it may have reached disk
            return written[: writeback.randint(len(synced), len(written))]
        return writeback.choice([synced, written])


@dataclass(frozen=True)
class Survivor:
    """What a power cut left of a session, against what the recorder had acknowledged."""

    acknowledged: int  #: steps whose call had returned before the cut
    recorded: int  #: steps (primary events) in the surviving session
    lost: int  #: acknowledged steps missing, changed, or whose frame is gone or differs
    dangling: int  #: events (acknowledged or not) whose frame is missing or unreadable
    session_lost: bool  #: the session was acknowledged (opened) but cannot be read
    torn: bool  #: the last line was torn and cut off on opening

    @property
    def ok(self) -> bool:
        """Nothing acknowledged lost, no dangling frame, at most the step in flight extra."""
        return (
            self.lost == 0
            and self.dangling == 0
            and not self.session_lost
            and self.recorded <= self.acknowledged + 1
        )


def check_survivor(
    path: Path,
    acknowledged: int,
    opened: bool,
    expected: Sequence[tuple[str, np.ndarray | None]] = (),
) -> Survivor:
    """Open the session at ``path`` in a power-cut image and compare it with what was
    acknowledged: ``acknowledged`` steps, the session ``opened`` (its start and descriptor
    written), and per step its kind and frame data (``expected``, in order; None: no frame)."""
    try:
        session = Session(path)
    except SessionCorruptError:
        return Survivor(acknowledged, 0, acknowledged, 0, opened, False)
    lost = max(0, acknowledged - len(session.steps))
    dangling = 0
    for step in session.steps:
        good, data = True, None
        if step.frame_key:
            try:
                data = session.frame(step).data
            except SessionCorruptError:
                dangling += 1
                good = False
        if step.seq < len(expected):
            kind, want = expected[step.seq]
            good &= step.kind == kind and (want is None) == (not step.frame_key)
            if want is not None and data is not None:
                good &= bool(np.array_equal(data, want))
        lost += int(not good and step.seq < acknowledged)
    return Survivor(acknowledged, len(session.steps), lost, dangling, False, session.torn_bytes > 0)
