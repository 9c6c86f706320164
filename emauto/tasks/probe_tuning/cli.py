"""`emauto dataset`, `emauto train`, `emauto evaluate` and `emauto bench probe-tuning`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emauto.errors import ConfigError
from emauto.io.results import save
from emauto.models.training_options import add_training_options
from emauto.tasks.probe_tuning.policies.registry import METHODS


def _dataset(args: argparse.Namespace) -> int:
    from emauto.tasks.probe_tuning.config import EstimatorDataConfig
    from emauto.tasks.probe_tuning.estimator_data import generate_dataset
    from emauto.units import load_yaml

    config = load_yaml(args.config, EstimatorDataConfig) if args.config else EstimatorDataConfig()
    if args.samples is not None:
        config = config.model_copy(update={"samples": args.samples})
    path = generate_dataset(
        config, args.out, scheduler_address=args.scheduler, n_workers=args.workers
    )
    print(f"wrote {config.samples} samples to {path}")
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The shared training options (`emauto.models.training_options`) as keyword arguments."""
    return {
        "seed": args.seed,
        "n_envs": args.n_envs,
        "device": args.device,
        "hyperparams": args.hyperparams,
    }


def _train(args: argparse.Namespace) -> int:
    from emauto.models.config import EstimatorTrainingConfig
    from emauto.models.training_options import (
        apply_overrides,
        no_tensorboard,
        tensorboard_field,
        tensorboard_log,
    )
    from emauto.tasks.probe_tuning.config import RLTrainingConfig
    from emauto.units import load_yaml

    if args.task == "probe-tuning-decider":
        from emauto.tasks.probe_tuning.decider_training import (
            DeciderTrainingConfig,
            train_decider,
        )

        decider_config = (
            load_yaml(args.config, DeciderTrainingConfig)
            if args.config
            else DeciderTrainingConfig()
        )
        decider_config = apply_overrides(decider_config, **_overrides(args))
        report = train_decider(
            decider_config, args.out, tensorboard_log=tensorboard_log(args.out, args.tensorboard)
        )
        print(json.dumps({"out": str(args.out), **report}, indent=2))
        return 0
    if args.task == "probe-tuning-belief":
        from emauto.tasks.probe_tuning.belief_training import (
            BeliefTrainingConfig,
            train_belief_stop,
        )

        belief_config = (
            load_yaml(args.config, BeliefTrainingConfig) if args.config else BeliefTrainingConfig()
        )
        belief_config = apply_overrides(belief_config, **_overrides(args))
        report = train_belief_stop(
            belief_config,
            args.out,
            scheduler_address=args.scheduler,
            folder=args.data,
            tensorboard_log=tensorboard_log(args.out, args.tensorboard),
        )
        print(json.dumps({"out": str(args.out), **report}, indent=2))
        return 0
    if args.task == "ronchigram-estimator":
        from emauto.tasks.probe_tuning.config import EstimatorDataConfig
        from emauto.tasks.probe_tuning.estimator_data import (
            train_from_data_config,
            train_from_files,
        )

        if bool(args.data) == bool(args.data_config):
            raise ConfigError(
                "--task ronchigram-estimator needs either --data DATASET.npz or --data-config "
                "FILE (generate the dataset in memory)"
            )
        config = (
            load_yaml(args.config, EstimatorTrainingConfig)
            if args.config
            else EstimatorTrainingConfig()
        )
        config = apply_overrides(config, **_overrides(args))
        no_tensorboard(args.tensorboard, "the estimator's training")
        if args.data:
            estimator = train_from_files(args.data, args.out, config)
        else:
            data_config = load_yaml(args.data_config, EstimatorDataConfig)
            estimator = train_from_data_config(
                data_config,
                args.out,
                config,
                scheduler_address=args.scheduler,
                n_workers=args.workers,
            )
        print(json.dumps({"out": str(args.out), **estimator.metadata.validation}, indent=2))
        return 0
    from emauto.tasks.probe_tuning.policies.rl import train_policy

    rl_config = load_yaml(args.config, RLTrainingConfig) if args.config else RLTrainingConfig()
    extra: dict[str, Any] = {}
    if args.algo:
        extra["algo"] = args.algo
    if args.timesteps:
        extra["total_timesteps"] = args.timesteps
    if args.record:
        extra["record_dir"] = str(args.record)
    extra.update(tensorboard_field(rl_config, args.tensorboard))
    rl_config = apply_overrides(rl_config, extra=extra, **_overrides(args))
    out = train_policy(rl_config, args.out, estimator_path=args.estimator)
    print(f"wrote the {rl_config.algo} policy to {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from emauto.tasks.probe_tuning.bench import run_probe_tuning_benchmark

    figures = run_probe_tuning_benchmark(
        ["rl"] if args.policy else [args.method],
        episodes=args.episodes,
        seed=args.seed,
        microscope=args.microscope,
        budget_steps=args.budget,
        policy_path=args.policy,
        progress=True,
        record=args.record,
    )
    print(json.dumps(figures, indent=2))
    return 0


def _bench_probe_tuning(args: argparse.Namespace) -> int:
    from emauto.tasks.probe_tuning.bench import run_probe_tuning_benchmark, save_curves_png
    from emauto.tasks.probe_tuning.config import ProbeTuningConfig
    from emauto.units import load_yaml

    methods = list(METHODS) if "all" in args.method else list(dict.fromkeys(args.method))
    config = load_yaml(args.config, ProbeTuningConfig) if args.config else None
    figures = run_probe_tuning_benchmark(
        methods,
        episodes=args.episodes,
        seed=args.seed,
        microscope=args.microscope,
        budget_steps=args.budget,
        policy_path=args.policy,
        progress=not args.json,
        config=config,
        record=args.record,
    )
    if args.save is not None:
        condition = (config or ProbeTuningConfig()).model_dump(mode="json")
        save(
            {
                "command": "emauto " + " ".join(args.command_argv),
                "microscope": args.microscope,
                "seeds": [args.seed * 100_000, args.seed * 100_000 + args.episodes - 1],
                "condition": condition,
                "methods": figures,
            },
            args.save,
        )
        png = save_curves_png(figures, args.save.with_suffix(".png"), args.microscope)
        print(f"wrote {png}", file=sys.stderr)
    print(json.dumps(figures) if args.json else json.dumps(figures, indent=2))
    return 0


def add_commands(commands: Any) -> None:
    """Register `dataset`, `train` and `evaluate`."""
    dataset = commands.add_parser(
        "dataset", help="generate twin training data for the Ronchigram estimator (Dask)"
    )
    dataset.add_argument("--out", type=Path, required=True, help="output .npz file")
    dataset.add_argument("--config", type=Path, help="EstimatorDataConfig YAML")
    dataset.add_argument("--samples", type=int, help="override the number of samples")
    dataset.add_argument("--scheduler", help="Dask scheduler address (default: LocalCluster)")
    dataset.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    dataset.set_defaults(handler=_dataset)

    train = commands.add_parser("train", help="train the estimator or an RL policy")
    train.add_argument(
        "--task",
        choices=[
            "probe-tuning",
            "probe-tuning-decider",
            "probe-tuning-belief",
            "ronchigram-estimator",
        ],
        default="probe-tuning",
        help="what to train (default: %(default)s; probe-tuning-belief: the learned stop "
        "of rl_belief)",
    )
    train.add_argument("--algo", choices=["ppo", "sac"], help="RL algorithm (probe-tuning)")
    train.add_argument(
        "--config",
        type=Path,
        help="RLTrainingConfig / DeciderTrainingConfig / BeliefTrainingConfig / "
        "EstimatorTrainingConfig YAML",
    )
    train.add_argument("--out", type=Path, required=True, help="output folder or .pt file")
    train.add_argument(
        "--data",
        type=Path,
        help="dataset .npz (ronchigram-estimator); folder of recorded episodes, resumed "
        "if present (probe-tuning-belief)",
    )
    train.add_argument(
        "--data-config",
        type=Path,
        help="EstimatorDataConfig YAML: generate the dataset in memory instead of --data",
    )
    train.add_argument(
        "--scheduler", help="Dask scheduler address (--data-config, probe-tuning-belief)"
    )
    train.add_argument(
        "--workers", type=int, default=2, help="LocalCluster workers (--data-config)"
    )
    train.add_argument("--estimator", type=Path, help="estimator .pt for RL features")
    train.add_argument("--timesteps", type=int, help="override total_timesteps")
    train.add_argument("--record", type=Path, help="record every env's session under DIR")
    add_training_options(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a policy on probe tuning")
    evaluate.add_argument("--policy", help="a trained RL policy folder")
    evaluate.add_argument(
        "--method", choices=METHODS, default="cnn", help="a built-in method (without --policy)"
    )
    _add_episode_options(evaluate)
    evaluate.set_defaults(handler=_evaluate)


def _add_episode_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=20, help="episodes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--microscope", default="sim://", help="microscope URI")
    parser.add_argument("--budget", type=int, default=30, help="Ronchigrams after the first")
    parser.add_argument("--record", type=Path, help="record each method's session under DIR")


def add_bench(bench_tasks: Any) -> None:
    """Register `bench probe-tuning`."""
    bench = bench_tasks.add_parser("probe-tuning", help="every tuning method, same episodes")
    bench.add_argument(
        "--method", nargs="+", choices=[*METHODS, "all"], default=["all"], help="one or more"
    )
    bench.add_argument("--policy", help="RL policy folder (default: the shipped one)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--config", type=Path, help="ProbeTuningConfig YAML (e.g. a lower dose)")
    bench.add_argument("--save", type=Path, help="also write the JSON, with its command, here")
    _add_episode_options(bench)
    bench.set_defaults(handler=_bench_probe_tuning)
