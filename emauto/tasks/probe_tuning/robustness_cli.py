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
    suite = run_robustness_suite(
        methods,
        perturbations,
        episodes=args.episodes,
        seed=args.seed,
        budget_steps=args.budget,
        policy_path=args.policy,
        config=config,
        directory=args.config_dir,
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
                "results": suite,
            },
            args.save,
        )
    emit(suite, args.json)
    return 0


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
    bench.add_argument("--episodes", type=int, default=20, help="episodes (default: %(default)s)")
    bench.add_argument("--budget", type=int, default=30, help="Ronchigrams after the first")
    bench.add_argument("--policy", help="RL policy folder (default: the shipped one)")
    bench.add_argument("--config", type=Path, help="ProbeTuningConfig YAML (e.g. a lower dose)")
    bench.add_argument(
        "--config-dir",
        type=Path,
        help="folder of the perturbation files (default: configs/robustness of the checkout)",
    )
    add_output_options(bench, seed=0)
    bench.set_defaults(handler=_bench_robustness)
