"""An overlay PNG: the image (percentile-scaled greyscale) with found atom columns marked
(one colour a sublattice), missing columns circled, a banner saying what was decided, a scale
bar (nm or pm; pixels when the pixel size is unknown) and a colour bar of the grey levels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emauto.io.pictures import draw_scale_bar

if TYPE_CHECKING:
    from PIL import Image

#: Width (pixels) of the colour bar strip on the right of the overlay.
COLOUR_BAR_WIDTH = 72
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
    pixel_m: float | None = None,
) -> Path:
    """Write ``image`` with a cross at each (x, y) of ``atoms_xy_px`` (coloured by
    ``sublattice`` names), a yellow circle at each missing column, a magenta square at each
    extra column (off the lattice) and ``banner`` on top
    (e.g. "no resolved atomic columns: ...") to ``path`` (PNG), with a scale bar from
    ``pixel_m`` (m; a bar in pixels, and "pixel size unknown", when None) and a colour bar of
    the grey levels (the image's values, 0.5-99.5 percentile). The bar's label and the pixel
    size are also written as PNG text (``emauto:scale_bar``, ``emauto:pixel_size``)."""
    from PIL import Image, ImageDraw
    from PIL.PngImagePlugin import PngInfo

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
    if pixel_m is not None:
        bar = draw_scale_bar(picture, pixel_m, "m", upscale=scale)
    else:
        bar = draw_scale_bar(picture, 1.0, "px", upscale=scale, note=" (pixel size unknown)")
    picture = _with_colour_bar(picture, float(low), float(high))
    text = PngInfo()  # the calibration, for programs: the bar's label and the pixel size
    text.add_text("emauto:scale_bar", bar.label)
    text.add_text("emauto:pixel_size", f"{pixel_m!r} m" if pixel_m is not None else "unknown")
    out = Path(path)
    picture.save(out, pnginfo=text)
    return out


def _with_colour_bar(picture: Image.Image, low: float, high: float) -> Image.Image:
    """``picture`` with a strip on its right: a grey ramp from ``low`` (black) to ``high``
    (white), both values written beside it, and the quantity ("counts")."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (picture.width + COLOUR_BAR_WIDTH, picture.height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    top, bottom = 20, picture.height - 20
    ramp = np.linspace(255, 0, max(bottom - top, 2)).astype(np.uint8)
    strip = Image.fromarray(np.repeat(ramp[:, None], 12, axis=1)).convert("RGB")
    x0 = picture.width + 6
    canvas.paste(strip, (x0, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([x0 - 1, top - 1, x0 + 12, top + len(ramp)], outline=(0, 0, 0))
    ink = (0, 0, 0)
    draw.text((x0 + 15, top - 4), f"{high:.3g}", fill=ink)
    draw.text((x0 + 15, top + len(ramp) - 8), f"{low:.3g}", fill=ink)
    draw.text((x0 + 15, (top + bottom) // 2 - 4), "counts", fill=ink)
    return canvas
