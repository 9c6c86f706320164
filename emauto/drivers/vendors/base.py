"""Shared machinery of the vendor adapters: knob table, atomic set, dose, safe state."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping

import numpy as np

from emauto.errors import BeamBlankedError, ClosedError, InvalidRequestError
from emauto.microscope import (
    Calibration,
    Frame,
    ImageRequest,
    KnobSpec,
    MicroscopeDescription,
    MicroscopeState,
    RasterScan,
    RonchigramRequest,
    validate_setpoints,
)
from emauto.units import ELECTRON_CHARGE_C


class VendorMicroscope:
    """Base class: subclasses provide ``_describe``, ``_read_knobs``, ``_write_knobs``,
    ``_blank``, ``_stop_motion``, ``_ronchigram`` and optionally ``_raster``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._closed = False
        self._dose_e = 0.0
        self._t0 = time.monotonic()
        self._description = self._describe()

    # ------------------------------------------------------------------ subclass hooks

    def _describe(self) -> MicroscopeDescription:
        raise NotImplementedError

    def _read_knobs(self) -> dict[str, float]:
        raise NotImplementedError

    def _write_knobs(self, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def _stop_motion(self) -> None:
        """Stop stage motion; a no-op where the vendor moves the stage synchronously."""

    def _ronchigram(self, request: RonchigramRequest) -> tuple[np.ndarray, tuple[Calibration, ...]]:
        raise NotImplementedError

    def _raster(
        self, shape: tuple[int, int], dwell_s: float
    ) -> tuple[np.ndarray, tuple[Calibration, ...]]:
        raise InvalidRequestError(f"{self._description.backend} cannot acquire scanned images")

    # ------------------------------------------------------------------ contract

    def describe(self) -> MicroscopeDescription:
        """Knobs (SI, emauto conventions), detectors and scan limits."""
        return self._description

    def read(self) -> MicroscopeState:
        """All knobs, read from the vendor library and converted to SI."""
        with self._lock:
            self._check_open()
            knobs = self._read_knobs()
            return MicroscopeState(
                knobs=knobs,
                beam_blanked=knobs.get("beam_blank", 0.0) == 1.0,
                stage_moving=False,
                time_s=time.monotonic() - self._t0,
                dose_e=self._dose_e,
            )

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Validate all setpoints, then write them; nothing is written if one is invalid."""
        with self._lock:
            self._check_open()
            checked = validate_setpoints(self._description, {}, setpoints)
            self._write_knobs(checked)
            return self.read()

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """A Ronchigram from the camera, or a raster image where the adapter supports it."""
        with self._lock:
            self._check_open()
            if not isinstance(request, RonchigramRequest | ImageRequest):
                raise InvalidRequestError(
                    f"expected a RonchigramRequest or ImageRequest, got {type(request).__name__}"
                )
            state = self.read()
            if state.beam_blanked:
                raise BeamBlankedError("the beam is blanked; set beam_blank to 0 to acquire")
            limits = self._description.scan
            current = self._description.beam_current_A
            if isinstance(request, RonchigramRequest):
                if request.detector not in self._description.detectors:
                    raise InvalidRequestError(
                        f"unknown camera {request.detector!r}; have "
                        f"{sorted(self._description.detectors)}"
                    )
                if not limits.min_exposure_s <= request.exposure_s <= limits.max_exposure_s:
                    raise InvalidRequestError(
                        f"exposure {request.exposure_s:g} s outside "
                        f"[{limits.min_exposure_s:g}, {limits.max_exposure_s:g}] s"
                    )
                if request.wait_s:
                    time.sleep(request.wait_s)
                data, calibrations = self._ronchigram(request)
                exposure = request.exposure_s
                area = math.pi * (20e-9) ** 2
            else:
                if not isinstance(request.scan, RasterScan):
                    raise InvalidRequestError(
                        f"{self._description.backend} scans rasters only, got {request.scan.mode}"
                    )
                dwell = request.dwell_s or state.knobs.get("scan_dwell", limits.min_dwell_s)
                data, calibrations = self._raster(request.scan.shape, dwell)
                exposure = dwell * data.size
                fov = state.knobs.get("scan_fov", 1e-8)
                area = fov * fov * data.shape[0] / data.shape[1]
            electrons = current * exposure / ELECTRON_CHARGE_C
            self._dose_e += electrons
            return Frame(
                kind=request.kind,
                detector=request.detector,
                data=np.ascontiguousarray(data, dtype=np.float32),
                calibrations=calibrations,
                dose_e=electrons,
                dose_e_per_m2=electrons / area,
                exposure_s=exposure,
                duration_s=exposure,
                state=state,
                request=request,
            )

    def safe(self) -> None:
        """Blank the beam and stop motion."""
        with self._lock:
            if self._closed:
                return
            self._write_knobs({"beam_blank": 1.0})
            self._stop_motion()

    def close(self) -> None:
        """Go safe and release the vendor library."""
        self.safe()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self._description.backend} has been closed")


def knob(
    name: str, unit: str, lower: float, upper: float, max_step: float, description: str
) -> KnobSpec:
    """A `KnobSpec` (shorthand for the adapters' tables)."""
    return KnobSpec(
        name=name,
        unit=unit,
        lower=lower,
        upper=upper,
        max_step=max_step,
        description=description,
        binary=name == "beam_blank",
    )
