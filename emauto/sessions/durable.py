"""The file-system operations a session's durability rests on, behind one small interface.

The store (`emauto.sessions.store`) creates, appends, truncates and fsyncs only through a
`FileSystem`: `OsFileSystem` (the default) does each with one system call, and
`emauto.sessions.powercut.PowerCutFileSystem` does the same and also keeps a journal, from
which it builds what a power cut at any point would leave on disk. Reads go straight to the
disk.

The durability rules the store follows are POSIX's, strictly: a file's bytes are on disk once
the file is fsync'd; a new file's or folder's *name* is on disk once its parent folder is
fsync'd (fsync of the file itself does not persist its name).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

__all__ = ["AppendFile", "FileSystem", "OsFileSystem", "make_folders"]


class AppendFile(Protocol):
    """A file open for appending."""

    def write(self, data: bytes) -> None:
        """Append ``data`` (not yet durable)."""
        ...

    def sync(self) -> None:
        """Flush and fsync: everything written so far is on disk when this returns."""
        ...

    def close(self) -> None:
        """Close the file (syncs nothing)."""
        ...


class FileSystem(Protocol):
    """The durable operations of a session store; none of them syncs unless it says so."""

    def mkdir(self, path: Path) -> None:
        """Create one folder; its parent must exist (`FileExistsError` if it exists)."""
        ...

    def create(self, path: Path, data: bytes) -> None:
        """Create the new file ``path`` holding ``data`` (`FileExistsError` if it exists)."""
        ...

    def open_append(self, path: Path) -> AppendFile:
        """Open ``path`` for appending, creating it empty if it does not exist."""
        ...

    def truncate(self, path: Path, size: int) -> None:
        """Cut the file ``path`` to ``size`` bytes."""
        ...

    def fsync_file(self, path: Path) -> None:
        """Make the file's bytes durable (not its name: see `fsync_folder`)."""
        ...

    def fsync_folder(self, path: Path) -> None:
        """Make the folder's list of names durable (the files and folders created in it)."""
        ...


class _OsAppendFile:
    """Unbuffered: each `write` is a ``write(2)`` (in the page cache, as a kill -9 leaves it),
    `sync` only the ``fsync(2)``."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - held open by the caller

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _fsync(path: Path, flags: int) -> None:
    descriptor = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class OsFileSystem:
    """The operating system's file system: one system call per operation."""

    def mkdir(self, path: Path) -> None:
        """``mkdir(2)``."""
        os.mkdir(path)

    def create(self, path: Path, data: bytes) -> None:
        """``open(O_CREAT | O_EXCL)`` and one ``write``."""
        with open(path, "xb") as handle:
            handle.write(data)

    def open_append(self, path: Path) -> AppendFile:
        """``open(O_APPEND | O_CREAT)``; `AppendFile.sync` is ``fsync(2)``."""
        return _OsAppendFile(path)

    def truncate(self, path: Path, size: int) -> None:
        """``ftruncate(2)`` on the file opened with ``O_NOFOLLOW`` (never a link's target)."""
        descriptor = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.ftruncate(descriptor, size)
        finally:
            os.close(descriptor)

    def fsync_file(self, path: Path) -> None:
        """``fsync(2)`` on the file."""
        _fsync(path, 0)

    def fsync_folder(self, path: Path) -> None:
        """``fsync(2)`` on the folder."""
        _fsync(path, getattr(os, "O_DIRECTORY", 0))


def make_folders(file_system: FileSystem, path: Path) -> None:
    """Create ``path`` and its missing parents, durably: fsync the parent of each folder made,
    and the parent of ``path`` (whose entry may have been made by someone who did not)."""
    missing: list[Path] = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        file_system.mkdir(folder)
    for parent in dict.fromkeys([*(f.parent for f in reversed(missing)), path.parent]):
        file_system.fsync_folder(parent)
