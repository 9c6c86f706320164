"""replay://: a recorded session as a Microscope; policy re-runs, reports and exports."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import emauto
from emauto.drivers.replay import ReplayMicroscope, ReplayTwin
from emauto.errors import ConfigError, OutOfLimitsError, ReplayExhaustedError, UnknownKnobError
from emauto.microscope import GroundTruth, RonchigramRequest
from emauto.sessions import Session
from emauto.sessions.export import export_hdf5, export_zspy
from emauto.sessions.report import write_report
from emauto.tasks.probe_tuning.minari import export_minari_files
from emauto.tasks.probe_tuning.rerun import rerun_policy


def test_replay_serves_the_recorded_frames_for_the_recorded_requests(
    recorded_session: Path,
) -> None:
    session = Session(recorded_session)
    scope = emauto.connect(f"replay://{recorded_session}?task=align_probe")
    assert isinstance(scope, ReplayTwin)
    assert scope.describe().backend.startswith("replay:sim")
    first_set, first_frame = session.steps[0], session.acquisitions("align_probe")[0]
    scope.set(first_set.action["set"])
    request = RonchigramRequest.model_validate(first_frame.action["acquire"])
    frame = scope.acquire(request)
    assert np.array_equal(frame.data, session.frame(first_frame).data)
    assert scope.strehl_ratio() == pytest.approx(first_frame.truth())
    assert scope.divergences == []


def test_replay_rejects_bad_setpoints_and_changes_nothing(recorded_session: Path) -> None:
    scope = emauto.connect(f"replay://{recorded_session}")
    before = scope.read()
    with pytest.raises(UnknownKnobError):
        scope.set({"C99": 0.0})
    with pytest.raises(OutOfLimitsError):
        scope.set({"C10": 1.0})
    assert scope.read() == before and scope.divergences == []
    with pytest.raises(ReplayExhaustedError, match="no recorded frame"):
        scope.acquire(RonchigramRequest(exposure_s=0.123))


@pytest.mark.parametrize(
    "uri", ["replay://", "replay://{s}?task=nope", "replay://{s}?speed=2", "replay:///nowhere"]
)
def test_bad_replay_uris_are_clear_errors(recorded_session: Path, uri: str) -> None:
    with pytest.raises(emauto.errors.EmautoError):
        emauto.connect(uri.format(s=recorded_session))
    with pytest.raises((ConfigError, emauto.errors.SessionError)):
        emauto.connect(uri.format(s=recorded_session))


def test_rerunning_the_recorded_policy_reproduces_the_session(recorded_session: Path) -> None:
    report = rerun_policy(recorded_session)["align_probe"]
    assert report["identical"] and report["divergences"] == 0
    assert report["frames_served"] == len(Session(recorded_session).acquisitions("align_probe"))


def test_a_different_policy_is_reported_where_it_diverges(recorded_session: Path) -> None:
    report = rerun_policy(recorded_session, policy="random")["align_probe"]
    assert not report["identical"] and report["divergences"] >= 1
    first = report["first_divergences"][0]
    assert first["kind"] == "set" and first["recorded"] != first["replayed"]


def test_report_writes_a_png_and_an_html_page(recorded_session: Path, tmp_path: Path) -> None:
    png, page = write_report(Session(recorded_session), tmp_path)
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 20_000
    text = page.read_text()
    assert "data:image/png;base64," in text and "align_probe" in text


@pytest.mark.parametrize("fmt", ["hdf5", "zspy"])
def test_hyperspy_exports_read_back(recorded_session: Path, tmp_path: Path, fmt: str) -> None:
    from rsciio.hspy import file_reader as read_hspy
    from rsciio.zspy import file_reader as read_zspy

    session = Session(recorded_session)
    paths = {"hdf5": export_hdf5, "zspy": export_zspy}[fmt](session, tmp_path)
    reader = read_hspy if fmt == "hdf5" else read_zspy
    ronchigrams = next(p for p in paths if p.name.startswith("ronchigram"))
    signal = reader(str(ronchigrams))[0]
    steps = [s for s in session.acquisitions() if s.action["acquire"]["kind"] == "ronchigram"]
    assert signal["data"].shape[0] == len(steps)
    assert np.array_equal(signal["data"][-1], session.frame(steps[-1]).data)
    assert signal["axes"][1]["units"] == "mrad"  # HyperSpy's units: mrad, nm
    calibration = session.frame(steps[-1]).calibrations[0]
    assert signal["axes"][1]["scale"] == pytest.approx(calibration.scale * 1e3)


def test_minari_export_replays_the_episode(recorded_session: Path, tmp_path: Path) -> None:
    import minari

    (path,) = export_minari_files(Session(recorded_session), tmp_path)
    assert path == tmp_path / "emauto" / "probe-tuning-v0" and path.is_dir()
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path)
    try:
        dataset = minari.load_dataset("emauto/probe-tuning-v0")
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    episode = next(dataset.iterate_episodes())
    recorded = Session(recorded_session).episode
    assert len(episode.actions) == len(recorded)
    assert np.allclose(episode.rewards, [s.reward for s in recorded], rtol=1e-6)
    assert episode.observations["ronchigram"].shape[1:] == (2, 64, 64)


def test_replay_of_a_session_without_truth_has_no_truth(tmp_path: Path) -> None:
    from emauto.bench.driver import StaticMicroscope
    from emauto.wrappers.recording import RecordingMicroscope

    scope = RecordingMicroscope.open(StaticMicroscope((16, 16)), tmp_path / "s")
    scope.acquire(RonchigramRequest(exposure_s=1e-3))
    scope.close()
    replay = emauto.connect(f"replay://{tmp_path / 's'}")
    assert type(replay) is ReplayMicroscope and not isinstance(replay, GroundTruth)


def test_minari_export_of_a_relative_session_path_writes_one_complete_folder(
    recorded_session: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json
    import shutil

    from emauto.cli import main

    shutil.copytree(recorded_session, tmp_path / "s")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "s", "--format", "minari"]) == 0
    (written,) = json.loads(capsys.readouterr().out)["written"]
    dataset = tmp_path / "s" / "export-minari" / "emauto" / "probe-tuning-v0"
    assert Path(written).resolve() == dataset
    assert (Path(written) / "data" / "metadata.json").is_file()
    assert not (tmp_path / "s" / "s").exists()  # the path was not doubled
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.name.startswith(".")) == []


def test_a_pause_and_resume_in_the_recording_is_not_a_divergence(tmp_path: Path) -> None:
    """The daemon's pause records a ``safe`` and, on resume, ``set beam_blank 0``: the
    operator's, not the policy's, so a replay of the same commands does not diverge."""
    from emauto.bench.driver import StaticMicroscope
    from emauto.wrappers.checkpointed import CheckpointedMicroscope
    from emauto.wrappers.recording import RecordingMicroscope

    pauses = [False, False, True]  # paused before the second set

    recording = RecordingMicroscope.open(StaticMicroscope((16, 16)), tmp_path / "s")
    scope = CheckpointedMicroscope(recording, lambda: None, lambda: bool(pauses and pauses.pop(0)))
    request = RonchigramRequest(exposure_s=1e-3)
    commands = [{"C10": 1e-9}, {"C10": 2e-9}, {"C12a": 1e-9}]
    for setpoints in commands:
        scope.set(setpoints)
        scope.acquire(request)
    recording.close()
    kinds = [s.kind for s in Session(tmp_path / "s").steps]
    assert kinds[:6] == ["set", "acquire", "safe", "set", "set", "acquire"]  # paused, resumed
    replay = emauto.connect(f"replay://{tmp_path / 's'}")
    for setpoints in commands:
        replay.set(setpoints)
        replay.acquire(request)
    assert replay.divergences == [] and replay.served == 3
    replay.set({"C10": 3e-9})  # a command the recording has not got is still one
    assert [d.recorded for d in replay.divergences] == [None]
