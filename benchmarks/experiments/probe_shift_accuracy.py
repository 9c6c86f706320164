"""Experiment: how well one probe-shift measurement reads the aberrations on the twin.

Each trial restarts the twin from its own seed, sets a random near-aligned state (C1 and A1
within +-3 nm, B2 and A2 within +-60 nm, C3 within +-1 um, untuned), adds the policy's
+40 nm probe defocus, takes a reference Ronchigram after the lenses settle, and measures
with `probe_shift.measure` (two frames beside the reference). Prints as JSON
the fraction of measurements the fit refused (patches that disagree, `MAX_MISFIT_M`) and,
over the accepted ones, per tuned coefficient, the RMS and median absolute error (nm)
against the twin's ground truth and the gain (slope of the reading on the truth, 1 =
unbiased).

    .venv/bin/python benchmarks/experiments/probe_shift_accuracy.py --trials 40
    .venv/bin/python benchmarks/experiments/probe_shift_accuracy.py --microscope \
        "sim://?effects=none"   # without scan noise, drift, lens lag and detector noise
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import emauto
from emauto.microscope import RonchigramRequest
from emauto.tasks.probe_tuning.config import TUNING_KNOB_GROUPS
from emauto.tasks.probe_tuning.policies.probe_shift import DEFAULT_DELTA_M, measure

KNOBS = ("C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b")
WIDTHS_M = {"C10": 3e-9, "C12": 3e-9, "C21": 60e-9, "C23": 60e-9, "C30": 1e-6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--probe-defocus", type=float, default=40e-9, help="m")
    parser.add_argument("--delta", type=float, default=DEFAULT_DELTA_M, help="probe shift, m")
    parser.add_argument("--microscope", default="sim://")
    args = parser.parse_args()

    scope = emauto.connect(args.microscope)
    aligned = scope.read().knobs
    knobs = [k for group in TUNING_KNOB_GROUPS.values() for k in group if k in aligned]
    rng = np.random.default_rng(args.seed)
    truths, readings, refused = [], [], 0
    for trial in range(args.trials):
        scope.restart(1000 + trial)  # type: ignore[attr-defined]
        setpoints = {k: aligned[k] + rng.uniform(-1, 1) * WIDTHS_M.get(k[:3], 0.0) for k in knobs}
        setpoints["C10"] += args.probe_defocus
        scope.set(setpoints)
        position = (float(rng.uniform(-1e-7, 1e-7)), float(rng.uniform(-1e-7, 1e-7)))
        reference = scope.acquire(
            RonchigramRequest(exposure_s=1e-2, probe_position_m=position, wait_s=0.2)
        )
        try:
            fit, _ = measure(scope, position, KNOBS, args.delta, reference=reference)
        except ValueError:
            refused += 1
            continue
        truth = scope.true_aberrations().to_dict()  # type: ignore[attr-defined]
        truths.append([truth[k] - aligned[k] for k in KNOBS])
        readings.append([fit[k] for k in KNOBS])
    scope.close()
    truth_nm, reading_nm = np.array(truths) * 1e9, np.array(readings) * 1e9
    error = reading_nm - truth_nm
    figures = {}
    for j, name in enumerate(KNOBS):
        gain = np.polyfit(truth_nm[:, j], reading_nm[:, j], 1)[0]
        figures[name] = {
            "rms_nm": round(float(np.sqrt(np.mean(error[:, j] ** 2))), 2),
            "median_abs_nm": round(float(np.median(np.abs(error[:, j]))), 2),
            "gain": round(float(gain), 3),
        }
    summary = {"trials": args.trials, "microscope": args.microscope, "refused": refused}
    print(json.dumps({**summary, **figures}))


if __name__ == "__main__":
    main()
