"""`emauto report SESSION`: one PNG and one self-contained HTML page of a session.

The picture shows what a microscopist checks first: the first and last Ronchigram of each
alignment task and the last image (each with a scale bar, mrad or nm / pm, and a colour bar),
the corrector trajectories (the knobs that moved), the objective (the twin's ground-truth
Strehl ratio at each frame, where the session has it; one curve an episode) and the
cumulative dose over all episodes. Episodes (`episodes`: a task, or a twin restart within
one) are separated by labelled vertical lines.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emauto.io.pictures import add_colour_bar, add_scale_bar, frame_pixel_size
from emauto.microscope import Frame
from emauto.optics import ABERRATION_NAMES
from emauto.sessions.files import write_atomic
from emauto.sessions.reader import Session, Step


def _moved_knobs(session: Session) -> list[str]:
    """Aberration knobs whose value changed during the session."""
    moved = []
    for name in ABERRATION_NAMES:
        values = [s.knob(name) for s in session.steps if not np.isnan(s.knob(name))]
        if values and max(values) - min(values) > 0:
            moved.append(name)
    return moved


def _panels(session: Session) -> list[tuple[str, Step]]:
    panels: list[tuple[str, Step]] = []
    for task in session.tasks():
        frames = session.acquisitions(task)
        ronchigrams = [s for s in frames if s.action["acquire"]["kind"] == "ronchigram"]
        images = [s for s in frames if s.action["acquire"]["kind"] == "image"]
        if ronchigrams:
            panels.append((f"{task}: first Ronchigram", ronchigrams[0]))
            if len(ronchigrams) > 1:
                panels.append((f"{task}: last Ronchigram", ronchigrams[-1]))
        if images:
            panels.append((f"{task}: image", images[-1]))
    return panels[:4]


@dataclass(frozen=True)
class Episode:
    """A run of consecutive steps of one task on one twin episode: steps ``first`` to
    ``last`` (sequence numbers, both included), named after the task (``#k`` when a task
    holds several)."""

    name: str
    first: int
    last: int


def episodes(session: Session) -> list[Episode]:
    """The session's episodes: a new one starts where the task changes or the recorded dose
    counter drops (the twin restarted: a new episode of the same task)."""
    bounds: list[tuple[str, int, int]] = []
    previous_dose = float("-inf")
    for step in session.steps:
        recorded = step.data.get("dose_e")  # null: not known, never a restart
        dose = float(recorded) if recorded is not None else previous_dose
        restarted = bool(bounds) and dose < previous_dose
        if not bounds or step.task != bounds[-1][0] or restarted:
            bounds.append((step.task, step.seq, step.seq))
        else:
            bounds[-1] = (bounds[-1][0], bounds[-1][1], step.seq)
        previous_dose = dose
    counts: dict[str, int] = {}
    for task, _, _ in bounds:
        counts[task] = counts.get(task, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for task, first, last in bounds:
        seen[task] = seen.get(task, 0) + 1
        name = task if counts[task] == 1 else f"{task} #{seen[task]}"
        out.append(Episode(name, first, last))
    return out


def cumulative_dose(session: Session) -> np.ndarray:
    """The electrons delivered up to and including each step (one value a step): the sum of
    the doses of the frames taken so far. Read from the frames, not from the backend's dose
    counter, which a twin resets at each new episode."""
    dose = np.zeros(len(session.steps))
    for step in session.acquisitions():
        dose[step.seq] = float(session.frame(step).dose_e)
    return np.cumsum(dose)


def strehl_points(session: Session, episode: Episode) -> tuple[np.ndarray, np.ndarray]:
    """The twin's Strehl ratio of the probe at each acquisition of ``episode``: (steps,
    values). Acquisitions only: a ``set`` step records the truth read as the command returns,
    before the lenses settle (the detune step would show the aligned state before it)."""
    points = [
        (s.seq, s.truth())
        for s in session.steps[episode.first : episode.last + 1]
        if s.kind == "acquire" and not np.isnan(s.truth())
    ]
    if not points:
        return np.zeros(0, dtype=int), np.zeros(0)
    seq, values = zip(*points, strict=True)
    return np.asarray(seq), np.asarray(values)


def summary(session: Session) -> dict[str, Any]:
    """The session's figures: exit status, steps, frames, dose (all episodes), Strehl at
    start and end, and per episode."""
    acquisitions = session.acquisitions()
    strehl = [s.truth() for s in acquisitions if not np.isnan(s.truth())]
    dose = cumulative_dose(session)
    per_episode = []
    for episode in episodes(session):
        _, values = strehl_points(session, episode)
        before = dose[episode.first - 1] if episode.first > 0 else 0.0
        per_episode.append(
            {
                "name": episode.name,
                "first_step": episode.first,
                "last_step": episode.last,
                "dose_e": float(dose[episode.last] - before),
                "strehl_first": float(values[0]) if values.size else None,
                "strehl_last": float(values[-1]) if values.size else None,
            }
        )
    return {
        "session": str(session.path),
        "backend": session.start.get("backend"),
        "uri": session.start.get("uri"),
        "exit_status": session.exit_status,
        "reason": (session.stop or {}).get("reason", ""),
        "steps": len(session.steps),
        "acquisitions": len(acquisitions),
        "rejected": sum(s.kind == "rejected" for s in session.steps),
        "dose_e": float(dose[-1]) if dose.size else 0.0,
        "strehl_first": strehl[0] if strehl else None,
        "strehl_last": strehl[-1] if strehl else None,
        "tasks": session.tasks(),
        "policies": session.start.get("policies", []),
        "episodes": per_episode,
    }


def _separate_episodes(ax: Any, parts: list[Episode], label: bool) -> None:
    """Vertical lines between episodes, each episode's name at its start (``label``)."""
    for index, episode in enumerate(parts):
        if index:
            ax.axvline(episode.first - 0.5, color="0.35", lw=0.8, ls=":")
        if label and len(parts) > 1:
            ax.text(episode.first, 1.0, f" {episode.name}", transform=ax.get_xaxis_transform(),
                    fontsize=7, va="top", ha="left", color="0.25", clip_on=True)  # fmt: skip


def _image_panel(fig: Any, ax: Any, frame: Frame) -> None:
    """A frame as an image with its scale bar and a colour bar (counts), or a line plot."""
    data = np.asarray(frame.data, dtype=np.float64)
    if data.ndim == 2 and data.size:
        low, high = np.percentile(data, (1, 99.5))
        image = ax.imshow(data, cmap="gray", vmin=low, vmax=high)
        pixel, units = frame_pixel_size(frame)
        add_scale_bar(ax, pixel, units)
        add_colour_bar(fig, image, ax, "counts")
    elif data.ndim == 1:
        ax.plot(data, lw=0.6)
        ax.set_xlabel("position", fontsize=7)
        ax.set_ylabel("counts", fontsize=7)
        return
    else:
        ax.text(0.5, 0.5, f"shape {data.shape}", ha="center", va="center")
    ax.set_xticks([])
    ax.set_yticks([])


def report_figure(session: Session) -> Any:
    """The session's matplotlib figure: up to four frames (scale bar, colour bar), the
    corrector trajectories, the objective (Strehl ratio at each frame, one curve an episode)
    and the cumulative dose, episodes separated by labelled vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(session)
    parts = episodes(session)
    fig = plt.figure(figsize=(13, 7.5), dpi=100)
    grid = fig.add_gridspec(2, 4, height_ratios=(1, 1))
    for column, (title, step) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        _image_panel(fig, ax, session.frame(step))
        label = title if np.isnan(step.truth()) else f"{title}\nStrehl {step.truth():.2f}"
        ax.set_title(label, fontsize=8)
    seq = np.array([s.seq for s in session.steps])
    ax = fig.add_subplot(grid[1, 0:2])
    for name in _moved_knobs(session):
        ax.plot(seq, [s.knob(name) * 1e9 for s in session.steps], lw=1, label=name)
    _separate_episodes(ax, parts, label=True)
    ax.set_xlabel("step")
    ax.set_ylabel("setpoint (nm)")
    ax.set_title("corrector trajectories", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=4, loc="lower left")
    ax = fig.add_subplot(grid[1, 2])
    drawn = False
    for index, episode in enumerate(parts):
        steps, values = strehl_points(session, episode)
        if values.size:
            ax.plot(steps, values, lw=1, marker=".", ms=3, color=f"C{index % 10}",
                    label=episode.name)  # fmt: skip
            drawn = True
    if drawn:
        ax.axhline(0.8, color="grey", ls="--", lw=0.8, label="success (0.8)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=6)
    _separate_episodes(ax, parts, label=False)
    ax.set_xlabel("step")
    ax.set_ylabel("Strehl ratio at each frame (twin truth)")
    ax.set_title("objective", fontsize=9)
    ax = fig.add_subplot(grid[1, 3])
    ax.plot(seq, cumulative_dose(session), lw=1, color="C3")
    _separate_episodes(ax, parts, label=False)
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative dose (e⁻)")
    ax.set_title("dose (all episodes)", fontsize=9)
    figures = summary(session)
    fig.suptitle(
        f"{session.path.name}: {figures['exit_status']}, {figures['acquisitions']} frames, "
        f"{len(parts)} episode{'s' if len(parts) != 1 else ''}, backend {figures['backend']}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def render_png(session: Session) -> bytes:
    """The session's picture (`report_figure`) as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = report_figure(session)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_png(session: Session, path: Path) -> Path:
    """Write the session's picture to ``path`` atomically (never through a symlink)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, render_png(session))


def render_html(session: Session, png: bytes) -> str:
    """The self-contained HTML page of a session (``png`` embedded); every value that comes
    from the session is escaped."""

    def text(value: Any) -> str:
        return html.escape(str(value), quote=True)

    figures = summary(session)
    rows = "\n".join(
        f"<tr><th>{text(k)}</th><td>{text(json.dumps(v))}</td></tr>" for k, v in figures.items()
    )
    steps = "\n".join(
        f"<tr><td>{s.seq}</td><td>{text(s.task)}</td><td>{text(s.kind)}</td>"
        f"<td><code>{text(json.dumps(s.action)[:160])}</code></td>"
        f"<td>{text(s.error)}</td></tr>"
        for s in session.steps
    )
    image = base64.b64encode(png).decode()
    name = text(session.path.name)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>emauto session {name}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}}</style></head>
<body><h1>emauto session {name}</h1>
<img src="data:image/png;base64,{image}" alt="session summary" style="max-width:100%">
<h2>Summary</h2><table>{rows}</table>
<h2>Steps</h2><table><tr><th>#</th><th>task</th><th>kind</th><th>action</th><th>error</th></tr>
{steps}</table></body></html>
"""


def write_report(session: Session, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.png`` and ``report.html`` (the PNG embedded) into ``out`` (default: the
    session folder), each atomically: a temporary file renamed over the name, so a symlink
    at either name is replaced, never written through."""
    folder = Path(out) if out is not None else session.path
    folder.mkdir(parents=True, exist_ok=True)
    png = render_png(session)
    png_path = write_atomic(folder / "report.png", png)
    page_path = write_atomic(folder / "report.html", render_html(session, png).encode())
    return png_path, page_path
