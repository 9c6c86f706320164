"""PNGs of sparse scans: the truth and each strategy's reconstruction side by side.

Each image carries a scale bar (nm or pm from its pixel size; pixels when that is unknown)
and a colour bar: detector counts for a scan's reconstruction, the normalised intensity
(0 to 1) for the benchmark's panels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emauto.io.pictures import add_colour_bar, add_scale_bar
from emauto.tasks.sparse_scan.sampling import normalise

__all__ = ["image_figure", "reconstructions_figure", "save_image_png", "save_reconstructions"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scale(pixel_m: float | None) -> tuple[float, str]:
    """The scale bar's pixel size and unit: metres, or pixels when unknown."""
    return (pixel_m, "m") if pixel_m is not None else (1.0, "px")


def image_figure(
    image: np.ndarray, title: str = "", pixel_m: float | None = None, quantity: str = "counts"
) -> Any:
    """A grey-scale figure of a 2-D array: title, scale bar (``pixel_m``, m) and a colour bar
    labelled ``quantity``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 4.4), dpi=120)
    shown = ax.imshow(image, cmap="gray", vmin=float(np.min(image)), vmax=float(np.max(image)))
    ax.set_title(title if pixel_m is not None else f"{title} (pixel size unknown)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    add_scale_bar(ax, *_scale(pixel_m))
    add_colour_bar(fig, shown, ax, quantity)
    fig.tight_layout()
    return fig


def save_image_png(
    image: np.ndarray, path: Path, title: str = "", pixel_m: float | None = None
) -> Path:
    """A grey-scale PNG of a 2-D array (`image_figure`: title, scale bar, colour bar)."""
    plt = _pyplot()
    fig = image_figure(image, title, pixel_m)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def reconstructions_figure(
    truth_image: np.ndarray,
    panels: list[tuple[str, np.ndarray]],
    title: str,
    pixel_m: float | None = None,
) -> Any:
    """The truth (normalised) then each (label, reconstruction) panel, RMS error in the
    titles, a scale bar on each (``pixel_m``, m) and one colour bar (normalised intensity)."""
    plt = _pyplot()
    truth = normalise(truth_image)
    shown = [("truth", truth), *panels]
    cols = min(5, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols + 0.8, 2.8 * rows), dpi=110, layout="constrained"
    )
    flat = np.atleast_1d(axes).ravel()
    for ax in flat:
        ax.set_axis_off()
    picture = None
    for ax, (label, panel) in zip(flat, shown, strict=False):
        picture = ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
        rms = 100 * float(np.sqrt(np.mean((panel - truth) ** 2)))
        ax.set_title(label if label == "truth" else f"{label} {rms:.1f} %", fontsize=8)
        add_scale_bar(ax, *_scale(pixel_m))
    unknown = "" if pixel_m is not None else " (pixel size unknown)"
    fig.suptitle(f"{title}{unknown}", fontsize=9)
    if picture is not None:
        fig.colorbar(picture, ax=list(flat), label="normalised intensity", shrink=0.9)
    return fig


def save_reconstructions(
    kept: Mapping[str, Mapping[str, np.ndarray]],
    images: Mapping[str, np.ndarray],
    out: Path,
    coverage: float,
    pixel_m: Mapping[str, float | None] | None = None,
) -> list[Path]:
    """One PNG per image (`reconstructions_figure`): the truth, then every strategy's
    reconstruction; ``pixel_m`` maps an image's name to its pixel size (m) if known."""
    plt = _pyplot()
    paths = []
    out.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        panels = [
            (strategy, per_image[name]) for strategy, per_image in kept.items() if name in per_image
        ]
        size = (pixel_m or {}).get(name)
        fig = reconstructions_figure(image, panels, f"{name}, coverage {coverage:g}", size)
        path = out / f"sparse_scan_{Path(name).stem}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
