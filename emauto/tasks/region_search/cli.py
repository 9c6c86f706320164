"""`emauto region-search` (train the RL policy) and `emauto bench region-search`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from emauto.io.results import add_output_options, emit, save
from emauto.models.training_options import add_training_options
from emauto.tasks.region_search.policies import POLICIES


def _region_train(args: argparse.Namespace) -> int:
    from emauto.models.training_options import apply_overrides, tensorboard_log
    from emauto.tasks.region_search.policies.rl import RegionTrainingConfig, train_region_policy
    from emauto.units import load_yaml

    training = (
        load_yaml(args.config, RegionTrainingConfig) if args.config else RegionTrainingConfig()
    )
    training = apply_overrides(
        training,
        seed=args.seed,
        n_envs=args.n_envs,
        device=args.device,
        hyperparams=args.hyperparams,
        extra={"total_timesteps": args.timesteps} if args.timesteps else None,
    )
    out = train_region_policy(
        args.out, training=training, tensorboard_log=tensorboard_log(args.out, args.tensorboard)
    )
    print(f"wrote the region-search policy to {out}")
    return 0


def _bench_region(args: argparse.Namespace) -> int:
    from emauto.tasks.region_search.bench import run_region_search_benchmark

    methods = list(POLICIES) if args.method == "all" else [args.method]
    result = run_region_search_benchmark(
        methods, episodes=args.episodes, seed=args.seed, max_area=args.max_area,
        policy_path=args.policy, progress=not args.json,
    )  # fmt: skip
    save(result, args.save)
    emit(result, args.json)
    return 0


def add_commands(commands: Any) -> None:
    """Register `region-search`."""
    region = commands.add_parser("region-search", help="the region-search RL policy")
    r_actions = region.add_subparsers(dest="region_command", required=True)
    r_train = r_actions.add_parser("train", help="train PPO on emauto/RegionSearch-v0")
    r_train.add_argument("--out", type=Path, required=True, help="output folder")
    r_train.add_argument("--config", type=Path, help="RegionTrainingConfig YAML")
    r_train.add_argument("--timesteps", type=int, help="override total_timesteps (default: 4096)")
    add_training_options(r_train)
    region.set_defaults(handler=_region_train)


def add_bench(bench_tasks: Any) -> None:
    """Register `bench region-search`."""
    region = bench_tasks.add_parser("region-search", help="targets found against area and dose")
    region.add_argument(
        "--method", choices=[*POLICIES, "all"], default="all", help="policy (default: %(default)s)"
    )
    region.add_argument("--episodes", type=int, default=3, help="held-out fields")
    region.add_argument("--max-area", type=float, default=0.5, help="stop at this area fraction")
    region.add_argument("--policy", help="RL policy folder (default: the shipped one)")
    add_output_options(region, seed=0)
    region.set_defaults(handler=_bench_region)
