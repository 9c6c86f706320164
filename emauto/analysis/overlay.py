"""An overlay PNG: the image (percentile-scaled greyscale) with found atom columns marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_overlay(image: np.ndarray, atoms_xy_px: np.ndarray, path: str | Path) -> Path:
    """Write ``image`` with a red cross at each (x, y) of ``atoms_xy_px`` to ``path`` (PNG)."""
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
    for x, y in np.asarray(atoms_xy_px).reshape(-1, 2):
        cx, cy = (x + 0.5) * scale, (y + 0.5) * scale
        draw.line([(cx - arm, cy), (cx + arm, cy)], fill=(255, 40, 40))
        draw.line([(cx, cy - arm), (cx, cy + arm)], fill=(255, 40, 40))
    out = Path(path)
    picture.save(out)
    return out
