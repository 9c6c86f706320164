"""Durable, append-only storage of one session: JSON Lines documents and Zarr frames.

Layout of a session folder::

    documents.jsonl   one ``[name, document]`` pair per line (bluesky event-model), fsync'd
    frames.zarr/      one Zarr array per frame (its metadata: request, state, dose,
                      calibrations, as attributes) and ``<key>_positions_m`` when it has them

Durability: a frame is written and fsync'd (its files, then its folder, then ``frames.zarr``)
before the event that references it is appended and fsync'd, so an acknowledged event always
has its frame. A crash can leave only (a) a torn last line, which `read_documents` cuts off, and
(b) a frame no event references, which readers ignore. Every write goes through a
`~emauto.sessions.durable.FileSystem` (the operating system's by default), so that
`~emauto.sessions.powercut.PowerCutFileSystem` can show what a power cut would leave.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.core.buffer import Buffer
from zarr.storage import MemoryStore

from emauto.errors import SessionCorruptError, SessionError
from emauto.microscope import Frame
from emauto.sessions.durable import AppendFile, FileSystem, OsFileSystem

DOCUMENTS = "documents.jsonl"
FRAMES = "frames.zarr"
#: Suffix of the array holding a frame's scan positions (m), when it has them.
POSITIONS = "_positions_m"


class DocumentLog:
    """Append ``[name, doc]`` lines to ``documents.jsonl``; each append is fsync'd."""

    def __init__(self, path: Path, file_system: FileSystem | None = None) -> None:
        self.path = path
        file_system = file_system or OsFileSystem()
        existed = path.exists()
        self._file: AppendFile = file_system.open_append(path)
        if not existed:
            file_system.fsync_folder(path.parent)

    def append(self, name: str, document: dict[str, Any]) -> None:
        """Write one line and fsync it; returns once it is on disk."""
        line = json.dumps([name, document], allow_nan=False, separators=(",", ":"))
        self._file.write(line.encode() + b"\n")
        self._file.sync()

    def close(self) -> None:
        self._file.close()


def read_documents(
    path: Path, *, repair: bool, file_system: FileSystem | None = None
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """All ``(name, doc)`` pairs of a document log and the number of torn bytes at its end.

    A last line without its newline or not valid JSON is torn (a crash mid-write); with
    ``repair`` the file is cut back to the last complete line (and fsync'd). Any damage
    before the last line raises `SessionCorruptError` with the line number.
    """
    if not path.is_file():
        raise SessionCorruptError(f"{path}: missing; a session folder holds {DOCUMENTS}")
    raw = path.read_bytes()
    cut = raw.rfind(b"\n") + 1
    torn = len(raw) - cut
    lines = raw[:cut].split(b"\n")[:-1]
    documents: list[tuple[str, dict[str, Any]]] = []
    for number, line in enumerate(lines, start=1):
        try:
            name, document = json.loads(line)
            if not isinstance(name, str) or not isinstance(document, dict):
                raise TypeError("expected [name, document]")
        except (ValueError, TypeError) as exc:
            if number == len(lines) and torn == 0:
                torn, cut = len(line) + 1, cut - len(line) - 1
                break
            raise SessionCorruptError(
                f"{path}: line {number} is not a [name, document] JSON pair ({exc})"
            ) from exc
        documents.append((name, document))
    if torn and repair:
        file_system = file_system or OsFileSystem()
        file_system.truncate(path, cut)
        file_system.fsync_file(path)
    return documents, torn


class FrameStore:
    """Frames of one session in a Zarr (v3) folder, one array per frame key.

    Zarr encodes each array in memory; the store writes the files it made through the
    `FileSystem`, so every byte of a session is written, and fsync'd, in one place.
    """

    def __init__(
        self,
        path: Path,
        *,
        mode: Literal["r", "w"] = "r",
        file_system: FileSystem | None = None,
    ) -> None:
        self.path = path
        self._fs = file_system or OsFileSystem()
        if mode == "w":  # a new group: its folder and zarr.json, durable with their names
            self._fs.mkdir(path)
            for file in self._create_files(path, _encode(_new_group)):
                self._fs.fsync_file(file)
            self._fs.fsync_folder(path)
            self._fs.fsync_folder(path.parent)
        elif not path.is_dir():
            raise SessionCorruptError(f"{path}: missing; a session folder holds {FRAMES}")
        try:
            self._root = zarr.open_group(str(path), mode="r")
        except Exception as exc:
            raise SessionCorruptError(f"{path}: not a readable Zarr group ({exc})") from exc

    def write(self, key: str, frame: Frame) -> None:
        """Write ``frame`` as the array ``key`` (metadata in its attributes) and fsync it.

        One array per frame, one chunk, flat chunk names: 2 files and 1 folder to fsync
        (4 more with positions), then ``frames.zarr``: what the per-step cost is made of.
        """
        arrays = [(key, frame.data, frame.model_dump(mode="json", exclude={"data", "positions_m"}))]
        if frame.positions_m is not None:
            arrays.append((f"{key}{POSITIONS}", frame.positions_m, {}))
        written: list[tuple[Path, list[Path]]] = []
        for name, values, attributes in arrays:
            folder = self.path / name
            try:
                self._fs.mkdir(folder)
            except FileExistsError as exc:
                raise SessionError(f"frame {name!r} already exists in {self.path}") from exc
            written.append((folder, self._create_files(folder, _encode_array(values, attributes))))
        for folder, files in written:
            for file in files:
                self._fs.fsync_file(file)
            self._fs.fsync_folder(folder)
        self._fs.fsync_folder(self.path)

    def _create_files(self, folder: Path, files: dict[str, bytes]) -> list[Path]:
        """Create the (flat) files of one Zarr node in ``folder``; nothing is synced."""
        paths = []
        for name, data in files.items():
            if "/" in name:  # one chunk with a flat name: never a sub-folder
                raise SessionError(f"unexpected nested Zarr key {name!r} in {folder}")
            self._fs.create(folder / name, data)
            paths.append(folder / name)
        return paths

    def read(self, key: str) -> Frame:
        """The frame stored under ``key``."""
        try:
            array = self._root[key]
            assert isinstance(array, zarr.Array)
            positions = None
            if f"{key}{POSITIONS}" in self._root:
                positions = _array(self._root, f"{key}{POSITIONS}")
            return Frame.model_validate(
                {**array.attrs.asdict(), "data": np.asarray(array[...]), "positions_m": positions}
            )
        except Exception as exc:
            raise SessionCorruptError(f"{self.path}: frame {key!r} is unreadable ({exc})") from exc


def _encode(make: Any) -> dict[str, bytes]:
    """The files (name: bytes) that ``make(store)`` writes into an empty Zarr store."""
    files: dict[str, Buffer] = {}
    make(MemoryStore(files))
    return {name: buffer.to_bytes() for name, buffer in files.items()}


def _new_group(store: MemoryStore) -> None:
    zarr.open_group(store, mode="w")


def _encode_array(values: np.ndarray, attributes: dict[str, Any]) -> dict[str, bytes]:
    """The files of one array holding ``values`` in a single chunk with a flat name."""
    data = np.ascontiguousarray(values)

    def make(store: MemoryStore) -> None:
        array = zarr.create_array(
            store,
            shape=data.shape,
            dtype=data.dtype,
            chunks=data.shape,
            chunk_key_encoding={"name": "v2", "separator": "."},
            attributes=attributes,
        )
        array[...] = data

    return _encode(make)


def _array(group: zarr.Group, name: str) -> np.ndarray:
    array = group[name]
    assert isinstance(array, zarr.Array)
    return np.asarray(array[...])
