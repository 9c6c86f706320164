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
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import zstd  # type: ignore[import-untyped]
from pydantic import ValidationError
from zarr.core.buffer import Buffer
from zarr.storage import MemoryStore

from emauto.errors import SessionCorruptError, SessionError, SessionFormatError
from emauto.microscope import Frame
from emauto.sessions.durable import AppendFile, FileSystem, OsFileSystem
from emauto.sessions.files import DEFAULT_LIMITS, ReaderLimits, SessionFolder

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


Document = tuple[str, dict[str, Any]]


def read_documents(
    folder: SessionFolder, *, repair: bool = False, limits: ReaderLimits = DEFAULT_LIMITS
) -> tuple[list[Document], int]:
    """All ``(name, doc)`` pairs of a session's document log and the number of torn bytes at
    its end.

    A last line without its newline or not valid JSON is torn (a crash mid-write): it is
    left out, and only with ``repair`` is the file cut back to the last complete line (and
    fsync'd; never through a symlink). Any damage before the last line raises
    `SessionCorruptError` with the line number; a line, a file or a count over ``limits``
    raises `SessionFormatError` before it is read whole.
    """
    path = folder.path / DOCUMENTS
    if folder.kind(DOCUMENTS) == "missing":
        raise SessionCorruptError(f"{path}: missing; a session folder holds {DOCUMENTS}")
    documents: list[Document] = []
    pending: tuple[int, int, BaseException] | None = None  # a bad line: torn if it is the last
    size = 0
    lines = folder.lines(
        DOCUMENTS, max_bytes=limits.max_documents_bytes, max_line=limits.max_line_bytes
    )
    for number, (offset, line) in enumerate(lines, start=1):
        if pending is not None:
            bad, _, exc = pending
            raise SessionCorruptError(
                f"{path}: line {bad} is not a [name, document] JSON pair ({exc})"
            ) from exc
        if number > limits.max_documents:
            raise SessionFormatError(f"{path}: more than {limits.max_documents} documents")
        size = offset + len(line)
        if not line.endswith(b"\n"):
            pending = (number, offset, ValueError("no newline at its end"))
            continue
        try:
            name, document = json.loads(line)
            if not isinstance(name, str) or not isinstance(document, dict):
                raise TypeError("expected [name, document]")
        except (ValueError, TypeError, RecursionError) as exc:
            pending = (number, offset, exc)
            continue
        documents.append((name, document))
    torn = 0
    if pending is not None:
        torn = size - pending[1]
        if repair:
            folder.truncate(DOCUMENTS, size=pending[1], max_bytes=limits.max_documents_bytes)
    return documents, torn


class FrameStore:
    """Write the frames of a new session into a Zarr (v3) folder, one array per frame key
    (`FrameReader` reads them back).

    Zarr encodes each array in memory; the store writes the files it made through the
    `FileSystem`, so every byte of a session is written, and fsync'd, in one place.
    """

    def __init__(self, path: Path, *, file_system: FileSystem | None = None) -> None:
        self.path = path
        self._fs = file_system or OsFileSystem()
        # a new group: its folder and zarr.json, durable with their names
        self._fs.mkdir(path)
        for file in self._create_files(path, _encode(_new_group)):
            self._fs.fsync_file(file)
        self._fs.fsync_folder(path)
        self._fs.fsync_folder(path.parent)

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


#: The element types a frame's array may have (Zarr v3 names).
DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
)  # fmt: skip
_KEY = re.compile(r"[0-9]{1,12}")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class FrameReader:
    """Read the frames of a session folder back, bounded and without following symlinks.

    Reads only the subset of Zarr v3 that `FrameStore` writes: one array per frame, one
    chunk with a flat ``v2`` key, the ``bytes`` codec and optionally ``zstd`` with the
    content size in its header. The array's byte count is computed from its declared shape
    and data type and checked against `ReaderLimits.max_frame_bytes` before anything is
    read or allocated; decompression writes into a buffer of exactly that size.
    """

    def __init__(self, folder: SessionFolder, limits: ReaderLimits = DEFAULT_LIMITS) -> None:
        self.folder = folder
        self.limits = limits
        self.path = folder.path / FRAMES
        kind = folder.kind(FRAMES)
        if kind == "missing":
            raise SessionCorruptError(f"{self.path}: missing; a session folder holds {FRAMES}")
        if kind != "folder":
            raise SessionFormatError(f"{self.path}: a {kind}, not a folder; refused")
        group = _json(folder.read(FRAMES, "zarr.json", max_bytes=4096), self.path / "zarr.json")
        if group.get("zarr_format") != 3 or group.get("node_type") != "group":
            raise SessionFormatError(f"{self.path}: not a Zarr v3 group")

    def read(self, key: str) -> Frame:
        """The frame stored under ``key`` (`SessionCorruptError` if it is missing,
        `SessionFormatError` if it is not what the recorder writes)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise SessionFormatError(f"{self.path}: frame key {key!r} is not a step number")
        where = f"{self.path}: frame {key!r}"
        kind = self.folder.kind(FRAMES, key)
        if kind == "link":
            raise SessionFormatError(f"{where} is a symlink inside the session; refused")
        if kind != "folder":
            raise SessionCorruptError(f"{where} is unreadable (missing, or not a folder)")
        metadata, data = self._array(key)
        positions = None
        if self.folder.kind(FRAMES, f"{key}{POSITIONS}") != "missing":
            positions = self._array(f"{key}{POSITIONS}")[1]
        attributes = metadata.get("attributes", {})
        if not isinstance(attributes, dict):
            raise SessionFormatError(f"{where}: attributes are not a mapping")
        try:
            return Frame.model_validate({**attributes, "data": data, "positions_m": positions})
        except ValidationError as exc:
            raise SessionFormatError(f"{where}: invalid metadata ({first_error(exc)})") from exc

    def _array(self, name: str) -> tuple[dict[str, Any], np.ndarray]:
        where = self.path / name
        metadata = _json(
            self.folder.read(FRAMES, name, "zarr.json", max_bytes=self.limits.max_metadata_bytes),
            where / "zarr.json",
        )
        shape, dtype, compressed, fill = _check_array_metadata(metadata, where, self.limits)
        nbytes = math.prod(shape) * dtype.itemsize
        chunk = ".".join("0" for _ in shape)
        if self.folder.kind(FRAMES, name, chunk) == "missing":  # Zarr leaves out a chunk of fill
            return metadata, np.full(shape, fill, dtype=dtype.newbyteorder("="))
        # zstd's worst case adds ~0.4 % and a few headers to incompressible data
        limit = nbytes + nbytes // 128 + 4096 if compressed else nbytes
        raw = self.folder.read(FRAMES, name, chunk, max_bytes=limit)
        if compressed:
            declared = _zstd_content_size(raw, where / chunk)
            if declared != nbytes:
                raise SessionFormatError(
                    f"{where / chunk}: zstd content of {declared} bytes, expected {nbytes} "
                    f"(shape {list(shape)}, {dtype.name})"
                )
            buffer = bytearray(nbytes)
            try:
                decoded = zstd.decompress(raw, buffer)
            except (ValueError, RuntimeError, TypeError) as exc:
                raise SessionFormatError(f"{where / chunk}: not valid zstd data ({exc})") from exc
            if len(decoded) != nbytes:
                raise SessionFormatError(f"{where / chunk}: decoded {len(decoded)} bytes")
            raw = bytes(buffer)
        elif len(raw) != nbytes:
            raise SessionFormatError(f"{where / chunk}: {len(raw)} bytes, expected {nbytes}")
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        return metadata, array.astype(dtype.newbyteorder("="), copy=True)


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"[:300]


def _json(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise SessionFormatError(f"{path}: not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(value, dict):
        raise SessionFormatError(f"{path}: expected a JSON object")
    return value


def _check_array_metadata(
    metadata: dict[str, Any], where: Path, limits: ReaderLimits
) -> tuple[tuple[int, ...], np.dtype[Any], bool, Any]:
    """Shape, data type (with its byte order), whether zstd-compressed, and fill value of an
    array's ``zarr.json``, checked against what `FrameStore` writes and ``limits``."""

    def refuse(what: str) -> SessionFormatError:
        return SessionFormatError(f"{where}/zarr.json: {what}")

    if metadata.get("zarr_format") != 3 or metadata.get("node_type") != "array":
        raise refuse("not a Zarr v3 array")
    shape = metadata.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= limits.max_ndim
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise refuse(f"shape must be 1 to {limits.max_ndim} non-negative integers, got {shape!r}")
    name = metadata.get("data_type")
    if name not in DTYPES:
        raise refuse(f"data type {name!r} is not one of {list(DTYPES)}")
    nbytes = math.prod(shape) * np.dtype(name).itemsize
    if nbytes > limits.max_frame_bytes:
        raise refuse(
            f"shape {shape} of {name} is {nbytes} bytes, more than the limit of "
            f"{limits.max_frame_bytes}"
        )
    grid = metadata.get("chunk_grid")
    if grid != {"name": "regular", "configuration": {"chunk_shape": shape}}:
        raise refuse("expected one regular chunk the size of the array")
    if metadata.get("chunk_key_encoding") != {"name": "v2", "configuration": {"separator": "."}}:
        raise refuse("expected the v2 chunk key encoding with '.'")
    if metadata.get("storage_transformers", []) != []:
        raise refuse("storage transformers are not supported")
    codecs = metadata.get("codecs")
    if not isinstance(codecs, list) or not 1 <= len(codecs) <= 2:
        raise refuse("expected the bytes codec and at most zstd after it")
    first = codecs[0]
    if not isinstance(first, dict) or first.get("name") != "bytes":
        raise refuse("the first codec must be 'bytes'")
    endian = (first.get("configuration") or {}).get("endian", "little")
    if endian not in ("little", "big"):
        raise refuse(f"endian {endian!r}")
    compressed = len(codecs) == 2
    if compressed and (not isinstance(codecs[1], dict) or codecs[1].get("name") != "zstd"):
        raise refuse(f"unsupported codec {codecs[1]!r:.100}")
    dtype = np.dtype(name).newbyteorder("<" if endian == "little" else ">")
    fill = metadata.get("fill_value", 0)
    if isinstance(fill, str) and fill in ("NaN", "Infinity", "-Infinity"):
        fill = float(fill.replace("Infinity", "inf"))
    if not isinstance(fill, bool | int | float):
        raise refuse(f"fill value {fill!r:.100}")
    try:
        np.array(fill, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise refuse(f"fill value {fill!r:.100} does not fit {name}") from exc
    return tuple(shape), dtype, compressed, fill


def _zstd_content_size(raw: bytes, path: Path) -> int | None:
    """The content size a zstd frame's header declares (RFC 8878 3.1.1.1), None if absent."""
    if len(raw) < 6 or raw[:4] != _ZSTD_MAGIC:
        raise SessionFormatError(f"{path}: not a zstd frame")
    descriptor = raw[4]
    if descriptor & 0x08:
        raise SessionFormatError(f"{path}: zstd frame header with the reserved bit set")
    single = (descriptor >> 5) & 1
    start = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
    size = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
    if size == 0:
        return None
    if len(raw) < start + size:
        raise SessionFormatError(f"{path}: truncated zstd frame header")
    value = int.from_bytes(raw[start : start + size], "little")
    return value + 256 if size == 2 else value


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
