"""Read an untrusted session folder safely, and write outputs atomically.

A session folder may come from anyone (a colleague, a facility share, an archive). Reading it
must not touch anything outside it, must not change it, and must not let its contents decide
how much memory is used. So:

- every name under the session folder is opened relative to the folder's descriptor, one
  plain component at a time (`SessionFolder`), with ``O_NOFOLLOW``: a symlink anywhere inside
  the session, a name with ``/`` or ``..``, a FIFO or a device is refused
  (`SessionFormatError`); the folder the user named may itself be a link (their choice);
- every read is bounded (`ReaderLimits`) before anything is allocated: a file's size is
  checked against its limit from ``fstat``, and reading stops at the limit plus one byte;
- outputs (`write_atomic`) go to a new temporary file in the target folder, are fsync'd and
  then renamed over the name: an existing symlink at that name is replaced, never followed,
  and a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from emauto.errors import SessionCorruptError, SessionFormatError

__all__ = ["ReaderLimits", "SessionFolder", "check_name", "write_atomic"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

MiB = 1 << 20


@dataclass(frozen=True)
class ReaderLimits:
    """Upper bounds on what reading one session may cost (bytes and counts).

    The defaults are far above what the recorder writes (an event line is ~2 kB, a frame a
    few MB) and far below what would exhaust a workstation.
    """

    max_line_bytes: int = 4 * MiB  #: one line of documents.jsonl
    max_documents_bytes: int = 1024 * MiB  #: the whole documents.jsonl
    max_documents: int = 1_000_000  #: lines of documents.jsonl
    max_metadata_bytes: int = 4 * MiB  #: one zarr.json (a frame's metadata)
    max_frame_bytes: int = 512 * MiB  #: one frame's decoded array (shape x item size)
    max_ndim: int = 4  #: dimensions of one frame's array
    max_action_bytes: int = 1 * MiB  #: an event's ``action`` JSON text


DEFAULT_LIMITS = ReaderLimits()


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is one plain path component (no ``/``, not ``.``/``..``, no leading
    dot, at most 128 characters of ``[A-Za-z0-9_.-]``); else `SessionFormatError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise SessionFormatError(f"{what} {name!r} is not a plain file name inside the session")
    return name


class SessionFolder:
    """A session folder read through its descriptor: nothing below it is followed if it is a
    symlink, nothing outside it is reachable, and nothing in it is written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except NotADirectoryError as exc:
            raise SessionCorruptError(f"{self.path}: not a session folder") from exc
        except OSError as exc:
            raise SessionCorruptError(f"{self.path}: no such session folder ({exc})") from exc

    def close(self) -> None:
        """Release the folder's descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def _walk(self, parts: tuple[str, ...]) -> int:
        """A new descriptor of the folder ``parts`` below the session (each a plain name, no
        symlink); the caller closes it."""
        fd = os.dup(self._fd)
        try:
            for part in parts:
                check_name(part, "folder")
                try:
                    child = os.open(
                        part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd
                    )
                except OSError as exc:
                    raise self._refusal(parts, exc) from exc
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _refusal(self, parts: tuple[str, ...], exc: OSError) -> SessionCorruptError:
        path = self.path.joinpath(*parts)
        if self.is_link(*parts):
            return SessionFormatError(f"{path}: a symlink inside the session; refused")
        if isinstance(exc, FileNotFoundError):
            return SessionCorruptError(f"{path}: missing")
        return SessionFormatError(f"{path}: cannot be opened as expected ({exc.strerror})")

    def is_link(self, *parts: str) -> bool:
        """Whether ``parts`` names a symlink (without following anything)."""
        try:
            fd = self._walk(parts[:-1])
        except (SessionCorruptError, OSError):
            return False
        try:
            mode = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode
        except OSError:
            return False
        finally:
            os.close(fd)
        return stat.S_ISLNK(mode)

    def kind(self, *parts: str) -> str:
        """``file``, ``folder``, ``link``, ``other`` or ``missing`` (nothing followed)."""
        try:
            fd = self._walk(tuple(check_name(p) for p in parts[:-1]))
        except SessionCorruptError:
            return "missing"
        try:
            mode = os.stat(check_name(parts[-1]), dir_fd=fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return "missing"
        finally:
            os.close(fd)
        if stat.S_ISLNK(mode):
            return "link"
        if stat.S_ISDIR(mode):
            return "folder"
        return "file" if stat.S_ISREG(mode) else "other"

    def folder(self, *parts: str) -> None:
        """Check that ``parts`` is a real folder inside the session."""
        os.close(self._walk(parts))

    def open_file(self, *parts: str, max_bytes: int, write: bool = False) -> tuple[int, int]:
        """``(descriptor, size)`` of the regular file ``parts`` (no symlink, at most
        ``max_bytes``); the caller closes the descriptor."""
        folder = self._walk(parts[:-1])
        name = check_name(parts[-1], "file")
        path = self.path.joinpath(*parts)
        flags = (os.O_RDWR if write else os.O_RDONLY) | _NOFOLLOW | _CLOEXEC | _NONBLOCK
        try:
            fd = os.open(name, flags, dir_fd=folder)
        except OSError as exc:
            raise self._refusal(parts, exc) from exc
        finally:
            os.close(folder)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise SessionFormatError(f"{path}: not a regular file; refused")
        if info.st_size > max_bytes:
            os.close(fd)
            raise SessionFormatError(
                f"{path}: {info.st_size} bytes, more than the limit of {max_bytes}"
            )
        return fd, info.st_size

    def read(self, *parts: str, max_bytes: int) -> bytes:
        """The bytes of the regular file ``parts``, at most ``max_bytes`` (else
        `SessionFormatError`, before reading more than ``max_bytes + 1``)."""
        fd, _ = self.open_file(*parts, max_bytes=max_bytes)
        try:
            chunks, total = [], 0
            while total <= max_bytes:
                chunk = os.read(fd, min(max_bytes + 1 - total, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        finally:
            os.close(fd)
        if total > max_bytes:  # grew since fstat
            raise SessionFormatError(
                f"{self.path.joinpath(*parts)}: more than the limit of {max_bytes} bytes"
            )
        return b"".join(chunks)

    def lines(self, *parts: str, max_bytes: int, max_line: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, line)`` for each line of a file (the last may lack its newline); a line
        longer than ``max_line`` raises `SessionFormatError` without reading it whole."""
        fd, _ = self.open_file(*parts, max_bytes=max_bytes)
        with os.fdopen(fd, "rb") as handle:
            offset, number = 0, 0
            while True:
                line = handle.readline(max_line + 1)
                if not line:
                    return
                number += 1
                if len(line) > max_line:
                    raise SessionFormatError(
                        f"{self.path.joinpath(*parts)}: line {number} is longer than the "
                        f"limit of {max_line} bytes"
                    )
                yield offset, line
                offset += len(line)
                if offset > max_bytes:
                    raise SessionFormatError(
                        f"{self.path.joinpath(*parts)}: more than the limit of {max_bytes} bytes"
                    )

    def truncate(self, *parts: str, size: int, max_bytes: int) -> None:
        """Cut the regular file ``parts`` (never a symlink's target) to ``size`` bytes and
        fsync it."""
        fd, _ = self.open_file(*parts, max_bytes=max_bytes, write=True)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a new temporary file beside it (``O_EXCL``,
    never through a symlink), fsync'd, renamed over ``path`` (a symlink there is replaced, its
    target untouched), then the folder fsync'd. The folder must exist."""
    path = Path(path)
    check_name(path.name, "output file")
    folder = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        temporary = f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC,
            0o644,
            dir_fd=folder,
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError:
            os.unlink(temporary, dir_fd=folder)
            raise
        os.fsync(folder)
    finally:
        os.close(folder)
    return path
