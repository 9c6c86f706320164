"""Pictures of frames: calibrated PNGs that a microscopist would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emauto.microscope import Frame


def save_frame_png(frame: Frame, path: str | Path, title: str = "") -> Path:
    """Write a 2-D frame as a PNG with calibrated axes (mrad or nm) and a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(frame.data)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D frame, got shape {data.shape}")
    cal_y, cal_x = frame.calibrations
    factor, unit = (1e3, "mrad") if cal_x.units == "rad" else (1e9, "nm")
    ny, nx = data.shape
    extent = (
        factor * (cal_x.offset - cal_x.scale / 2),
        factor * (cal_x.offset + cal_x.scale * (nx - 0.5)),
        factor * (cal_y.offset + cal_y.scale * (ny - 0.5)),
        factor * (cal_y.offset - cal_y.scale / 2),
    )
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=120)
    image = ax.imshow(data, cmap="gray", extent=extent, origin="upper")
    ax.set_xlabel(f"{cal_x.name} ({unit})")
    ax.set_ylabel(f"{cal_y.name} ({unit})")
    dose = f"{frame.dose_e:.3g} e⁻"
    ax.set_title(title or f"{frame.kind} ({frame.detector}), {dose}", fontsize=9)
    fig.colorbar(image, ax=ax, label="counts")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
