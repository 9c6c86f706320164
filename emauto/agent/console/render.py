"""The live frame as a PNG a microscopist reads: grey levels, a scale bar with its unit, the
frame's number and what it is.

Drawn with Pillow (a few milliseconds for 256 x 256; matplotlib takes ~100 ms and would eat
the console's latency budget). The scale bar comes from the frame's own calibration: metres
per pixel for an image (shown in nm or µm), radians per pixel for a Ronchigram (shown in
mrad).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emauto.microscope import Frame

#: Side of the rendered picture (px).
SIZE = 384
#: Largest frame rendered (pixels a side); bigger ones are subsampled first.
MAX_SIDE = 4096


def nice_length(longest: float) -> float:
    """The largest 1, 2 or 5 x 10^n not above ``longest`` (> 0)."""
    if not math.isfinite(longest) or longest <= 0:
        raise ValueError(f"expected a positive length, got {longest}")
    exponent = math.floor(math.log10(longest))
    for mantissa in (5.0, 2.0, 1.0):
        value = mantissa * 10.0**exponent
        if value <= longest * (1 + 1e-9):
            return value
    return 10.0**exponent  # pragma: no cover - 1 x 10^n always fits


def scale_label(value: float, units: str) -> str:
    """``value`` (m or rad) as text in nm / µm / mrad."""
    if units == "rad":
        number, unit = value * 1e3, "mrad"
    elif value >= 1e-6:
        number, unit = value * 1e6, "µm"
    else:
        number, unit = value * 1e9, "nm"
    return f"{number:g} {unit}"


def render_frame_png(frame: Frame, frame_id: int, size: int = SIZE) -> bytes:
    """A PNG of a 2-D frame (``size`` px a side) with a scale bar, its unit and ``#frame_id``."""
    data = np.asarray(frame.data)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D frame, got shape {data.shape}")
    ny, nx = data.shape
    if not (0 < ny <= MAX_SIDE and 0 < nx <= MAX_SIDE):
        raise ValueError(f"expected a frame of at most {MAX_SIDE} px a side, got {data.shape}")
    low, high = np.percentile(data, (0.5, 99.5))
    span = float(high - low) or 1.0
    grey = np.clip((data - low) / span * 255.0, 0, 255).astype(np.uint8)
    image = Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    # the scale bar: about a quarter of the width, a round length in the frame's units
    calibration = frame.calibrations[-1]
    per_px = abs(calibration.scale) * nx / size  # metres (or radians) per drawn pixel
    length = nice_length(per_px * size * 0.3)
    bar_px = max(round(length / per_px), 1)
    x0, y0 = 12, size - 22
    draw.rectangle((x0 - 1, y0 - 1, x0 + bar_px + 1, y0 + 7), fill=(0, 0, 0))
    draw.rectangle((x0, y0, x0 + bar_px, y0 + 6), fill=(255, 255, 255))
    label = scale_label(length, calibration.units)
    draw.text((x0, y0 - 18), label, fill=(255, 255, 255), font=font, stroke_width=2,
              stroke_fill=(0, 0, 0))  # fmt: skip
    title = f"#{frame_id} {frame.kind} ({frame.detector})"
    draw.text((8, 6), title, fill=(255, 255, 0), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
