"""`emauto report` on sessions recorded with the twin: image panels with scale bars (mrad,
nm / pm) and colour bars; the Strehl curve starts at the detuned state; episodes are
separated and labelled; the cumulative dose runs on over all episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emauto.agent.daemon import Daemon
from emauto.agent.plans import AlignProbeTask, DaemonConfig, SurveyTask
from emauto.io.pictures import drawn_scale_bars
from emauto.sessions.reader import Session
from emauto.sessions.report import (
    _panels,
    cumulative_dose,
    episodes,
    report_figure,
    summary,
    write_report,
)


@pytest.fixture(scope="module")
def two_episodes(tmp_path_factory: pytest.TempPathFactory, tiny_sim_uri: str) -> Session:
    """Two detuned alignments (5 frames each) and a small image, one session."""
    tasks = [
        AlignProbeTask.model_validate(
            {"name": f"align_{i}", "detune": True, "seed": 5 + i, "max_acquisitions": 5}
        )
        for i in range(2)
    ]
    config = DaemonConfig(
        microscope=tiny_sim_uri,
        plan=(*tasks, SurveyTask(shape=(32, 32), fov_m=2e-9)),
        heartbeat_s=None,
    )
    path = tmp_path_factory.mktemp("two-episodes") / "session"
    return Session(Daemon(config, session=path, progress=False).run().session)


def axes_titled(fig: Any, title: str) -> Any:
    (ax,) = [ax for ax in fig.axes if ax.get_title() == title]
    return ax


def close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_every_panel_has_a_scale_bar_of_its_frame(recorded_session: Path) -> None:
    session = Session(recorded_session)
    fig = report_figure(session)
    try:
        bars = {ax.get_title().split("\n")[0]: bar for ax, bar in drawn_scale_bars(fig)}
        panels = _panels(session)
        assert set(bars) == {title for title, _ in panels}
        kinds = set()
        for title, step in panels:
            frame = session.frame(step)
            bar = bars[title]
            kinds.add((frame.kind, bar.unit))
            assert bar.image_pixels * frame.calibrations[-1].scale == pytest.approx(
                bar.length_si, rel=1e-6
            ), title
        assert kinds == {("ronchigram", "mrad"), ("image", "pm")}
        colour_bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert colour_bars == ["counts"] * len(panels)
    finally:
        close(fig)


def test_strehl_curve_starts_at_the_detuned_state(recorded_session: Path) -> None:
    session = Session(recorded_session)
    detune = session.steps[0]
    assert detune.kind == "set" and detune.truth() > 0.99  # recorded before the lenses moved
    first = session.acquisitions()[0]
    fig = report_figure(session)
    try:
        curve = axes_titled(fig, "objective").get_lines()[0]
        assert curve.get_xdata()[0] == first.seq
        assert curve.get_ydata()[0] == pytest.approx(first.truth())
        assert curve.get_ydata()[0] < 0.5  # detuned
    finally:
        close(fig)
    assert summary(session)["strehl_first"] == pytest.approx(first.truth())


def test_episodes_are_separated_and_labelled(two_episodes: Session) -> None:
    session = two_episodes
    parts = episodes(session)
    assert [p.name for p in parts] == ["align_0", "align_1", "survey"]
    assert parts[1].first == parts[0].last + 1
    fig = report_figure(session)
    try:
        objective = axes_titled(fig, "objective")
        labels = [line.get_label() for line in objective.get_lines()]
        assert labels[:2] == ["align_0", "align_1"]  # one curve an episode
        for part, line in zip(parts[:2], objective.get_lines()[:2], strict=True):
            x = np.asarray(line.get_xdata())
            assert part.first <= x.min() and x.max() <= part.last  # never across episodes
            assert line.get_ydata()[0] < 0.5  # each starts detuned
        separators = [
            line.get_xdata()[0]
            for line in objective.get_lines()
            if line.get_linestyle() == ":" and len(set(line.get_xdata())) == 1
        ]
        assert separators == [parts[1].first - 0.5, parts[2].first - 0.5]
        trajectories = axes_titled(fig, "corrector trajectories")
        assert {"align_0", "align_1", "survey"} <= {
            t.get_text().strip() for t in trajectories.texts
        }
    finally:
        close(fig)


def test_cumulative_dose_does_not_reset(two_episodes: Session, tmp_path: Path) -> None:
    session = two_episodes
    counter = np.array([float(s.data["dose_e"]) for s in session.steps])
    assert np.any(np.diff(counter) < 0)  # the twin's own counter restarts each episode
    dose = cumulative_dose(session)
    frames = sum(session.frame(s).dose_e for s in session.acquisitions())
    assert np.all(np.diff(dose) >= 0) and dose[-1] == pytest.approx(frames)
    figures = summary(session)
    assert figures["dose_e"] == pytest.approx(frames) and frames > counter.max()
    per_episode = figures["episodes"]
    assert sum(e["dose_e"] for e in per_episode) == pytest.approx(frames)
    assert all(e["strehl_first"] < 0.5 for e in per_episode[:2])
    fig = report_figure(session)
    try:
        (line, *_) = axes_titled(fig, "dose (all episodes)").get_lines()
        assert np.all(np.diff(line.get_ydata()) >= 0)
        assert line.get_ydata()[-1] == pytest.approx(frames)
    finally:
        close(fig)
    png, page = write_report(session, tmp_path)
    assert png.stat().st_size > 0 and "align_1" in page.read_text()


def test_a_twin_restart_within_one_task_starts_an_episode(
    tiny_sim_uri: str, tmp_path: Path
) -> None:
    """Two episodes of one task (the twin restarted between them, as an env reset does):
    two labelled episodes, and the dose counts both."""
    import emauto
    from emauto.microscope import RonchigramRequest
    from emauto.wrappers.recording import RecordingMicroscope

    twin = emauto.connect(tiny_sim_uri)
    scope = RecordingMicroscope.open(twin, tmp_path / "session")
    scope.recorder.task = "align"
    request = RonchigramRequest(exposure_s=0.01)
    with scope:
        for seed in (1, 2):
            twin.restart(seed)
            scope.acquire(request)
            scope.acquire(request)
    session = Session(tmp_path / "session")
    parts = episodes(session)
    assert [p.name for p in parts] == ["align #1", "align #2"]
    assert (parts[0].first, parts[1].first) == (0, 2)
    frames = sum(session.frame(s).dose_e for s in session.acquisitions())
    assert summary(session)["dose_e"] == pytest.approx(frames)
