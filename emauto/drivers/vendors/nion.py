"""Nion microscopes through `nionswift-instrumentation` (extra ``emauto[nion]``).

``NionMicroscope()`` runs headless against ``nionswift-usim``'s simulated instrument, its scan
device and its Ronchigram camera; pass another ``instrument`` (a ``stem_controller`` with a
scan controller) and camera for real hardware. Nion's corrector controls are Krivanek
Cartesian aberrations in metres already (``C12.x`` = C12a, ``C12.y`` = C12b; positive C10 =
overfocus), so they map one to one; see docs/vendors.md.

The probe is parked as on a Nion: through the STEM controller's parked probe position
(fractional over the scan field of its scan controller). usim's camera reads that position
only when a scan device is registered with the instrument, so `_usim` registers usim's own.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from emauto.drivers.vendors.base import VendorMicroscope, knob
from emauto.errors import BackendError, ConfigError, InvalidRequestError
from emauto.microscope import (
    Calibration,
    DetectorSpec,
    MicroscopeDescription,
    RonchigramRequest,
    ScanLimits,
)

#: emauto knob -> Nion control name.
CONTROLS: dict[str, str] = {
    "C10": "C10",
    "C12a": "C12.x",
    "C12b": "C12.y",
    "C21a": "C21.x",
    "C21b": "C21.y",
    "C23a": "C23.x",
    "C23b": "C23.y",
    "C30": "C30",
    "C32a": "C32.x",
    "C32b": "C32.y",
    "C34a": "C34.x",
    "C34b": "C34.y",
    "beam_shift_x": "CSH.x",
    "beam_shift_y": "CSH.y",
    "convergence_angle": "ConvergenceAngle",
    "stage_x": "stage_position_m.x",
    "stage_y": "stage_position_m.y",
}


def _usim(camera_pixels: int) -> tuple[Any, Any, Any]:
    """usim's instrument with its scan device registered as the scan controller, its
    Ronchigram camera, and the scan hardware source (to close)."""
    try:
        from nion.instrumentation import scan_base
        from nion.usim_device import InstrumentDevice, RonchigramCameraSimulator, ScanDevice
        from nion.utils import Geometry
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ConfigError("the nion backend needs: pip install 'emauto[nion]'") from exc
    values = InstrumentDevice.ValueManager()
    instrument = InstrumentDevice.Instrument(
        "emauto_usim",
        values,
        InstrumentDevice.AxisManager(),
        InstrumentDevice.ScanDataGenerator(sample_index=0),
    )
    # without a scan controller usim takes every Ronchigram at the centre of the field,
    # whatever the parked probe position (nion.usim_device.CameraSimulator._get_frame_settings);
    # registered on this instrument only, not in Nion's global component registry
    module = ScanDevice.ScanModule(instrument)
    scan = scan_base.ConcreteScanHardwareSource(instrument, module.device, module.settings, None)
    instrument.set_scan_controller(scan)
    camera = RonchigramCameraSimulator.RonchigramCameraSimulator(
        instrument,
        Geometry.IntSize(camera_pixels, camera_pixels),
        instrument.counts_per_electron,
        instrument.stage_size_nm,
    )
    return instrument, camera, scan


class NionMicroscope(VendorMicroscope):
    """The Microscope contract over a Nion instrument and its Ronchigram camera."""

    def __init__(
        self, instrument: Any = None, camera: Any = None, *, camera_pixels: int = 256
    ) -> None:
        self._owned_scan: Any = None
        if instrument is None:
            instrument, camera, self._owned_scan = _usim(camera_pixels)
        self.instrument = instrument
        self.camera = camera
        self.camera_pixels = camera_pixels
        self._scan_fov_m = 16e-9
        self._scan_rotation = 0.0
        self._scan_dwell_s = 2e-6
        super().__init__()

    def _get(self, control: str) -> float:
        value = self.instrument.get_value(control)
        if value is None:
            raise BackendError(f"Nion control {control!r} is not available on this instrument")
        return float(value)

    def _describe(self) -> MicroscopeDescription:
        aberrations = {
            "C10": (20e-6, 2e-6), "C12": (5e-6, 1e-6), "C21": (50e-6, 10e-6),
            "C23": (50e-6, 10e-6), "C30": (500e-6, 100e-6), "C32": (500e-6, 100e-6),
            "C34": (500e-6, 100e-6),
        }  # fmt: skip
        knobs = []
        for name in CONTROLS:
            base = name.rstrip("ab")
            if base in aberrations:
                limit, step = aberrations[base]
                knobs.append(knob(name, "m", -limit, limit, step, f"Nion {CONTROLS[name]}"))
        knobs += [
            knob("beam_shift_x", "m", -200e-9, 200e-9, 50e-9, "Nion CSH.x"),
            knob("beam_shift_y", "m", -200e-9, 200e-9, 50e-9, "Nion CSH.y"),
            knob("convergence_angle", "rad", 5e-3, 45e-3, 10e-3, "Nion ConvergenceAngle"),
            knob("stage_x", "m", -1e-3, 1e-3, 100e-6, "Nion stage_position_m.x"),
            knob("stage_y", "m", -1e-3, 1e-3, 100e-6, "Nion stage_position_m.y"),
            knob("scan_fov", "m", 0.5e-9, 2e-6, 2e-6, "scan field of view"),
            knob("scan_rotation", "rad", -math.pi, math.pi, 2 * math.pi, "scan rotation"),
            knob("scan_dwell", "s", 1e-7, 1e-3, 1e-3, "scan dwell time"),
            knob("beam_blank", "", 0.0, 1.0, 1.0, "Nion C_Blank"),
        ]
        pixel = self._pixel_rad()
        return MicroscopeDescription(
            backend="nion:usim" if self.camera is not None else "nion",
            energy_eV=self._get("EHT"),
            beam_current_A=self._get("BeamCurrent"),
            knobs={spec.name: spec for spec in knobs},
            detectors={
                "ronchigram": DetectorSpec(
                    name="ronchigram",
                    kind="camera",
                    shape=(self.camera_pixels, self.camera_pixels),
                    pixel_angle_rad=pixel,
                    gain_counts_per_e=float(getattr(self.instrument, "counts_per_electron", 1)),
                    read_noise_counts=0.0,
                ),
                "adf": DetectorSpec(
                    name="adf", kind="scan", gain_counts_per_e=1.0, read_noise_counts=0.0
                ),
            },
            scan=ScanLimits(
                max_fov_m=2e-6,
                max_offset_m=2e-6,
                min_dwell_s=1e-7,
                max_dwell_s=1e-3,
                max_positions=2048 * 2048,
                min_exposure_s=1e-4,
                max_exposure_s=10.0,
                settle_s=0.0,
                flyback_s=0.0,
            ),
        )

    def _pixel_rad(self) -> float:
        calibrations = self.camera.get_dimensional_calibrations(None, None)
        return float(calibrations[0].scale)

    def _read_knobs(self) -> dict[str, float]:
        knobs = {name: self._get(control) for name, control in CONTROLS.items()}
        knobs["scan_fov"] = self._scan_fov_m
        knobs["scan_rotation"] = self._scan_rotation
        knobs["scan_dwell"] = self._scan_dwell_s
        knobs["beam_blank"] = 1.0 if self._get("C_Blank") else 0.0
        return knobs

    def _write_knobs(self, values: Mapping[str, float]) -> None:
        blank = values.get("beam_blank")
        if blank == 1.0:
            self.instrument.value_manager.is_blanked = True  # blank first, unblank last
        for name, value in values.items():
            control = CONTROLS.get(name)
            if control is not None and not self.instrument.set_value(control, value):
                raise BackendError(f"Nion refused {control} = {value:g}")
        self._scan_fov_m = values.get("scan_fov", self._scan_fov_m)
        self._scan_rotation = values.get("scan_rotation", self._scan_rotation)
        self._scan_dwell_s = values.get("scan_dwell", self._scan_dwell_s)
        if blank == 0.0:
            self.instrument.value_manager.is_blanked = False

    def _ronchigram(self, request: RonchigramRequest) -> tuple[np.ndarray, tuple[Calibration, ...]]:
        from nion.utils import Geometry

        n = self.camera_pixels
        self._park(request.probe_position_m)
        # as Nion's own camera device does: the instrument's scan context and parked position
        xdata = self.camera.get_frame_data(
            Geometry.IntRect.from_tlbr(0, 0, n, n),
            Geometry.IntSize(1, 1),
            request.exposure_s,
            self.instrument.scan_context,
            self.instrument.probe_position,
        )
        calibrations = tuple(
            Calibration(name=axis, units="rad", scale=float(c.scale), offset=float(c.offset))
            for axis, c in zip(("theta_y", "theta_x"), xdata.dimensional_calibrations, strict=True)
        )
        return np.asarray(xdata.data, dtype=np.float32), calibrations

    def parking_field_m(self, position_m: tuple[float, float]) -> float:
        """The scan field (m, square, centred) the probe is parked in: ``scan_fov``, or the
        smallest field that holds ``position_m`` where it lies outside ``scan_fov``."""
        x, y = position_m
        return max(self._scan_fov_m, 2.0 * max(abs(x), abs(y)))

    def _park(self, position_m: tuple[float, float]) -> None:
        """Park the probe at ``position_m = (x, y)`` (m, scan frame) through the instrument's
        scan controller and parked probe position; refuse what cannot be reached exactly."""
        from nion.utils import Geometry

        x, y = position_m
        limit = self._description.scan.max_offset_m
        if not (math.isfinite(x) and math.isfinite(y)) or max(abs(x), abs(y)) > limit:
            raise InvalidRequestError(
                f"probe position {position_m} m: expected finite |x|, |y| <= {limit:g} m"
            )
        scan = getattr(self.instrument, "scan_controller", None)
        if scan is None:
            raise BackendError(
                "the Nion instrument has no scan controller: the probe cannot be parked"
            )
        field = self.parking_field_m(position_m)
        parameters = copy.copy(scan.get_current_frame_parameters())
        parameters.fov_nm = field * 1e9
        parameters.rotation_rad = self._scan_rotation
        parameters.center_nm = Geometry.FloatPoint()
        scan.set_current_frame_parameters(parameters)  # updates the instrument's scan context
        # Nion's parked probe position is fractional (y, x) in [0, 1] over the scan field
        wanted = Geometry.FloatPoint(y=0.5 + y / field, x=0.5 + x / field)
        self.instrument.set_probe_position(wanted)
        parked = self.instrument.probe_position
        if parked is None or abs(parked.x - wanted.x) > 1e-9 or abs(parked.y - wanted.y) > 1e-9:
            raise BackendError(f"Nion parked the probe at {parked}, asked for {wanted}")
        if getattr(self.instrument, "probe_state", "parked") != "parked":
            raise BackendError(
                f"the Nion probe is {self.instrument.probe_state!r}, not parked: stop the scan"
            )

    def close(self) -> None:
        """Go safe, then release the scan device this adapter created."""
        super().close()
        if self._owned_scan is not None:
            self._owned_scan.close()
            self._owned_scan = None

    def _raster(
        self, shape: tuple[int, int], dwell_s: float
    ) -> tuple[np.ndarray, tuple[Calibration, ...]]:
        from nion.utils import Geometry

        ny, nx = shape
        fov_nm = self._scan_fov_m * 1e9
        parameters = SimpleNamespace(
            size=Geometry.IntSize(ny, nx),
            fov_size_nm=Geometry.FloatSize(fov_nm * ny / nx, fov_nm),
            rotation_rad=self._scan_rotation,
            center_nm=Geometry.FloatPoint(),
            pixel_time_us=dwell_s * 1e6,
        )
        generator = self.instrument.scan_data_generator
        data = np.asarray(generator.generate_scan_data(self.instrument, parameters))
        data = np.clip(data, 0.0, None)  # counts are never negative
        pixel = self._scan_fov_m / nx
        calibrations = (
            Calibration(name="y", units="m", scale=pixel, offset=-(ny - 1) / 2 * pixel),
            Calibration(name="x", units="m", scale=pixel, offset=-(nx - 1) / 2 * pixel),
        )
        return data, calibrations
