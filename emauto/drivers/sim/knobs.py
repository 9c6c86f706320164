"""The twin's knob table: names, SI units, limits, safe steps and start values."""

from __future__ import annotations

import math

from emauto.microscope import KnobSpec

#: Corrector knobs: Krivanek Cartesian aberration components (m). name -> (limit, max step)
ABERRATION_KNOBS: dict[str, tuple[float, float]] = {
    "C10": (20e-6, 2e-6),
    "C12a": (5e-6, 1e-6),
    "C12b": (5e-6, 1e-6),
    "C21a": (50e-6, 10e-6),
    "C21b": (50e-6, 10e-6),
    "C23a": (50e-6, 10e-6),
    "C23b": (50e-6, 10e-6),
    "C30": (500e-6, 100e-6),
    "C32a": (500e-6, 100e-6),
    "C32b": (500e-6, 100e-6),
    "C34a": (500e-6, 100e-6),
    "C34b": (500e-6, 100e-6),
}

#: Width of each lens channel's backlash (hysteresis) band at ``hysteresis_scale = 1``: about
#: pi/16 of phase at the edge of a 30 mrad aperture at 200 kV, small against the pi/4 rule.
HYSTERESIS_WIDTH: dict[str, float] = {
    "C10": 0.2e-9, "C12a": 0.2e-9, "C12b": 0.2e-9,
    "C21a": 8e-9, "C21b": 8e-9, "C23a": 8e-9, "C23b": 8e-9,
    "C30": 0.4e-6, "C32a": 0.4e-6, "C32b": 0.4e-6, "C34a": 0.4e-6, "C34b": 0.4e-6,
    "beam_shift_x": 0.05e-9, "beam_shift_y": 0.05e-9,
    "beam_tilt_x": 20e-6, "beam_tilt_y": 20e-6,
}  # fmt: skip

_DESCRIPTIONS = {
    "C10": "defocus C1 (positive = overfocus, Krivanek)",
    "C12": "twofold astigmatism A1",
    "C21": "axial coma B2",
    "C23": "threefold astigmatism A2",
    "C30": "spherical aberration C3",
    "C32": "star aberration S3",
    "C34": "fourfold astigmatism A3",
}


def twin_knobs() -> dict[str, KnobSpec]:
    """All knobs of the simulated microscope, keyed by name."""
    specs: list[KnobSpec] = []
    for name, (limit, step) in ABERRATION_KNOBS.items():
        base = name.rstrip("ab")
        part = {"a": " (a: cos component)", "b": " (b: sin component)"}.get(name[-1], "")
        specs.append(
            KnobSpec(
                name=name,
                unit="m",
                lower=-limit,
                upper=limit,
                max_step=step,
                description=_DESCRIPTIONS[base] + part,
            )
        )
    specs += [
        KnobSpec(
            name="beam_shift_x",
            unit="m",
            lower=-200e-9,
            upper=200e-9,
            max_step=50e-9,
            description="probe shift in the specimen plane, x",
        ),
        KnobSpec(
            name="beam_shift_y",
            unit="m",
            lower=-200e-9,
            upper=200e-9,
            max_step=50e-9,
            description="probe shift in the specimen plane, y",
        ),
        KnobSpec(
            name="beam_tilt_x",
            unit="rad",
            lower=-20e-3,
            upper=20e-3,
            max_step=5e-3,
            description="illumination tilt, x (moves the aperture in angle space)",
        ),
        KnobSpec(
            name="beam_tilt_y",
            unit="rad",
            lower=-20e-3,
            upper=20e-3,
            max_step=5e-3,
            description="illumination tilt, y",
        ),
        KnobSpec(
            name="convergence_angle",
            unit="rad",
            lower=5e-3,
            upper=45e-3,
            max_step=10e-3,
            description="probe-forming aperture semi-angle",
        ),
        KnobSpec(
            name="stage_x",
            unit="m",
            lower=-1e-3,
            upper=1e-3,
            max_step=100e-6,
            description="stage position, x (specimen point at the scan centre)",
        ),
        KnobSpec(
            name="stage_y",
            unit="m",
            lower=-1e-3,
            upper=1e-3,
            max_step=100e-6,
            description="stage position, y",
        ),
        KnobSpec(
            name="scan_fov",
            unit="m",
            lower=0.5e-9,
            upper=2e-6,
            max_step=2e-6,
            description="scan field of view along x",
        ),
        KnobSpec(
            name="scan_rotation",
            unit="rad",
            lower=-math.pi,
            upper=math.pi,
            max_step=2 * math.pi,
            description="scan rotation, counter-clockwise",
        ),
        KnobSpec(
            name="scan_dwell",
            unit="s",
            lower=1e-7,
            upper=1e-3,
            max_step=1e-3,
            description="default dwell time per scan position",
        ),
        KnobSpec(
            name="beam_blank",
            unit="",
            lower=0.0,
            upper=1.0,
            max_step=1.0,
            binary=True,
            description="1 = beam blanked",
        ),
    ]
    return {spec.name: spec for spec in specs}


def default_values() -> dict[str, float]:
    """Start values: aberrations zero, 30 mrad aperture, 4 nm field, 2 us dwell, beam on."""
    values = {name: 0.0 for name in twin_knobs()}
    values.update(convergence_angle=30e-3, scan_fov=4e-9, scan_dwell=2e-6)
    return values
