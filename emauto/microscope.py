"""The Microscope contract: every backend (twin, ZeroMQ client, replay) implements it.

Units are SI everywhere: metres, radians, seconds, volts, amperes, electrons.
Image arrays are indexed ``[y, x]`` (row = y, column = x); positions are ``(x, y)`` pairs.

Scan geometry
-------------
Scan positions are given in the *scan frame*, in metres, relative to the scan centre.
The scan frame is rotated by the ``scan_rotation`` knob (counter-clockwise, rad) into the
specimen frame, so the specimen point under the probe is::

    r_specimen = (stage_x, stage_y) + R(scan_rotation) @ r_scan + (beam_shift_x, beam_shift_y)

A raster of shape ``(ny, nx)`` spans ``scan_fov`` along x with square pixels, centred on the
scan centre. A Ronchigram is taken with the probe parked at one scan-frame position.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from emauto.errors import (
    BackendError,
    BeamBlankedError,
    ClosedError,
    ConfigError,
    EmautoError,
    InvalidRequestError,
    InvalidSetpointError,
    NonFiniteSetpointError,
    OutOfLimitsError,
    UnknownKnobError,
)
from emauto.units import StrictModel

__all__ = [
    "AcquisitionRequest",
    "BackendError",
    "BeamBlankedError",
    "Calibration",
    "ClosedError",
    "ConfigError",
    "DetectorSpec",
    "EmautoError",
    "Frame",
    "GroundTruth",
    "ImageRequest",
    "InvalidRequestError",
    "InvalidSetpointError",
    "KnobSpec",
    "LineSegment",
    "Microscope",
    "MicroscopeDescription",
    "MicroscopeState",
    "NonFiniteSetpointError",
    "OutOfLimitsError",
    "PositionsScan",
    "RasterScan",
    "Restartable",
    "RonchigramRequest",
    "ScanLimits",
    "SegmentsScan",
    "SettlingGroundTruth",
    "UnknownKnobError",
    "validate_setpoints",
]


def _as_positions(value: Any) -> np.ndarray:
    """Validate an (N, 2) array of finite (x, y) positions in metres."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"expected an (N, 2) array of floats, got {type(value).__name__}") from exc
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 1:
        raise ValueError(f"expected an (N, 2) array of (x, y) positions, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("positions must be finite (no NaN or inf)")
    array.setflags(write=False)
    return array


def _as_array(value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(value).__name__}")
    return value


Positions = Annotated[
    np.ndarray,
    PlainValidator(_as_positions),
    PlainSerializer(lambda a: a.tolist(), return_type=list),
]
ArrayField = Annotated[
    np.ndarray,
    PlainValidator(_as_array),
    PlainSerializer(lambda a: a.tolist(), return_type=list),
]

# --------------------------------------------------------------------------- description


class KnobSpec(StrictModel):
    """One settable quantity: its unit, hard limits and the largest safe single step."""

    name: str
    unit: str = Field(description="SI unit symbol, '' for dimensionless")
    lower: float
    upper: float
    max_step: float = Field(gt=0, description="largest change in one command, in `unit`")
    description: str = ""
    binary: bool = Field(default=False, description="only 0.0 and 1.0 are valid")

    @model_validator(mode="after")
    def _ordered(self) -> KnobSpec:
        if not self.lower < self.upper:
            raise ValueError(f"knob {self.name}: lower {self.lower} must be < upper {self.upper}")
        return self


class DetectorSpec(StrictModel):
    """A detector: a camera (Ronchigram) or a scanned detector (ADF, BF)."""

    name: str
    kind: Literal["camera", "scan"]
    shape: tuple[int, int] | None = Field(default=None, description="camera pixels (ny, nx)")
    pixel_angle_rad: float | None = Field(default=None, description="camera angular pixel size")
    inner_angle_rad: float | None = Field(default=None, description="scan detector inner angle")
    outer_angle_rad: float | None = Field(default=None, description="scan detector outer angle")
    gain_counts_per_e: float = Field(gt=0, description="counts per detected electron")
    read_noise_counts: float = Field(ge=0, description="Gaussian read noise per pixel/dwell")


class ScanLimits(StrictModel):
    """What the scan system can do, and what it costs in time."""

    max_fov_m: float = Field(gt=0)
    max_offset_m: float = Field(gt=0, description="largest |x| or |y| of a scan position")
    min_dwell_s: float = Field(gt=0)
    max_dwell_s: float = Field(gt=0)
    max_positions: int = Field(gt=0)
    min_exposure_s: float = Field(gt=0)
    max_exposure_s: float = Field(gt=0)
    settle_s: float = Field(ge=0, description="settling time after a probe jump")
    flyback_s: float = Field(ge=0, description="line flyback time of a raster")


class MicroscopeDescription(StrictModel):
    """Everything static about a backend: knobs, detectors, scan limits, beam."""

    backend: str
    energy_eV: float = Field(gt=0)
    beam_current_A: float = Field(gt=0)
    knobs: dict[str, KnobSpec]
    detectors: dict[str, DetectorSpec]
    scan: ScanLimits


# --------------------------------------------------------------------------- state


class MicroscopeState(StrictModel):
    """A snapshot of the microscope: knob setpoints and beam/stage status."""

    knobs: dict[str, float]
    beam_blanked: bool
    stage_moving: bool = False
    time_s: float = Field(description="backend clock (simulated time on the twin)")
    dose_e: float = Field(ge=0, description="electrons delivered since connect")


def validate_setpoints(
    description: MicroscopeDescription,
    current: Mapping[str, float],
    setpoints: Mapping[str, float],
) -> dict[str, float]:
    """Check absolute setpoints against the knob table; return them as plain floats.

    Raises `UnknownKnobError`, `NonFiniteSetpointError` or `OutOfLimitsError` on the first
    bad entry; nothing is applied by this function. Never clips.
    """
    if not isinstance(setpoints, Mapping):
        raise InvalidSetpointError(
            f"setpoints must be a mapping of knob name to float, got {type(setpoints).__name__}"
        )
    checked: dict[str, float] = {}
    for name, value in setpoints.items():
        spec = description.knobs.get(name) if isinstance(name, str) else None
        if spec is None:
            known = ", ".join(sorted(description.knobs))
            raise UnknownKnobError(f"unknown knob {name!r}; expected one of: {known}")
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
            raise NonFiniteSetpointError(
                f"knob {name}: expected a real number in {spec.unit or 'no unit'}, "
                f"got {type(value).__name__} {value!r}"
            )
        number = float(value)
        if not math.isfinite(number):
            raise NonFiniteSetpointError(f"knob {name}: expected a finite number, got {number}")
        if not spec.lower <= number <= spec.upper:
            raise OutOfLimitsError(
                f"knob {name}: {number:g} {spec.unit} is outside the limits "
                f"[{spec.lower:g}, {spec.upper:g}] {spec.unit}"
            )
        if spec.binary and number not in (0.0, 1.0):
            raise InvalidSetpointError(f"knob {name}: expected 0 or 1, got {number:g}")
        checked[name] = number
    del current  # the step limit is enforced by the safety layer, not by the contract
    return checked


# --------------------------------------------------------------------------- requests


class RonchigramRequest(StrictModel):
    """A camera frame with the probe parked at one scan-frame position."""

    kind: Literal["ronchigram"] = "ronchigram"
    exposure_s: float = Field(gt=0)
    probe_position_m: tuple[float, float] = (0.0, 0.0)
    detector: str = "ronchigram"
    wait_s: float = Field(
        default=0.0, ge=0, le=60, description="wait before exposing, e.g. for lenses to settle"
    )


class RasterScan(StrictModel):
    """A raster of ``shape = (ny, nx)`` pixels over the ``scan_fov`` knob."""

    mode: Literal["raster"] = "raster"
    shape: tuple[Annotated[int, Field(ge=1, le=8192)], Annotated[int, Field(ge=1, le=8192)]]

    def positions(self, fov_m: float) -> np.ndarray:
        """Pixel centres (ny * nx, 2) [x, y] in metres, row by row, over a field of view of
        ``fov_m`` along x (square pixels, centred on the scan centre)."""
        ny, nx = self.shape
        pixel = fov_m / nx
        xs = (np.arange(nx) - (nx - 1) / 2) * pixel
        ys = (np.arange(ny) - (ny - 1) / 2) * pixel
        gx, gy = np.meshgrid(xs, ys, indexing="xy")
        return np.stack([gx.ravel(), gy.ravel()], axis=1)


class PositionsScan(BaseModel):
    """An explicit list of (x, y) scan-frame positions, visited in order."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    mode: Literal["positions"] = "positions"
    positions_m: Positions


class LineSegment(StrictModel):
    """``n_points`` equally spaced positions from ``start_m`` to ``end_m`` inclusive."""

    start_m: tuple[float, float]
    end_m: tuple[float, float]
    n_points: int = Field(ge=1, le=65536)


class SegmentsScan(StrictModel):
    """Line segments, scanned in order; the probe jumps (and settles) between segments."""

    mode: Literal["segments"] = "segments"
    segments: tuple[LineSegment, ...] = Field(min_length=1)

    def positions(self) -> np.ndarray:
        """All positions (N, 2) in metres, segment after segment."""
        parts = [
            np.linspace(s.start_m, s.end_m, s.n_points, dtype=np.float64) for s in self.segments
        ]
        return np.concatenate(parts, axis=0)


ScanPattern = Annotated[RasterScan | PositionsScan | SegmentsScan, Field(discriminator="mode")]


class ImageRequest(StrictModel):
    """A scanned-detector acquisition over a raster, positions or line segments."""

    kind: Literal["image"] = "image"
    detector: str = "adf"
    scan: ScanPattern
    dwell_s: float | None = Field(default=None, gt=0, description="None: the scan_dwell knob")


AcquisitionRequest = Annotated[RonchigramRequest | ImageRequest, Field(discriminator="kind")]


# --------------------------------------------------------------------------- frames


class Calibration(StrictModel):
    """Linear axis calibration: ``value = offset + scale * index``."""

    name: str
    units: str
    scale: float
    offset: float = 0.0


class Frame(BaseModel):
    """One acquisition: data with calibrations, dose, timing and the state it was taken at.

    ``data`` is float32 detector counts. A raster image is 2-D ``[y, x]``; a positions or
    segments acquisition is 1-D, one value per entry of ``positions_m`` (scan frame, m).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    kind: Literal["ronchigram", "image"]
    detector: str
    data: ArrayField
    calibrations: tuple[Calibration, ...]
    positions_m: Positions | None = None
    dose_e: float = Field(ge=0, description="electrons delivered to the specimen")
    dose_e_per_m2: float = Field(ge=0, description="dose per illuminated area")
    exposure_s: float = Field(ge=0, description="beam-on time")
    duration_s: float = Field(ge=0, description="wall time incl. settling and flyback")
    timestamp: float = Field(default_factory=time.time, description="unix time, s")
    state: MicroscopeState
    request: RonchigramRequest | ImageRequest

    @field_validator("data")
    @classmethod
    def _finite(cls, value: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(value)):
            raise ValueError("frame data must be finite")
        return value


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class Microscope(Protocol):
    """What every backend implements. See the module docstring for units and geometry."""

    def describe(self) -> MicroscopeDescription:
        """Knobs (unit, limits, max step), detectors, scan limits, beam."""
        ...

    def read(self) -> MicroscopeState:
        """The current state; knob setpoints as ``state.knobs["C10"]``."""
        ...

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Apply absolute setpoints atomically: all are valid and applied, or none is."""
        ...

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Take a Ronchigram or a scanned-detector image."""
        ...

    def safe(self) -> None:
        """Blank the beam and stop all motion. Idempotent; never raises for a live backend."""
        ...

    def close(self) -> None:
        """Go safe and release the backend."""
        ...


@runtime_checkable
class GroundTruth(Protocol):
    """Twin-only ground truth, for scoring and recording (a policy never sees it).

    The in-process twin (`SimulatedMicroscope`), a twin behind the ZeroMQ server
    (`RemoteTwin`) and the replay of a twin's session (`ReplayTwin`) have it; hardware never
    does. Below wrappers, test the innermost backend: ``isinstance(unwrap(m), GroundTruth)``
    (`emauto.wrappers.base.unwrap`).
    """

    def strehl_ratio(self) -> float:
        """Strehl ratio of the true probe over the probe-forming aperture, in [0, 1]."""
        ...

    def true_aberrations(self) -> Any:
        """The true optical aberrations now, an `emauto.optics.Aberrations` (Cartesian, m).

        Typed ``Any`` because the contract does not import `emauto.optics` (a sibling layer).
        """
        ...


@runtime_checkable
class SettlingGroundTruth(GroundTruth, Protocol):
    """An in-process twin's ground truth a while ahead: what a state becomes once the lenses
    have settled, with no further command (scoring the state an episode leaves)."""

    def strehl_ratio_after(self, wait_s: float) -> float:
        """The Strehl ratio ``wait_s`` (s) from now if nothing is commanded meanwhile."""
        ...

    def aberrations_after(self, wait_s: float) -> Any:
        """The true aberrations ``wait_s`` (s) from now if nothing is commanded meanwhile
        (an `emauto.optics.Aberrations`, typed ``Any`` like `true_aberrations`)."""
        ...


@runtime_checkable
class Restartable(Protocol):
    """An in-process twin that can start again from a seed (twin-only; not over the wire)."""

    def restart(self, seed: int) -> None:
        """Start knobs, clock, drift and noise again from ``seed``: same seed, same frames."""
        ...
