"""An overlay PNG: the image (percentile-scaled greyscale) with found atom columns marked
(one colour a sublattice), missing columns circled, and a banner saying what was decided."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

_COLOURS = [(255, 40, 40), (40, 160, 255), (60, 220, 60), (255, 160, 0), (220, 60, 220)]


def write_overlay(
    image: np.ndarray,
    atoms_xy_px: np.ndarray,
    path: str | Path,
    *,
    sublattice: Sequence[str] | None = None,
    missing_xy_px: np.ndarray | None = None,
    extra_xy_px: np.ndarray | None = None,
    banner: str | None = None,
) -> Path:
    """Write ``image`` with a cross at each (x, y) of ``atoms_xy_px`` (coloured by
    ``sublattice`` names), a yellow circle at each missing column, a magenta square at each
    extra column (off the lattice) and ``banner`` on top
    (e.g. "no resolved atomic columns: ...") to ``path`` (PNG)."""
    from PIL import Image, ImageDraw

    low, high = np.percentile(image, [0.5, 99.5])
    scaled = np.clip((image - low) / max(high - low, 1e-12), 0, 1)
    grey = (scaled * 255).astype(np.uint8)
    scale = max(1, 512 // max(grey.shape))
    picture = (
        Image.fromarray(grey)
        .resize((grey.shape[1] * scale, grey.shape[0] * scale), Image.Resampling.NEAREST)
        .convert("RGB")
    )
    draw = ImageDraw.Draw(picture)
    arm = max(2, scale)
    names = sorted(set(sublattice)) if sublattice else []
    points = np.asarray(atoms_xy_px, dtype=np.float64).reshape(-1, 2)
    for index, (x, y) in enumerate(points):
        colour = _COLOURS[0]
        if sublattice:
            colour = _COLOURS[names.index(sublattice[index]) % len(_COLOURS)]
        cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
        draw.line([(cx - arm, cy), (cx + arm, cy)], fill=colour)
        draw.line([(cx, cy - arm), (cx, cy + arm)], fill=colour)
    if missing_xy_px is not None:
        ring = 2 * arm
        for x, y in np.asarray(missing_xy_px, dtype=np.float64).reshape(-1, 2):
            cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
            draw.ellipse([cx - ring, cy - ring, cx + ring, cy + ring], outline=(255, 230, 0))
    if extra_xy_px is not None:
        for x, y in np.asarray(extra_xy_px, dtype=np.float64).reshape(-1, 2):
            cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
            draw.rectangle([cx - arm, cy - arm, cx + arm, cy + arm], outline=(255, 0, 255))
    if banner:
        draw.rectangle([0, 0, picture.width, 14], fill=(0, 0, 0))
        draw.text((3, 1), banner[: max(8, picture.width // 6)], fill=(255, 230, 0))
    out = Path(path)
    picture.save(out)
    return out
