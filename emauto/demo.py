"""`emauto demo`: drive the simulated microscope end to end and write pictures.

Until the agent daemon exists, the demo is a scripted operator: it detunes the probe,
takes a Ronchigram, restores the aligned probe, takes another, and records an atomic-
resolution ADF image of SrTiO3, all through the Microscope contract.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import emauto
from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.imaging import save_frame_png
from emauto.microscope import ImageRequest, RasterScan, RonchigramRequest


def _say(message: str) -> None:
    print(f"[emauto demo] {message}", file=sys.stderr, flush=True)


def _twin(uri: str) -> SimulatedMicroscope:
    scope = emauto.connect(uri)
    assert isinstance(scope, SimulatedMicroscope)
    return scope


def run_demo(out_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Run the demo; write PNGs and ``summary.json`` into ``out_dir``; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict[str, Any] = {"emauto": emauto.__version__, "seed": seed, "files": []}

    _say("building the amorphous-carbon twin (cached after the first run) ...")
    with _twin(f"sim://?specimen=amorphous_carbon&seed={seed}") as scope:
        aberrated = {"C10": -40e-9, "C12a": 15e-9, "C21b": 200e-9, "C23a": 150e-9}
        for label, setpoints in (
            ("aberrated", aberrated),
            ("aligned", {name: 0.0 for name in aberrated}),
        ):
            scope.set(setpoints)
            scope.acquire(RonchigramRequest(exposure_s=0.1))  # let the lenses settle
            frame = scope.acquire(RonchigramRequest(exposure_s=0.01))
            strehl = scope.strehl_ratio()
            name = "ronchigram.png" if label == "aligned" else f"ronchigram_{label}.png"
            path = save_frame_png(frame, out / name, f"Ronchigram, {label}, Strehl {strehl:.2f}")
            summary[f"strehl_{label}"] = round(strehl, 4)
            summary["files"].append(str(path))
            _say(f"wrote {path}")

    _say("building the SrTiO3 [001] twin (cached after the first run) ...")
    with _twin(f"sim://?specimen=srtio3&seed={seed}") as scope:
        scope.set({"scan_fov": 4e-9, "scan_dwell": 4e-6})
        frame = scope.acquire(ImageRequest(detector="adf", scan=RasterScan(shape=(256, 256))))
        path = save_frame_png(frame, out / "adf_srtio3.png", "HAADF, SrTiO3 [001], 4 nm")
        summary["adf_dose_e_per_A2"] = round(frame.dose_e_per_m2 * 1e-20, 1)
        summary["files"].append(str(path))
        _say(f"wrote {path}")
        scope.safe()
        summary["beam_blanked_at_exit"] = scope.read().beam_blanked

    summary["wall_s"] = round(time.perf_counter() - started, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
