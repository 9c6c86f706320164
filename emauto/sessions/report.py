"""`emauto report SESSION`: one PNG and one self-contained HTML page of a session.

The picture shows what a microscopist checks first: the first and last Ronchigram of each
alignment task and the last image, the corrector trajectories (the knobs that moved), the
objective (the twin's ground-truth Strehl ratio where the session has it) and the dose.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

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


def summary(session: Session) -> dict[str, Any]:
    """The session's figures: exit status, steps, frames, dose, Strehl at start and end."""
    acquisitions = session.acquisitions()
    strehl = [s.truth() for s in acquisitions if not np.isnan(s.truth())]
    last = session.steps[-1] if session.steps else None
    return {
        "session": str(session.path),
        "backend": session.start.get("backend"),
        "uri": session.start.get("uri"),
        "exit_status": session.exit_status,
        "reason": (session.stop or {}).get("reason", ""),
        "steps": len(session.steps),
        "acquisitions": len(acquisitions),
        "rejected": sum(s.kind == "rejected" for s in session.steps),
        "dose_e": float(last.data["dose_e"]) if last else 0.0,
        "strehl_first": strehl[0] if strehl else None,
        "strehl_last": strehl[-1] if strehl else None,
        "tasks": session.tasks(),
        "policies": session.start.get("policies", []),
    }


def render_png(session: Session) -> bytes:
    """The session's picture (frames, knob trajectories, objective, dose) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(session)
    fig = plt.figure(figsize=(12, 7.5), dpi=100)
    grid = fig.add_gridspec(2, 4, height_ratios=(1, 1))
    for column, (title, step) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        data = np.asarray(session.frame(step).data, dtype=np.float64)
        if data.ndim == 2 and data.size:
            low, high = np.percentile(data, (1, 99.5))
            ax.imshow(data, cmap="gray", vmin=low, vmax=high)
        elif data.ndim == 1:
            ax.plot(data, lw=0.6)
        else:
            ax.text(0.5, 0.5, f"shape {data.shape}", ha="center", va="center")
        label = title if np.isnan(step.truth()) else f"{title}\nStrehl {step.truth():.2f}"
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    seq = np.array([s.seq for s in session.steps])
    ax = fig.add_subplot(grid[1, 0:2])
    for name in _moved_knobs(session):
        ax.plot(seq, [s.knob(name) * 1e9 for s in session.steps], lw=1, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("setpoint (nm)")
    ax.set_title("corrector trajectories", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=4)
    ax = fig.add_subplot(grid[1, 2])
    truth = [s.truth() for s in session.steps]
    if not all(np.isnan(truth)):
        ax.plot(seq, truth, lw=1, color="C2")
        ax.axhline(0.8, color="grey", ls="--", lw=0.8, label="success (0.8)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("Strehl ratio (twin ground truth)")
    ax.set_title("objective", fontsize=9)
    ax = fig.add_subplot(grid[1, 3])
    ax.plot(seq, [float(s.data["dose_e"]) for s in session.steps], lw=1, color="C3")
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative dose (e⁻)")
    ax.set_title("dose", fontsize=9)
    figures = summary(session)
    fig.suptitle(
        f"{session.path.name}: {figures['exit_status']}, {figures['acquisitions']} frames, "
        f"backend {figures['backend']}",
        fontsize=10,
    )
    fig.tight_layout()
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
