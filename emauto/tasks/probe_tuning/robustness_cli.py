"""`emauto bench robustness`: the probe-tuning methods on perturbed twins (see
`emauto.tasks.probe_tuning.robustness`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from emauto.drivers.sim.perturbations import PERTURBATIONS
from emauto.io.results import add_output_options, emit, save
from emauto.tasks.probe_tuning.policies.registry import METHODS


def _bench_robustness(args: argparse.Namespace) -> int:
    from emauto.drivers.sim.perturbations import perturbation_path
    from emauto.tasks.probe_tuning.config import ProbeTuningConfig
    from emauto.tasks.probe_tuning.robustness import run_robustness_suite
    from emauto.units import load_yaml

    methods = list(dict.fromkeys(args.methods))
    chosen = list(PERTURBATIONS) if "all" in args.perturbation else args.perturbation
    perturbations = list(dict.fromkeys(chosen))
    config = load_yaml(args.config, ProbeTuningConfig) if args.config else None
    calibrations = _calibrations(args.calibrations, perturbations)
    suite = run_robustness_suite(
        methods,
        perturbations,
        episodes=args.episodes,
        seed=args.seed,
        budget_steps=args.budget,
        policy_path=args.policy,
        config=config,
        directory=args.config_dir,
        calibrations=calibrations,
    )
    if args.save is not None:
        save(
            {
                "command": "emauto " + " ".join(args.command_argv),
                "seeds": [args.seed * 100_000, args.seed * 100_000 + args.episodes - 1],
                "condition": (config or ProbeTuningConfig()).model_dump(mode="json"),
                "perturbations": {
                    name: {
                        "what": PERTURBATIONS[name],
                        "file": str(perturbation_path(name, args.config_dir)),
                    }
                    for name in perturbations
                },
                "calibrations": {
                    name: calibration.model_dump(mode="json")
                    for name, calibration in calibrations.items()
                },
                "results": suite,
            },
            args.save,
        )
    emit(suite, args.json)
    return 0


def _calibrations(folder: Path | None, perturbations: list[str]) -> dict[str, Any]:
    """``FOLDER/NAME.yaml`` (an `InstrumentCalibration`) for each perturbation that has one."""
    from emauto.errors import ConfigError
    from emauto.wrappers.calibrated import load_instrument_calibration

    if folder is None:
        return {}
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of calibrations")
    found = {
        name: load_instrument_calibration(folder / f"{name}.yaml")
        for name in perturbations
        if (folder / f"{name}.yaml").is_file()
    }
    if not found:
        raise ConfigError(f"{folder}: no NAME.yaml for any of {perturbations}")
    return found


def add_commands(commands: Any) -> None:
    """No commands of its own: the suite is a benchmark."""


def add_bench(bench_tasks: Any) -> None:
    """Register `bench robustness`."""
    bench = bench_tasks.add_parser(
        "robustness",
        help="probe-tuning methods on perturbed twins, one perturbation at a time",
    )
    bench.add_argument(
        "--methods", nargs="+", choices=METHODS, default=["shift"], help="one or more"
    )
    bench.add_argument(
        "--perturbation",
        nargs="+",
        choices=[*PERTURBATIONS, "all"],
        default=["all"],
        help="one or more perturbations (configs/robustness/NAME.yaml); 'none' is the reference",
    )
    bench.add_argument(
        "--episodes", type=int, default=20, help="episodes per method and perturbation"
    )
    bench.add_argument("--budget", type=int, default=30, help="Ronchigrams after the first")
    bench.add_argument("--policy", help="RL policy folder (default: the shipped one)")
    bench.add_argument("--config", type=Path, help="ProbeTuningConfig YAML (e.g. a lower dose)")
    bench.add_argument(
        "--config-dir",
        type=Path,
        help="folder of the perturbation files (default: configs/robustness of the checkout)",
    )
    bench.add_argument(
        "--calibrations",
        type=Path,
        help=(
            "folder of InstrumentCalibration YAML files, NAME.yaml per perturbation: its "
            "twin is seen through emauto.wrappers.calibrated.CalibratedMicroscope"
        ),
    )
    add_output_options(bench, seed=0)
    bench.set_defaults(handler=_bench_robustness)
