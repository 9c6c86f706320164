"""Pictures of frames: calibrated PNGs that a microscopist would rather look at than read.

Every image emauto writes carries a scale bar (matplotlib-scalebar's `ScaleBar`; real space
in nm or pm, Ronchigrams in mrad) and a colour bar with its quantity. `add_scale_bar` puts one
on a matplotlib axes, `draw_scale_bar` on a PIL picture (the analysis overlay), both from one
rule (`scale_bar_length`): the longest 1-2-5 length that fits in a fifth of the width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emauto.microscope import Calibration, Frame

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "SCALE_BAR_FRACTION",
    "DrawnScaleBar",
    "ScaleBarLength",
    "add_colour_bar",
    "add_scale_bar",
    "calibration_pixel_size",
    "display_factor",
    "display_size",
    "draw_scale_bar",
    "drawn_scale_bars",
    "frame_figure",
    "frame_pixel_size",
    "save_frame_png",
    "scale_bar_length",
]

#: The scale bar's longest length, as a fraction of the image width.
SCALE_BAR_FRACTION = 0.2
#: Display units of each SI unit, largest first: (unit, metres or radians per unit).
_DISPLAY_UNITS: dict[str, tuple[tuple[str, float], ...]] = {
    "m": (("µm", 1e-6), ("nm", 1e-9), ("pm", 1e-12)),
    "rad": (("rad", 1.0), ("mrad", 1e-3), ("µrad", 1e-6)),
    "px": (("px", 1.0),),
}


@dataclass(frozen=True)
class ScaleBarLength:
    """A scale bar: ``value`` ``unit`` long (e.g. 2 nm), ``pixels`` image pixels long."""

    value: float
    unit: str
    pixels: float

    @property
    def label(self) -> str:
        """The text under the bar, e.g. ``2 nm``."""
        return f"{self.value:g} {self.unit}"


def _check_pixel_size(pixel_size: float, units: str) -> None:
    if units not in _DISPLAY_UNITS:
        raise ValueError(f"units: expected one of {sorted(_DISPLAY_UNITS)}, got {units!r}")
    if not (math.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel size: expected a positive finite number, got {pixel_size}")


def display_factor(length: float, units: str) -> tuple[float, str]:
    """The display unit of a length (``units``: ``m``, ``rad`` or ``px``) and its size in SI:
    the largest unit in which ``length`` is at least 1 (nm for 1e-9 <= length < 1e-6 m,
    pm below; mrad for 1e-3 <= angle < 1 rad)."""
    _check_pixel_size(length, units)
    choices = _DISPLAY_UNITS[units]
    for unit, size in choices:
        if length >= size * (1 - 1e-9):
            return size, unit
    return choices[-1][1], choices[-1][0]


def scale_bar_length(
    pixel_size: float, units: str, width_px: int, fraction: float = SCALE_BAR_FRACTION
) -> ScaleBarLength:
    """The scale bar of an image ``width_px`` pixels wide whose pixels are ``pixel_size``
    ``units`` (m, rad or px) apart: the longest 1, 2 or 5 x 10^k length (in its display unit)
    that is at most ``fraction`` of the width."""
    _check_pixel_size(pixel_size, units)
    if width_px < 1 or not 0 < fraction <= 1:
        raise ValueError(
            f"expected width_px >= 1 and 0 < fraction <= 1, got {width_px}, {fraction}"
        )
    target = pixel_size * width_px * fraction
    size, unit = display_factor(target, units)
    value = target / size
    exponent = math.floor(math.log10(value))
    mantissa = max(m for m in (1, 2, 5, 10) if m * 10.0**exponent <= value * (1 + 1e-9))
    nice = round(mantissa * 10.0**exponent, 12)
    if units == "px":
        nice = max(1.0, float(round(nice)))
    return ScaleBarLength(value=nice, unit=unit, pixels=nice * size / pixel_size)


def frame_pixel_size(frame: Frame) -> tuple[float, str]:
    """A 2-D frame's pixel size along x (SI) and its unit (``m`` or ``rad``); the ``px`` of
    an uncalibrated axis (unknown unit or non-positive scale)."""
    return calibration_pixel_size(frame.calibrations[-1])


def calibration_pixel_size(calibration: Calibration) -> tuple[float, str]:
    """One axis's pixel size (SI) and unit (``m``, ``rad``), or ``(1.0, "px")``."""
    units = calibration.units.strip()
    if units in ("m", "rad") and math.isfinite(calibration.scale) and calibration.scale > 0:
        return float(calibration.scale), units
    return 1.0, "px"


def _dimension(units: str) -> Any:
    """matplotlib-scalebar's dimension for ``units`` (``m``, ``rad`` or ``px``)."""
    from matplotlib_scalebar.dimension import _LATEX_MU, _Dimension

    if units == "m":
        return "si-length"
    if units == "px":
        return "pixel-length"

    class RadianDimension(_Dimension):
        """Plane angles in rad, mrad, µrad (the scalebar package knows degrees only)."""

        def __init__(self) -> None:
            super().__init__("rad")
            self.add_units("mrad", 1e-3)
            self.add_units("µrad", 1e-6, _LATEX_MU + "rad")

    return RadianDimension()


def add_scale_bar(
    ax: Any,
    pixel_size: float,
    units: str,
    *,
    data_per_pixel: float = 1.0,
    location: str = "lower right",
) -> Any:
    """Put a scale bar on the image in ``ax`` and return it (a matplotlib-scalebar
    `ScaleBar`): ``pixel_size`` is one image pixel in ``units`` (``m``, ``rad``; ``px`` when
    uncalibrated) and ``data_per_pixel`` how many data units of ``ax`` one pixel spans (1 for
    ``imshow`` without ``extent``). Its length follows `scale_bar_length`."""
    from matplotlib_scalebar.scalebar import ScaleBar

    if not (math.isfinite(data_per_pixel) and data_per_pixel > 0):
        raise ValueError(f"data_per_pixel: expected a positive number, got {data_per_pixel}")
    low, high = ax.get_xlim()
    width_px = max(1, round(abs(high - low) / data_per_pixel))
    length = scale_bar_length(pixel_size, units, width_px)
    bar = ScaleBar(
        pixel_size / data_per_pixel,
        units=units,
        dimension=_dimension(units),
        fixed_value=length.value,
        fixed_units=length.unit,
        location=location,
        color="white",
        box_color="black",
        box_alpha=0.6,
        frameon=True,
        scale_loc="bottom",
        length_fraction=SCALE_BAR_FRACTION,
        font_properties={"size": 8},
        scale_formatter=lambda value, unit: f"{value:g} {unit}",
        rotation="horizontal-only",
    )
    ax.add_artist(bar)
    return bar


def display_size(unit: str, units: str) -> float:
    """The size in SI (``units``) of a display ``unit`` (``nm`` -> 1e-9 for ``m``)."""
    for name, size in _DISPLAY_UNITS[units]:
        if name == unit:
            return size
    raise ValueError(f"{unit!r} is not a display unit of {units!r}")


def add_colour_bar(fig: Any, image: Any, ax: Any, label: str) -> Any:
    """A colour bar for ``image`` beside ``ax``, labelled with the quantity and its unit."""
    return fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.03)


def draw_scale_bar(
    picture: Image.Image, pixel_size: float, units: str, upscale: int = 1, note: str = ""
) -> ScaleBarLength:
    """Draw a white scale bar with its label (and ``note`` after it) on a black box in the
    lower right corner of ``picture`` (an RGB PIL image of an image whose pixels are
    ``pixel_size`` ``units`` apart, enlarged ``upscale`` times); return its length."""
    from PIL import ImageDraw

    if upscale < 1:
        raise ValueError(f"upscale: expected >= 1, got {upscale}")
    width = picture.width // upscale
    length = scale_bar_length(pixel_size, units, width)
    bar = round(length.pixels * upscale)
    draw = ImageDraw.Draw(picture)
    label = length.label.replace("µ", "u") + note  # PIL's default bitmap font has no µ
    text_w = int(draw.textlength(label))
    margin, thick = 6, max(3, picture.height // 128)
    box_w = max(bar, text_w) + 2 * margin
    box_h = thick + 12 + 3 * margin // 2
    right, bottom = picture.width - 4, picture.height - 4
    draw.rectangle([right - box_w, bottom - box_h, right, bottom], fill=(0, 0, 0))
    x0 = right - margin - bar
    y0 = bottom - box_h + margin // 2
    draw.rectangle([x0, y0, x0 + bar - 1, y0 + thick - 1], fill=(255, 255, 255))
    draw.text((right - margin - text_w, y0 + thick + 2), label, fill=(255, 255, 255))
    return length


@dataclass(frozen=True)
class DrawnScaleBar:
    """A scale bar as drawn on a figure: ``image_pixels`` long in the image's own pixels,
    labelled ``value`` ``unit`` (its SI length: ``value * display_size(unit, units)``)."""

    image_pixels: float
    value: float
    unit: str
    units: str
    label: str

    @property
    def length_si(self) -> float:
        """The labelled length in SI (m or rad; pixels for ``px``)."""
        return self.value * display_size(self.unit, self.units)


def drawn_scale_bars(fig: Any) -> list[tuple[Any, DrawnScaleBar]]:
    """Every scale bar on ``fig`` after drawing it: (its axes, what it shows), measured from
    the drawn bar and the axes' image (what a reader of the PNG sees)."""
    from matplotlib_scalebar.scalebar import ScaleBar

    fig.canvas.draw()
    found = []
    for ax in fig.axes:
        for artist in ax.artists:
            if not isinstance(artist, ScaleBar):
                continue
            info = artist.info
            (image,) = ax.get_images()
            left, right, _, _ = image.get_extent()
            data_per_pixel = abs(right - left) / image.get_array().shape[1]
            units = next(u for u, names in _DISPLAY_UNITS.items() if info.units in dict(names))
            found.append(
                (
                    ax,
                    DrawnScaleBar(
                        image_pixels=float(info.length_px) / data_per_pixel,
                        value=float(info.value),
                        unit=str(info.units),
                        units=units,
                        label=str(info.scale_text),
                    ),
                )
            )
    return found


def frame_figure(frame: Frame, title: str = "") -> Any:
    """The matplotlib figure of a 2-D frame: calibrated axes (mrad, or nm / pm), a scale bar
    and a colour bar (counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(frame.data)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D frame, got shape {data.shape}")
    cal_y, cal_x = frame.calibrations
    ny, nx = data.shape
    pixel, units = frame_pixel_size(frame)
    size, unit = display_factor(pixel * nx, units)
    factor = 1.0 / size
    scale_y = cal_y.scale if calibration_pixel_size(cal_y)[1] == units else pixel
    extent = (
        factor * (cal_x.offset - pixel / 2),
        factor * (cal_x.offset + pixel * (nx - 0.5)),
        factor * (cal_y.offset + scale_y * (ny - 0.5)),
        factor * (cal_y.offset - scale_y / 2),
    )
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=120)
    image = ax.imshow(data, cmap="gray", extent=extent, origin="upper")
    ax.set_xlabel(f"{cal_x.name} ({unit})")
    ax.set_ylabel(f"{cal_y.name} ({unit})")
    ax.tick_params(labelsize=7)
    dose = f"{frame.dose_e:.3g} e⁻"
    ax.set_title(title or f"{frame.kind} ({frame.detector}), {dose}", fontsize=9)
    add_scale_bar(ax, pixel, units, data_per_pixel=pixel * factor)
    add_colour_bar(fig, image, ax, "counts")
    fig.tight_layout()
    return fig


def save_frame_png(frame: Frame, path: str | Path, title: str = "") -> Path:
    """Write a 2-D frame as a PNG (`frame_figure`: calibrated axes, scale bar, colour bar)."""
    import matplotlib.pyplot as plt

    fig = frame_figure(frame, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
