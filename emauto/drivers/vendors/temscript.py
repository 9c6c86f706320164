"""Thermo Fisher microscopes through `temscript` (extra ``emauto[temscript]``).

``TemscriptMicroscope()`` drives temscript's ``NullMicroscope`` (an emulator, used by the
tests); ``TemscriptMicroscope(open_temscript("local"))`` the microscope itself (COM, on the
microscope PC), ``open_temscript("host:port")`` a temscript server. Conversions
(docs/vendors.md): temscript works in SI already; the condenser stigmator is in logical
units, scaled by ``stigmator_m_per_unit``; probe defocus has Krivanek's sign (positive =
overfocus) and maps to C10 one to one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from emauto.drivers.vendors.base import VendorMicroscope, knob
from emauto.errors import BackendError, ConfigError
from emauto.microscope import (
    Calibration,
    DetectorSpec,
    MicroscopeDescription,
    RonchigramRequest,
    ScanLimits,
)


def open_temscript(where: str = "null") -> Any:
    """A temscript microscope: ``local`` (COM, Windows microscope PC), ``null`` (emulator) or
    ``HOST:PORT`` of a temscript server (JSON transport, never pickle)."""
    try:
        import temscript
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ConfigError("the temscript backend needs: pip install 'emauto[temscript]'") from exc
    if where == "null":
        return temscript.NullMicroscope(wait_exposure=False)
    try:
        if where == "local":
            return temscript.Microscope()
        host, port = where.rsplit(":", 1)
        return temscript.RemoteMicroscope((host, int(port)), transport="JSON", timeout=10)
    except Exception as exc:  # COM missing off Windows, server unreachable, ...
        raise BackendError(f"cannot open the temscript microscope {where!r}: {exc}") from exc


class TemscriptMicroscope(VendorMicroscope):
    """The Microscope contract over a temscript microscope object.

    ``camera`` is the temscript camera name used for Ronchigrams; ``binning`` its binning;
    ``camera_pixel_rad`` the angular size of one unbinned camera pixel (calibrate it).
    """

    def __init__(
        self,
        instrument: Any = None,
        *,
        camera: str = "CCD",
        binning: int = 8,
        camera_pixel_rad: float = 25e-6,
        stigmator_m_per_unit: float = 1e-6,
    ) -> None:
        self.tem = instrument if instrument is not None else open_temscript("null")
        self.camera = camera
        self.binning = binning
        self.camera_pixel_rad = camera_pixel_rad
        self.stigmator_m_per_unit = stigmator_m_per_unit
        super().__init__()

    def _describe(self) -> MicroscopeDescription:
        limits = self.tem.get_stage_limits()
        xy = min(abs(limits["x"][0]), abs(limits["x"][1]), abs(limits["y"][0]), limits["y"][1])
        stig = self.stigmator_m_per_unit
        knobs = [
            knob("C10", "m", -20e-6, 20e-6, 2e-6, "probe defocus (positive = overfocus)"),
            knob("C12a", "m", -stig, stig, stig / 5, "condenser stigmator x, calibrated"),
            knob("C12b", "m", -stig, stig, stig / 5, "condenser stigmator y, calibrated"),
            knob("beam_shift_x", "m", -1e-6, 1e-6, 100e-9, "beam shift x"),
            knob("beam_shift_y", "m", -1e-6, 1e-6, 100e-9, "beam shift y"),
            knob("beam_tilt_x", "rad", -20e-3, 20e-3, 5e-3, "beam tilt x"),
            knob("beam_tilt_y", "rad", -20e-3, 20e-3, 5e-3, "beam tilt y"),
            knob("convergence_angle", "rad", 1e-3, 50e-3, 10e-3, "probe semi-angle"),
            knob("stage_x", "m", -xy, xy, 100e-6, "stage x"),
            knob("stage_y", "m", -xy, xy, 100e-6, "stage y"),
            knob("scan_rotation", "rad", -math.pi, math.pi, 2 * math.pi, "STEM scan rotation"),
            knob("scan_dwell", "s", 1e-7, 1e-3, 1e-3, "STEM dwell time"),
            knob("beam_blank", "", 0.0, 1.0, 1.0, "1 = beam blanked"),
        ]
        size = self.tem.get_cameras()[self.camera]
        shape = (int(size["height"]) // self.binning, int(size["width"]) // self.binning)
        return MicroscopeDescription(
            backend=f"temscript:{self.tem.get_family()}",
            energy_eV=float(self.tem.get_voltage()) * 1e3,
            beam_current_A=float(self.tem.get_screen_current()),
            knobs={spec.name: spec for spec in knobs},
            detectors={
                "ronchigram": DetectorSpec(
                    name="ronchigram",
                    kind="camera",
                    shape=shape,
                    pixel_angle_rad=self.camera_pixel_rad * self.binning,
                    gain_counts_per_e=1.0,
                    read_noise_counts=0.0,
                )
            },
            scan=ScanLimits(
                max_fov_m=1e-5,
                max_offset_m=1e-5,
                min_dwell_s=1e-7,
                max_dwell_s=1e-3,
                max_positions=4096 * 4096,
                min_exposure_s=1e-4,
                max_exposure_s=10.0,
                settle_s=0.0,
                flyback_s=0.0,
            ),
        )

    def _read_knobs(self) -> dict[str, float]:
        tem = self.tem
        stig_x, stig_y = tem.get_condenser_stigmator()
        shift = tem.get_beam_shift()
        tilt = tem.get_beam_tilt()
        stage = tem.get_stage_position()
        scale = self.stigmator_m_per_unit
        return {
            "C10": float(tem.get_probe_defocus()),
            "C12a": float(stig_x) * scale,
            "C12b": float(stig_y) * scale,
            "beam_shift_x": float(shift[0]),
            "beam_shift_y": float(shift[1]),
            "beam_tilt_x": float(tilt[0]),
            "beam_tilt_y": float(tilt[1]),
            "convergence_angle": float(tem.get_convergence_angle()),
            "stage_x": float(stage["x"]),
            "stage_y": float(stage["y"]),
            "scan_rotation": float(tem.get_stem_rotation()),
            "scan_dwell": float(tem.get_stem_acquisition_param()["dwell_time(s)"]),
            "beam_blank": 1.0 if tem.get_beam_blanked() else 0.0,
        }

    def _write_knobs(self, values: Mapping[str, float]) -> None:
        tem = self.tem
        now = self._read_knobs()
        merged = {**now, **values}

        def changed(*names: str) -> bool:
            return any(name in values for name in names)

        if changed("beam_blank") and merged["beam_blank"] == 1.0:
            tem.set_beam_blanked(True)  # blank first, unblank last
        if changed("C10"):
            tem.set_probe_defocus(merged["C10"])
        if changed("C12a", "C12b"):
            scale = self.stigmator_m_per_unit
            tem.set_condenser_stigmator((merged["C12a"] / scale, merged["C12b"] / scale))
        if changed("beam_shift_x", "beam_shift_y"):
            tem.set_beam_shift((merged["beam_shift_x"], merged["beam_shift_y"]))
        if changed("beam_tilt_x", "beam_tilt_y"):
            tem.set_beam_tilt((merged["beam_tilt_x"], merged["beam_tilt_y"]))
        if changed("convergence_angle"):
            tem.set_convergence_angle(merged["convergence_angle"])
        if changed("stage_x", "stage_y"):
            tem.set_stage_position({"x": merged["stage_x"], "y": merged["stage_y"]})
        if changed("scan_rotation"):
            tem.set_stem_rotation(merged["scan_rotation"])
        if changed("scan_dwell"):
            tem.set_stem_acquisition_param({"dwell_time(s)": merged["scan_dwell"]})
        if changed("beam_blank") and merged["beam_blank"] == 0.0:
            tem.set_beam_blanked(False)

    def _ronchigram(self, request: RonchigramRequest) -> tuple[np.ndarray, tuple[Calibration, ...]]:
        self.tem.set_camera_param(
            self.camera, {"exposure(s)": request.exposure_s, "binning": self.binning}
        )
        data = np.asarray(self.tem.acquire(self.camera)[self.camera], dtype=np.float32)
        pixel = self.camera_pixel_rad * self.binning
        calibrations = tuple(
            Calibration(name=axis, units="rad", scale=pixel, offset=-pixel * n / 2)
            for axis, n in zip(("theta_y", "theta_x"), data.shape, strict=True)
        )
        return data, calibrations
