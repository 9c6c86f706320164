"""A microscope seen through a calibration: what a calibration session found wrong in the
driver's own description, put right at the Microscope boundary.

A real instrument's driver can report a Ronchigram camera's angular pixel 10 % off, have a
corrector axis wired with the wrong sign in its calibration, or lenses that settle slower
than the frames' wait. `emauto calibrate` measures such things from a short session; this
wrapper applies them, so that every policy, unchanged, sees an instrument whose reported
units are true:

- ``camera_pixel_scale``: true / reported angular pixel of the Ronchigram camera; each
  Ronchigram's ``rad`` calibrations (scale and offset) and `describe`'s
  ``pixel_angle_rad`` are multiplied by it.
- ``flipped_knobs``: knobs whose optics follow minus the setpoint; `set` sends ``-value``
  and every reported state (``read``, ``set``'s answer, each frame's state) says ``+value``.
- ``lens_settle_s``: the least wait (s) before the first Ronchigram after a knob change
  (the request's ``wait_s`` is raised to it): a slow lens is measured settled. Frames
  without a change between them (a probe-shift measurement's) are not delayed, so the
  specimen does not drift between them. It costs time, no dose.
- ``flat_field``: an ``.npy`` file (float32, the camera's shape; relative paths are read
  from the calibration file's folder by `load_instrument_calibration`) of the camera's
  relative pixel gains: each Ronchigram, less ``dark_offset_counts``, is divided by it (a
  flat-field correction; the offset is added back).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from emauto.errors import ConfigError
from emauto.microscope import (
    Frame,
    ImageRequest,
    Microscope,
    MicroscopeDescription,
    MicroscopeState,
    RonchigramRequest,
)
from emauto.units import StrictModel, load_yaml
from emauto.wrappers.base import MicroscopeWrapper

__all__ = ["CalibratedMicroscope", "InstrumentCalibration", "load_instrument_calibration"]

#: Pixel gains a flat field may hold (relative): outside, the file is refused.
FLAT_FIELD_RANGE = (0.2, 5.0)


class InstrumentCalibration(StrictModel):
    """What a calibration measured that the driver's description does not say (SI)."""

    camera_pixel_scale: float = Field(
        default=1.0, gt=0.5, lt=2.0, description="true / reported Ronchigram angular pixel"
    )
    flipped_knobs: tuple[str, ...] = Field(
        default=(), description="knobs whose optics follow minus the setpoint"
    )
    lens_settle_s: float = Field(
        default=0.0, ge=0.0, le=60.0, description="least wait after a knob change (s)"
    )
    flat_field: str | None = Field(
        default=None, description="an .npy file of the Ronchigram camera's pixel gains"
    )
    dark_offset_counts: float = Field(
        default=0.0, ge=0.0, le=1e6, description="the camera's dark offset (counts)"
    )

    @field_validator("flipped_knobs")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"a knob is listed twice: {list(value)}")
        return value


def load_instrument_calibration(path: str | Path) -> InstrumentCalibration:
    """An `InstrumentCalibration` YAML, its ``flat_field`` file read from the YAML's folder
    when relative."""
    path = Path(path)
    calibration = load_yaml(path, InstrumentCalibration)
    if calibration.flat_field is not None and not Path(calibration.flat_field).is_absolute():
        resolved = str(path.parent / calibration.flat_field)
        calibration = calibration.model_copy(update={"flat_field": resolved})
    return calibration


def load_flat_field(path: str | Path) -> np.ndarray:
    """Pixel gains (2-D float32) from an ``.npy`` file, never unpickled; `ConfigError` for
    a missing file, another shape or gains outside `FLAT_FIELD_RANGE`."""
    try:
        gains = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"flat field {path}: cannot read it as a .npy array: {exc}") from exc
    low, high = FLAT_FIELD_RANGE
    if gains.ndim != 2 or not np.issubdtype(gains.dtype, np.floating):
        raise ConfigError(
            f"flat field {path}: expected a 2-D float array, got {gains.dtype} {gains.shape}"
        )
    if not (np.all(np.isfinite(gains)) and gains.min() >= low and gains.max() <= high):
        raise ConfigError(f"flat field {path}: gains must be finite and within [{low}, {high}]")
    return gains.astype(np.float32)


class CalibratedMicroscope(MicroscopeWrapper):
    """``microscope`` with ``calibration`` applied at the boundary (see the module)."""

    def __init__(self, microscope: Microscope, calibration: InstrumentCalibration) -> None:
        super().__init__(microscope)
        unknown = set(calibration.flipped_knobs) - set(microscope.describe().knobs)
        if unknown:
            raise ConfigError(
                f"the calibration flips knobs the microscope lacks: {sorted(unknown)}"
            )
        self.calibration = calibration
        self._gains = (
            load_flat_field(calibration.flat_field) if calibration.flat_field is not None else None
        )
        self._flipped = frozenset(calibration.flipped_knobs)
        self._settle_pending = False

    def describe(self) -> MicroscopeDescription:
        """The inner description with the Ronchigram camera's angular pixel corrected."""
        description = self.microscope.describe()
        scale = self.calibration.camera_pixel_scale
        if scale == 1.0:
            return description
        detectors = {
            name: (
                spec.model_copy(update={"pixel_angle_rad": spec.pixel_angle_rad * scale})
                if spec.kind == "camera" and spec.pixel_angle_rad is not None
                else spec
            )
            for name, spec in description.detectors.items()
        }
        return description.model_copy(update={"detectors": detectors})

    def read(self) -> MicroscopeState:
        """The state with flipped knobs reported as the optics follow them."""
        return self._unflip(self.microscope.read())

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Set, sending minus the value for each flipped knob; the state after."""
        sent = {k: (-v if k in self._flipped else v) for k, v in setpoints.items()}
        state = self.microscope.set(sent)
        self._settle_pending = True
        return self._unflip(state)

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Acquire; the first Ronchigram after a knob change waits at least
        ``lens_settle_s``; a Ronchigram comes back with its angular calibration corrected
        and divided by the flat field."""
        if isinstance(request, RonchigramRequest) and self._settle_pending:
            wait = max(request.wait_s, self.calibration.lens_settle_s)
            if wait != request.wait_s:
                request = request.model_copy(update={"wait_s": wait})
        frame = self.microscope.acquire(request)
        if isinstance(request, RonchigramRequest):
            self._settle_pending = False
        update: dict[str, object] = {"state": self._unflip(frame.state)}
        if frame.kind == "ronchigram" and self._gains is not None:
            if np.shape(frame.data) != self._gains.shape:
                raise ConfigError(
                    f"the flat field is {self._gains.shape}, the camera's frame "
                    f"{np.shape(frame.data)}: it was calibrated on another camera setting"
                )
            dark = np.float32(self.calibration.dark_offset_counts)
            update["data"] = ((np.asarray(frame.data) - dark) / self._gains + dark).astype(
                np.float32
            )
        scale = self.calibration.camera_pixel_scale
        if frame.kind == "ronchigram" and scale != 1.0:
            update["calibrations"] = tuple(
                c.model_copy(update={"scale": c.scale * scale, "offset": c.offset * scale})
                if c.units == "rad"
                else c
                for c in frame.calibrations
            )
        return frame.model_copy(update=update)

    def _unflip(self, state: MicroscopeState) -> MicroscopeState:
        if not self._flipped:
            return state
        knobs = {k: (-v if k in self._flipped else v) for k, v in state.knobs.items()}
        return state.model_copy(update={"knobs": knobs})
