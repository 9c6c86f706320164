"""`emauto calibrate SESSION --out sim.yaml` (fit the twin's instrument parameters from a
recorded calibration session, optionally recording it first) and
`emauto bench calibration` (the fit on twins with hidden parameters)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from emauto.io.results import add_save_option, print_result, save


def _format(value: float, sigma: float, unit: str) -> str:
    if not math.isfinite(value):
        return "nan"
    return f"{value:.6g} ± {sigma:.2g} {unit}".rstrip()


def _calibrate(args: argparse.Namespace) -> int:
    from emauto.calibration.fit import (
        fit_session,
        write_instrument_calibration,
        write_sim_config,
    )
    from emauto.errors import ConfigError

    if args.plan is not None and args.record is None:
        raise ConfigError("--plan goes with --record (the plan of a recorded session is in it)")
    if args.record is not None:
        import emauto
        from emauto.calibration.plan import CalibrationPlan, record_calibration
        from emauto.units import load_yaml

        plan = load_yaml(args.plan, CalibrationPlan) if args.plan else CalibrationPlan()
        microscope = emauto.connect(args.record)
        frames = record_calibration(microscope, args.session, plan, {"backend_uri": args.record})
        print(f"recorded {frames} frames into {args.session}", flush=True)
    result = fit_session(args.session)
    out: dict[str, Any] = {"session": str(args.session), **result.to_dict()}
    if args.out is not None:
        write_sim_config(result, args.out)
        out["out"] = str(args.out)
    if args.instrument is not None:
        write_instrument_calibration(result, args.instrument)
        out["instrument"] = str(args.instrument)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'parameter':32s} fitted")
    for name, estimate in result.estimates.items():
        print(f"{name:32s} {_format(estimate.value, estimate.sigma, estimate.unit)}")
    for name, sign in result.signs.items():
        response = result.responses[name]
        word = {1: "+", -1: "- (flipped)", 0: "undetermined"}[sign]
        print(
            f"{'axis ' + name:32s} {word}  (response {response.value:.3g} ± {response.sigma:.2g})"
        )
    for note in result.notes:
        print(f"note: {note}")
    if args.out is not None:
        print(f"wrote {args.out}")
    if args.instrument is not None:
        print(f"wrote {args.instrument}")
    return 0


def _bench_calibration(args: argparse.Namespace) -> int:
    from emauto.bench.calibration import run_calibration_benchmark

    result = run_calibration_benchmark(seeds=args.seeds, twins=args.twins)
    save(result, args.save)
    if not args.per_twin:
        result = {k: v for k, v in result.items() if k != "per_twin"}
    print_result(result, args.json)
    return 0


def add_commands(commands: Any) -> None:
    """Register `calibrate`."""
    calibrate = commands.add_parser(
        "calibrate",
        help="fit the twin's instrument parameters from a recorded calibration session",
        description="Fit camera scale and rotation, aperture, gain, noise, dark offset, "
        "contrast, dose, drift, lens lag and corrector axis signs from a session recorded "
        "with the calibration plan; write them as a partial SimConfig (sim://?config=FILE).",
    )
    calibrate.add_argument("session", type=Path, help="the session folder to fit (or to record)")
    calibrate.add_argument(
        "--out", type=Path, default=None, help="write the fitted partial SimConfig YAML here"
    )
    calibrate.add_argument(
        "--record",
        metavar="URI",
        default=None,
        help="first record the calibration plan on this microscope (e.g. sim://, "
        "tcp://host:port) into SESSION, a new folder",
    )
    calibrate.add_argument(
        "--plan",
        type=Path,
        default=None,
        help="with --record: a YAML CalibrationPlan (default: the built-in plan)",
    )
    calibrate.add_argument(
        "--instrument",
        type=Path,
        default=None,
        help="write what the driver reports wrong (camera scale, flipped axes, lens settling) "
        "as an InstrumentCalibration YAML for emauto.wrappers.calibrated.CalibratedMicroscope",
    )
    calibrate.add_argument("--json", action="store_true", help="print one JSON object")
    calibrate.set_defaults(handler=_calibrate)


def add_bench(bench_tasks: Any) -> None:
    """Register `bench calibration`."""
    from emauto.bench.calibration_seeds import SEED_SET_NAMES

    bench = bench_tasks.add_parser(
        "calibration", help="calibration on twins with hidden, randomly drawn parameters"
    )
    bench.add_argument(
        "--seeds",
        choices=SEED_SET_NAMES,
        default="report",
        help="the seed set: dev, dev2 (for developing) or report (the figures reported)",
    )
    bench.add_argument(
        "--twins", type=int, default=20, help="hidden-parameter twins (default: %(default)s)"
    )
    bench.add_argument(
        "--per-twin", action="store_true", help="print every twin's errors too (always saved)"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    add_save_option(bench)
    bench.set_defaults(handler=_bench_calibration)
