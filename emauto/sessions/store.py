"""Durable, append-only storage of one session: JSON Lines documents and Zarr frames.

Layout of a session folder::

    documents.jsonl   one ``[name, document]`` pair per line (bluesky event-model), fsync'd
    frames.zarr/      one Zarr array per frame (its metadata: request, state, dose,
                      calibrations, as attributes) and ``<key>_positions_m`` when it has them

Durability: a frame is written and fsync'd (its files, then the folders)
before the event that references it is appended and fsync'd, so an acknowledged event always
has its frame. A crash can leave only (a) a torn last line, which `repair_tail` cuts off, and
(b) a frame no event references, which readers ignore.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from emauto.errors import SessionCorruptError, SessionError
from emauto.microscope import Frame

DOCUMENTS = "documents.jsonl"
FRAMES = "frames.zarr"
#: Suffix of the array holding a frame's scan positions (m), when it has them.
POSITIONS = "_positions_m"


def _fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entry list is what makes new files durable)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder))


class DocumentLog:
    """Append ``[name, doc]`` lines to ``documents.jsonl``; each append is fsync'd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.exists()
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the session
        if not existed:
            _fsync_path(path.parent)

    def append(self, name: str, document: dict[str, Any]) -> None:
        """Write one line and fsync it; returns once it is on disk."""
        line = json.dumps([name, document], allow_nan=False, separators=(",", ":"))
        self._file.write(line.encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_documents(path: Path, *, repair: bool) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """All ``(name, doc)`` pairs of a document log and the number of torn bytes at its end.

    A last line without its newline or not valid JSON is torn (a crash mid-write); with
    ``repair`` the file is cut back to the last complete line. Any damage before the last
    line raises `SessionCorruptError` with the line number.
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
        with open(path, "r+b") as handle:
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())
    return documents, torn


class FrameStore:
    """Frames of one session in a Zarr (v3) folder, one group per frame key."""

    def __init__(self, path: Path, *, mode: str = "r") -> None:
        self.path = path
        if mode == "r" and not path.is_dir():
            raise SessionCorruptError(f"{path}: missing; a session folder holds {FRAMES}")
        try:
            self._root = zarr.open_group(str(path), mode=mode)  # type: ignore[arg-type]
        except Exception as exc:
            raise SessionCorruptError(f"{path}: not a readable Zarr group ({exc})") from exc
        if mode != "r":
            _fsync_tree(path)
            _fsync_path(path.parent)

    def write(self, key: str, frame: Frame) -> None:
        """Write ``frame`` as the array ``key`` (metadata in its attributes) and fsync it.

        One array per frame, one chunk, flat chunk names: 2 files and 1 folder to fsync
        (4 more with positions), which is what the per-step cost is made of.
        """
        if key in self._root:
            raise SessionError(f"frame {key!r} already exists in {self.path}")
        written = [
            self._write_array(
                key, frame.data, frame.model_dump(mode="json", exclude={"data", "positions_m"})
            )
        ]
        if frame.positions_m is not None:
            written.append(self._write_array(f"{key}{POSITIONS}", frame.positions_m, {}))
        for name in written:
            _fsync_tree(self.path / name)
        _fsync_path(self.path)

    def _write_array(self, name: str, values: np.ndarray, attributes: dict[str, Any]) -> str:
        data = np.ascontiguousarray(values)
        array = self._root.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=data.shape,
            chunk_key_encoding={"name": "v2", "separator": "."},
            attributes=attributes,
        )
        array[...] = data
        return name

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


def _array(group: zarr.Group, name: str) -> np.ndarray:
    array = group[name]
    assert isinstance(array, zarr.Array)
    return np.asarray(array[...])
