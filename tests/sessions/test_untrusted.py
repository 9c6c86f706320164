"""A session folder is untrusted input: reading it touches nothing outside it, changes nothing
in it, allocates only what its declared shapes allow, and fails only with typed errors."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from numcodecs import zstd

from emauto.errors import SessionCorruptError, SessionFormatError
from emauto.sessions import Session
from emauto.sessions.files import ReaderLimits, write_atomic
from emauto.sessions.report import render_html, write_report
from emauto.sessions.store import DOCUMENTS, FRAMES


@pytest.fixture
def session(tmp_path: Path) -> Path:
    """A closed session of the static microscope: 3 sets and 3 acquisitions of 16x16."""
    from emauto.bench.driver import StaticMicroscope
    from emauto.microscope import RonchigramRequest
    from emauto.wrappers.recording import RecordingMicroscope

    path = tmp_path / "s"
    scope = RecordingMicroscope.open(StaticMicroscope((16, 16)), path)
    for i in range(3):
        scope.set({"C10": 1e-9 * (i + 1)})
        scope.acquire(RonchigramRequest(exposure_s=1e-3))
    scope.close()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the session that nothing may change."""
    target = tmp_path / "precious.txt"
    target.write_bytes(b"keep me\n")
    return target


def lines(path: Path) -> list[bytes]:
    return (path / DOCUMENTS).read_bytes().splitlines(keepends=True)


def rewrite_event(path: Path, index: int, edit) -> None:  # type: ignore[no-untyped-def]
    """Change the ``index``-th primary event's data with ``edit(data)``."""
    raw = lines(path)
    events = [i for i, line in enumerate(raw) if line.startswith(b'["event"')]
    name, doc = json.loads(raw[events[index]])
    edit(doc["data"])
    raw[events[index]] = json.dumps([name, doc]).encode() + b"\n"
    (path / DOCUMENTS).write_bytes(b"".join(raw))


def first_frame(path: Path) -> Path:
    return path / FRAMES / Session(path).acquisitions()[0].frame_key


# --------------------------------------------------------------------------- 3: symlinks


def test_a_symlinked_document_log_is_refused_and_its_target_untouched(
    session: Path, outside: Path
) -> None:
    outside.write_bytes((session / DOCUMENTS).read_bytes() + b'["event",{"torn')
    before = outside.read_bytes()
    (session / DOCUMENTS).unlink()
    (session / DOCUMENTS).symlink_to(outside)
    for repair in (False, True):
        with pytest.raises(SessionFormatError, match="symlink"):
            Session(session, repair=repair)
    assert outside.read_bytes() == before  # the torn tail of the target was not cut


@pytest.mark.parametrize("link", ["frames", "frame_folder", "chunk", "zarr_json"])
def test_a_symlink_anywhere_in_the_frames_is_refused(
    session: Path, tmp_path: Path, link: str
) -> None:
    import shutil

    frame = first_frame(session)
    copy = tmp_path / "elsewhere"
    if link == "frames":
        shutil.move(session / FRAMES, copy)
        (session / FRAMES).symlink_to(copy)
    elif link == "frame_folder":
        shutil.move(frame, copy)
        frame.symlink_to(copy)
    else:
        name = "0.0" if link == "chunk" else "zarr.json"
        shutil.move(frame / name, copy)
        (frame / name).symlink_to(copy)
    with pytest.raises(SessionFormatError, match=r"symlink|a link"):
        opened = Session(session)
        opened.frame(opened.acquisitions()[0])


@pytest.mark.parametrize("key", ["../../etc", "/etc/passwd", "..", "000001/../000001", "a"])
def test_a_frame_key_leaving_the_session_is_refused(session: Path, key: str) -> None:
    rewrite_event(session, 1, lambda data: data.update(frame=key))
    with pytest.raises(SessionFormatError, match="step number"):
        Session(session)


def test_report_replaces_symlinks_never_writes_through_them(session: Path, tmp_path: Path) -> None:
    targets = {}
    for name in ("report.png", "report.html"):
        targets[name] = tmp_path / f"target-{name}"
        targets[name].write_bytes(b"outside")
        (session / name).symlink_to(targets[name])
    png, page = write_report(Session(session))
    for name, path in (("report.png", png), ("report.html", page)):
        assert not path.is_symlink() and path.stat().st_size > 1000
        assert targets[name].read_bytes() == b"outside"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert not [p for p in session.iterdir() if p.name.endswith(".tmp")]


def test_write_atomic_replaces_a_symlink_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old")
    (tmp_path / "out.txt").symlink_to(target)
    write_atomic(tmp_path / "out.txt", b"new")
    assert (tmp_path / "out.txt").read_bytes() == b"new" and target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "target"]


def test_reading_a_session_changes_nothing_in_it(session: Path) -> None:
    (session / DOCUMENTS).write_bytes((session / DOCUMENTS).read_bytes() + b'["ev')
    before = {p: p.read_bytes() for p in session.rglob("*") if p.is_file()}
    opened = Session(session)
    for step in opened.acquisitions():
        opened.frame(step)
    assert {p: p.read_bytes() for p in session.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------- 4: bounded


def write_frame_metadata(frame: Path, **changes: object) -> None:
    metadata = json.loads((frame / "zarr.json").read_text())
    metadata.update(changes)
    (frame / "zarr.json").write_text(json.dumps(metadata))


def peak_bytes(action) -> int:  # type: ignore[no-untyped-def]
    """Peak Python/numpy allocation while ``action()`` runs (it must raise a typed error)."""
    tracemalloc.start()
    try:
        with pytest.raises(SessionCorruptError) as info:
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert isinstance(info.value, SessionCorruptError)


def test_a_huge_declared_shape_is_refused_before_allocating(session: Path) -> None:
    frame = first_frame(session)
    shape = [60_000, 60_000]  # 14.4 GB of float32 behind a 2 kB chunk
    grid = {"name": "regular", "configuration": {"chunk_shape": shape}}
    write_frame_metadata(frame, shape=shape, chunk_grid=grid)
    opened = Session(session)
    peak = peak_bytes(lambda: opened.frame(opened.acquisitions()[0]))
    assert peak < 5_000_000


def test_a_zstd_bomb_is_refused_before_decompressing(session: Path) -> None:
    frame = first_frame(session)
    (frame / "0.0").write_bytes(zstd.compress(bytes(200_000_000)))  # 6 kB on disk
    opened = Session(session)
    with pytest.raises(SessionFormatError, match="more than the limit of 5128"):
        opened.frame(opened.acquisitions()[0])  # 6 kB cannot be 16x16 float32, even packed
    shape = [512, 512]  # 1 MB: 6 kB would be a plausible chunk, but its header says 200 MB
    grid = {"name": "regular", "configuration": {"chunk_shape": shape}}
    write_frame_metadata(frame, shape=shape, chunk_grid=grid)
    peak = peak_bytes(lambda: opened.frame(opened.acquisitions()[0]))
    assert peak < 5_000_000
    with pytest.raises(SessionFormatError, match="zstd content of 200000000 bytes"):
        opened.frame(opened.acquisitions()[0])
    # declared to match: the shape itself is over the limit
    shape = [10_000, 5_000]
    grid = {"name": "regular", "configuration": {"chunk_shape": shape}}
    write_frame_metadata(frame, shape=shape, chunk_grid=grid)
    small = Session(session, limits=ReaderLimits(max_frame_bytes=64 << 20))
    peak = peak_bytes(lambda: small.frame(small.acquisitions()[0]))
    assert peak < 5_000_000


def test_a_chunk_that_lies_about_its_length_is_refused(session: Path) -> None:
    frame = first_frame(session)
    data = np.zeros((16, 16), np.float32).tobytes()
    (frame / "0.0").write_bytes(zstd.compress(data)[:-3])  # truncated
    opened = Session(session)
    with pytest.raises(SessionFormatError, match="zstd"):
        opened.frame(opened.acquisitions()[0])
    (frame / "0.0").write_bytes(zstd.compress(data[:-4]))  # one value short
    with pytest.raises(SessionFormatError, match="expected 1024"):
        opened.frame(opened.acquisitions()[0])


def test_a_long_line_is_refused_without_reading_it_whole(session: Path) -> None:
    raw = lines(session)
    raw.insert(2, b'["event",{"x":"' + b"a" * 3_000_000 + b'"}]\n')
    (session / DOCUMENTS).write_bytes(b"".join(raw))
    limits = ReaderLimits(max_line_bytes=64 << 10)
    peak = peak_bytes(lambda: Session(session, limits=limits))
    assert peak < 1_000_000
    with pytest.raises(SessionFormatError, match="line 3 is longer than"):
        Session(session, limits=limits)


def test_document_count_and_file_size_are_bounded(session: Path) -> None:
    with pytest.raises(SessionFormatError, match="more than 5 documents"):
        Session(session, limits=ReaderLimits(max_documents=5))
    with pytest.raises(SessionFormatError, match="limit of 1000"):
        Session(session, limits=ReaderLimits(max_documents_bytes=1000))


# --------------------------------------------------------------------------- 8: typed errors


def test_deeply_nested_json_is_a_typed_error(session: Path) -> None:
    raw = lines(session)
    raw.insert(2, b"[" * 200_000 + b"]" * 200_000 + b"\n")
    (session / DOCUMENTS).write_bytes(b"".join(raw))
    with pytest.raises(SessionCorruptError, match="line 3"):
        Session(session)
    rewrite = lines(session)
    del rewrite[2]
    (session / DOCUMENTS).write_bytes(b"".join(rewrite))
    rewrite_event(session, 0, lambda data: data.update(action="[" * 100_000 + "]" * 100_000))
    with pytest.raises(SessionFormatError):
        Session(session)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("kind"),
        lambda d: d.pop("dose_e"),
        lambda d: d.update(kind="<script>alert(1)</script>"),
        lambda d: d.update(action='{"acquire": 3}'),
        lambda d: d.update(action="[1, 2]"),
        lambda d: d.update(state_C10="big"),
        lambda d: d.update(beam_blanked="yes"),
        lambda d: d.update(frame=7),
        lambda d: d.update(frame=""),
        lambda d: d.update(task=["a"]),
    ],
)
def test_malformed_events_are_typed_errors(session: Path, edit) -> None:  # type: ignore[no-untyped-def]
    rewrite_event(session, 1, edit)  # the first acquisition
    with pytest.raises(SessionFormatError, match="line"):
        Session(session)


@pytest.mark.parametrize(
    "document",
    [
        '["event",{"descriptor":"nope","data":{}}]',
        '["event",{"data":{}}]',
        '["descriptor",{"uid":1,"name":"primary"}]',
        '["descriptor",{"uid":"u","name":"secret"}]',
        '["stop",{"exit_status":"maybe"}]',
        '["resource",{}]',
    ],
)
def test_malformed_documents_are_typed_errors(session: Path, document: str) -> None:
    raw = lines(session)
    raw.insert(2, document.encode() + b"\n")
    (session / DOCUMENTS).write_bytes(b"".join(raw))
    with pytest.raises(SessionFormatError, match="line 3"):
        Session(session)


def test_a_bad_start_document_is_a_typed_error(session: Path) -> None:
    raw = lines(session)
    name, start = json.loads(raw[0])
    start["description"]["knobs"] = "none"
    raw[0] = json.dumps([name, start]).encode() + b"\n"
    (session / DOCUMENTS).write_bytes(b"".join(raw))
    with pytest.raises(SessionFormatError, match="line 1"):
        Session(session)


def test_bad_frame_metadata_is_a_typed_error(session: Path) -> None:
    frame = first_frame(session)
    for changes in (
        {"data_type": "object"},
        {"attributes": {"kind": "<script>"}},
        {"codecs": [{"name": "bytes"}, {"name": "gzip"}]},
        {"shape": [-1, 16]},
    ):
        original = (frame / "zarr.json").read_bytes()
        write_frame_metadata(frame, **changes)
        opened = Session(session)
        with pytest.raises(SessionFormatError):
            opened.frame(opened.acquisitions()[0])
        (frame / "zarr.json").write_bytes(original)


def test_the_html_report_escapes_everything_from_the_session(session: Path) -> None:
    rewrite_event(session, 0, lambda d: d.update(task="<script>alert(1)</script>"))
    rewrite_event(session, 1, lambda d: d.update(error='<img src=x onerror="alert(2)">'))
    page = render_html(Session(session), b"")
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_reader_matches_zarr_for_every_dtype_it_accepts(tmp_path: Path) -> None:
    import zarr

    from emauto.sessions.files import SessionFolder
    from emauto.sessions.store import DTYPES, FrameReader, _encode_array

    (tmp_path / FRAMES).mkdir()
    (tmp_path / FRAMES / "zarr.json").write_text('{"zarr_format":3,"node_type":"group"}')
    reader = FrameReader(SessionFolder(tmp_path))
    rng = np.random.default_rng(0)
    for index, name in enumerate(DTYPES):
        values = (rng.random((5, 7)) * 100).astype(name)
        if index % 3 == 0:
            values[...] = 0  # all fill: Zarr writes no chunk
        folder = tmp_path / FRAMES / f"a{index}"
        folder.mkdir()
        for file, data in _encode_array(values, {}).items():
            (folder / file).write_bytes(data)
        mine = reader._array(f"a{index}")[1]
        theirs = zarr.open_array(str(folder), mode="r")[...]
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), name


# --------------------------------------------------------------------------- export


def test_an_export_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    from emauto.errors import SessionError
    from emauto.sessions.export import export_into

    def half(folder: Path) -> list[Path]:
        (folder / "part.hspy").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_into(tmp_path / "out", half)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half-written folder
    written = export_into(tmp_path / "out", lambda f: [f / "a"] if (f / "a").touch() else [])
    assert written == [] and (tmp_path / "out").is_dir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for existing in ("out", "link"):
        with pytest.raises(SessionError, match="exists"):
            export_into(tmp_path / existing, lambda f: [])


def test_a_detector_name_cannot_choose_the_export_path(session: Path, tmp_path: Path) -> None:
    from emauto.sessions.export import export_hdf5

    frame = first_frame(session)
    metadata = json.loads((frame / "zarr.json").read_text())
    metadata["attributes"]["detector"] = "../../../escaped"
    (frame / "zarr.json").write_text(json.dumps(metadata))
    out = tmp_path / "deep" / "er" / "out"
    paths = export_hdf5(Session(session), out)
    assert all(p.parent == out for p in paths)
    assert [p.parent for p in tmp_path.rglob("*escaped*")] == [out]


def test_emauto_report_reads_only_unless_asked_to_repair(
    session: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emauto.cli import main

    intact = (session / DOCUMENTS).read_bytes()
    (session / DOCUMENTS).write_bytes(intact + b'["event",{"to')
    assert main(["report", str(session)]) == 0
    assert (session / DOCUMENTS).read_bytes() == intact + b'["event",{"to'
    assert main(["report", str(session), "--repair"]) == 0
    assert (session / DOCUMENTS).read_bytes() == intact
    assert capsys.readouterr().out.count('"exit_status": "success"') == 2


def test_the_file_system_never_truncates_through_a_symlink(tmp_path: Path) -> None:
    from emauto.sessions.durable import OsFileSystem

    (tmp_path / "target").write_bytes(b"0123456789")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(OSError):
        OsFileSystem().truncate(tmp_path / "link", 2)
    assert (tmp_path / "target").read_bytes() == b"0123456789"
