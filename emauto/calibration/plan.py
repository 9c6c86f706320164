"""The calibration plan: what to acquire, on any Microscope, and how each call is labelled.

Every frame of the plan is taken with the probe parked (`RonchigramRequest`); the plan moves
only C10, the corrector axes it checks and the probe position, each relative to where it
found them, and puts every knob it moved back at the end. Each call is labelled with its
role (`ROLE_PREFIX` + role, written as the session step's ``task``) so that `emauto.calibration.fit`
can find the frames again; the plan's own settings go into the session's start document.

On the twin the whole plan takes about 150 s of simulated time and about 130 frames (a few
seconds of computing); on a microscope it is a few minutes, most of it waiting for lenses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from emauto.errors import ConfigError
from emauto.microscope import Frame, Microscope, RonchigramRequest
from emauto.units import StrictModel

#: The prefix of every calibration step's label (the session step's ``task``).
ROLE_PREFIX = "calibration/"
#: The key of the plan's settings in the session's start document.
PLAN_METADATA_KEY = "calibration_plan"
#: Corrector axes whose sign the plan checks by default, and their step (m): a few times the
#: probe-shift measurement's precision at 40 nm over-focus (A1 ~1 nm, A2 ~10 nm, B2 ~20 nm).
#: C10's sign is read from the direction the pattern moves under a probe shift (the camera
#: rotation's frames).
DEFAULT_SIGN_STEPS: dict[str, float] = {
    "C12a": 6e-9,
    "C12b": 6e-9,
    "C21a": 150e-9,
    "C21b": 150e-9,
    "C23a": 100e-9,
    "C23b": 100e-9,
}


class CalibrationPlan(StrictModel):
    """Settings of the calibration plan (SI units).

    - ``exposure_s``: every frame's exposure but the flat frames' (``flat_exposures_s``)
      and the frames just after a C10 step (`lag_exposure`: at least ``lag_exposure_s``).
    - ``flat_frames`` frames at each of ``flat_exposures_s`` at the starting optics (in
      focus: a nearly flat bright-field disc): photon transfer (gain, read noise, dark
      offset), dose, contrast, and the disc's edge (camera scale, aperture).
    - ``rotation_defocus_m``: over-focus added to C10 while the probe is moved by
      ``rotation_shift_m`` along +x, +y, -x, -y (camera rotation; a large shift against
      the scan's few-pm jitter).
    - ``defocus_m``: over-focus added to C10 for the rest (a shadow image), and
      ``probe_shift_m`` the probe shift of the aberration measurements (axis signs).
    - ``lag_step_m``: C10 raised by this, then lowered back, and a frame taken at each of
      ``lag_delays_s`` after the step, twice: the probe at 0 and at ``lag_shift_m`` along x
      (lens lag); ``settle_s`` is waited wherever the lenses must be settled.
    - ``drift_waits_s``: frames at the same position after these waits (specimen drift).
    - ``sign_steps_m``: corrector axis -> +/- step; the aberrations are measured (probe
      shifts) after each (the axes' signs).
    - ``flat_field_grid`` x ``flat_field_grid`` frames at ``defocus_m`` with the probe on a
      square grid of ``flat_field_pitch_m`` (different specimen areas; 0: none): the
      camera's pixel gains, a flat field (`estimators.flat_field`). Without a specimen-free
      area to go to, the specimen's pattern is averaged away over the positions.
    """

    exposure_s: float = Field(default=30e-3, gt=0, le=1.0)
    lag_exposure_s: float = Field(default=5e-3, gt=0, le=1.0)
    flat_frames: int = Field(default=16, ge=2, le=64)
    flat_exposures_s: tuple[float, float] = (1e-3, 10e-3)
    defocus_m: float = Field(default=40e-9, gt=0, le=2e-6)
    probe_shift_m: float = Field(default=0.3e-9, gt=0, le=5e-9)
    rotation_defocus_m: float = Field(default=80e-9, gt=0, le=2e-6)
    rotation_shift_m: float = Field(default=0.8e-9, gt=0, le=5e-9)
    lag_step_m: float = Field(default=60e-9, gt=0, le=2e-6)
    lag_shift_m: float = Field(default=0.4e-9, gt=0, le=5e-9)
    lag_delays_s: tuple[float, ...] = tuple(float(x) for x in np.geomspace(1e-3, 3.0, 18))
    settle_s: float = Field(default=3.0, gt=0, le=60)
    drift_waits_s: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    sign_steps_m: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SIGN_STEPS))
    flat_field_grid: int = Field(default=8, ge=0, le=16)
    flat_field_pitch_m: float = Field(default=1.25e-9, gt=0, le=1e-6)

    @model_validator(mode="after")
    def _checks(self) -> CalibrationPlan:
        low, high = self.flat_exposures_s
        if not (0 < low < high <= 1.0):
            raise ValueError(f"flat_exposures_s must be 0 < low < high <= 1 s, got {low}, {high}")
        if len(self.lag_delays_s) < 4 or not all(0 <= d <= 60 for d in self.lag_delays_s):
            raise ValueError("lag_delays_s: at least 4 delays, each within [0, 60] s")
        if not all(0 < w <= 60 for w in self.drift_waits_s):
            raise ValueError("drift_waits_s: each wait within (0, 60] s")
        if not all(math.isfinite(s) and s > 0 for s in self.sign_steps_m.values()):
            raise ValueError("sign_steps_m: each step a positive length (m)")
        return self


Label = Callable[[str], None]


def lag_exposure(plan: CalibrationPlan, delay_s: float) -> float:
    """The exposure (s) of the frame taken ``delay_s`` after the C10 step: half the delay,
    within [``lag_exposure_s``, ``exposure_s``] (short where the optics move fast, long for
    signal where they move slowly; its middle is the reading's time)."""
    return min(max(delay_s / 2, plan.lag_exposure_s), max(plan.exposure_s, plan.lag_exposure_s))


def flat_field_positions(plan: CalibrationPlan) -> list[tuple[float, float]]:
    """The flat-field frames' probe positions (m): a centred square grid, row by row."""
    n, pitch = plan.flat_field_grid, plan.flat_field_pitch_m
    offsets = [(i - (n - 1) / 2) * pitch for i in range(n)]
    return [(x, y) for y in offsets for x in offsets]


def run_calibration_plan(
    microscope: Microscope,
    plan: CalibrationPlan | None = None,
    label: Label | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Drive ``microscope`` through the calibration ``plan``; return the frames taken.

    ``label(role)`` is called before each call (a recorder's ``task``, see
    `record_calibration`), ``progress(frames)`` after each frame. Knobs the plan does not
    have on this microscope are skipped (a corrector axis it cannot step); every knob moved
    is put back, also on an error.
    """
    plan = plan or CalibrationPlan()
    tell = label or (lambda _role: None)
    knobs = microscope.describe().knobs
    if "C10" not in knobs:
        raise ConfigError("the calibration plan needs a C10 (defocus) knob")
    start = microscope.read().knobs
    moved = ["C10", *(k for k in plan.sign_steps_m if k in knobs and k != "C10")]
    frames = 0
    base_c10 = start["C10"]
    over = base_c10 + plan.defocus_m

    def acquire(role: str, position: tuple[float, float] = (0.0, 0.0), **kw: Any) -> Frame:
        nonlocal frames
        tell(ROLE_PREFIX + role)
        request = {"exposure_s": plan.exposure_s, "probe_position_m": position, **kw}
        frame = microscope.acquire(RonchigramRequest(**request))
        frames += 1
        if progress is not None:
            progress(frames)
        return frame

    def set_knobs(role: str, values: dict[str, float]) -> None:
        tell(ROLE_PREFIX + role)
        microscope.set(values)

    try:
        # 1. repeat frames at two doses at the starting optics
        for exposure in plan.flat_exposures_s:
            for index in range(plan.flat_frames):
                wait = plan.settle_s if index == 0 else 0.0
                acquire(f"flat/{exposure:.6g}", exposure_s=exposure, wait_s=wait)
        # 2. the shadow image under probe shifts (camera rotation)
        set_knobs("rotation", {"C10": base_c10 + plan.rotation_defocus_m})
        d = plan.rotation_shift_m
        for name, position in (
            ("ref", (0.0, 0.0)),
            ("x+", (d, 0.0)),
            ("y+", (0.0, d)),
            ("x-", (-d, 0.0)),
            ("y-", (0.0, -d)),
        ):
            acquire(f"shift/{name}", position, wait_s=plan.settle_s if name == "ref" else 0.0)
        # 3. drift: the same position after waits
        set_knobs("defocus", {"C10": over})
        d = plan.probe_shift_m
        acquire("drift/0", wait_s=plan.settle_s)
        for index, wait in enumerate(plan.drift_waits_s, start=1):
            acquire(f"drift/{index}", wait_s=wait)
        # 4. lens lag: C10 up by lag_step (settled), back down, a frame at each delay, then
        #    settled again; each delay twice, the probe at 0 and at +x: the pattern's shift
        #    between the two reads the defocus at that delay (drift cancels in the ratios)
        shift = (plan.lag_shift_m, 0.0)
        for index, delay in enumerate(plan.lag_delays_s):
            for name, position in (("a", (0.0, 0.0)), ("b", shift)):
                set_knobs(f"lag/{index}/{name}/up", {"C10": over + plan.lag_step_m})
                acquire(f"lag/{index}/{name}/high", position, wait_s=plan.settle_s)
                set_knobs(f"lag/{index}/{name}/step", {"C10": over})
                acquire(
                    f"lag/{index}/{name}/delayed",
                    position,
                    wait_s=delay,
                    exposure_s=lag_exposure(plan, delay),
                )
                acquire(f"lag/{index}/{name}/settled", position, wait_s=plan.settle_s)
        # 5. corrector axes: measure after a + and a - step of each
        for knob, step in plan.sign_steps_m.items():
            if knob not in knobs:
                continue
            base = over if knob == "C10" else start[knob]
            for sign, symbol in ((1.0, "+"), (-1.0, "-")):
                set_knobs(f"signs/{knob}/{symbol}/set", {knob: base + sign * step})
                for name, position in (("ref", (0.0, 0.0)), ("x", (d, 0.0)), ("y", (0.0, d))):
                    wait = plan.settle_s if name == "ref" else 0.0
                    acquire(f"signs/{knob}/{symbol}/{name}", position, wait_s=wait)
            set_knobs(f"signs/{knob}/restore", {knob: base})
        # 6. the flat field: the same defocus over a grid of specimen areas
        if plan.flat_field_grid:
            set_knobs("flatfield", {"C10": over})
            for index, position in enumerate(flat_field_positions(plan)):
                wait = plan.settle_s if index == 0 else 0.0
                acquire("flatfield", position, wait_s=wait)
    finally:
        tell(ROLE_PREFIX + "restore")
        microscope.set({name: start[name] for name in moved if name in start})
    return frames


def record_calibration(
    microscope: Microscope,
    path: str | Path,
    plan: CalibrationPlan | None = None,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Record the calibration plan on ``microscope`` into the new session folder ``path``
    (`emauto.wrappers.recording.RecordingMicroscope`); return the frames taken. The
    microscope is closed with the session."""
    from emauto.wrappers.recording import RecordingMicroscope

    plan = plan or CalibrationPlan()
    meta = {PLAN_METADATA_KEY: plan.model_dump(mode="json"), **(metadata or {})}
    recording = RecordingMicroscope.open(microscope, path, metadata=meta)
    with recording:
        previous = recording.recorder.task

        def label(role: str) -> None:
            recording.recorder.task = role

        try:
            return run_calibration_plan(recording, plan, label)
        finally:
            recording.recorder.task = previous
