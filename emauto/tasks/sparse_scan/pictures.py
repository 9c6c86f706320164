"""PNGs of sparse scans: the truth and each strategy's reconstruction side by side."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from emauto.tasks.sparse_scan.sampling import normalise

__all__ = ["save_image_png", "save_reconstructions"]


def save_image_png(image: np.ndarray, path: Path, title: str = "") -> Path:
    """A grey-scale PNG of a 2-D array with a title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.4, 4.4), dpi=120)
    ax.imshow(image, cmap="gray", vmin=float(np.min(image)), vmax=float(np.max(image)))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_reconstructions(
    kept: Mapping[str, Mapping[str, np.ndarray]],
    images: Mapping[str, np.ndarray],
    out: Path,
    coverage: float,
) -> list[Path]:
    """One PNG per image: the truth, then every strategy's reconstruction (RMS in titles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    out.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        truth = normalise(image)
        panels = [("truth", truth)] + [
            (strategy, per_image[name]) for strategy, per_image in kept.items() if name in per_image
        ]
        cols = min(5, len(panels))
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), dpi=110)
        for ax in np.atleast_1d(axes).ravel():
            ax.set_axis_off()
        for ax, (label, panel) in zip(np.atleast_1d(axes).ravel(), panels, strict=False):
            ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            rms = 100 * float(np.sqrt(np.mean((panel - truth) ** 2)))
            ax.set_title(label if label == "truth" else f"{label} {rms:.1f} %", fontsize=8)
        fig.suptitle(f"{name}, coverage {coverage:g}", fontsize=9)
        fig.tight_layout()
        path = out / f"sparse_scan_{Path(name).stem}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
