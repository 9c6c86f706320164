"""`emauto bench sparse-scan`, `emauto scan` and `emauto train-scan`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emauto.errors import ConfigError
from emauto.io.results import add_output_options, command_line, save
from emauto.models.training_options import add_training_options
from emauto.tasks.sparse_scan.registry import (
    DEFAULT_RECONSTRUCTION,
    RECONSTRUCTIONS,
    STRATEGIES,
)


def _bench_sparse_scan(args: argparse.Namespace) -> int:
    from emauto.tasks.sparse_scan.bench import (
        DEFAULT_RECONSTRUCTIONS,
        run_sparse_scan_benchmark,
    )

    if args.image:
        from emauto.io.images import load_image

        loaded = load_image(args.image)
        images = {Path(args.image).name: loaded.data}
        pixel_m: dict[str, float | None] = {Path(args.image).name: loaded.pixel_m}
    else:
        from emauto.tasks.sparse_scan.twin_images import BENCH_FOV_M, benchmark_images

        images = benchmark_images((args.size, args.size))
        pixel_m = {name: BENCH_FOV_M[name] / args.size for name in images}
    keep: dict[str, Any] | None = {} if args.out else None
    result = run_sparse_scan_benchmark(
        images,
        coverage=args.coverage,
        dose_e=args.dose,
        seed=args.seed,
        strategies=args.strategies or STRATEGIES.names(),
        reconstruction=args.reconstruction,
        reconstructions=args.reconstructions or DEFAULT_RECONSTRUCTIONS,
        keep=keep,
        timing_repeats=args.timing_repeats,
        equal_time=args.equal_time,
    )
    if args.out and keep is not None:
        from emauto.tasks.sparse_scan.pictures import save_reconstructions

        save_reconstructions(keep, images, Path(args.out), args.coverage, pixel_m)
    if args.save is not None:  # keyed by the command as typed (`emauto.cli.main`)
        save(result, args.save, key=command_line(getattr(args, "command_argv", sys.argv[1:])))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def _scan(args: argparse.Namespace) -> int:
    from emauto.tasks.sparse_scan.run import run_scan

    summary = run_scan(
        args.microscope,
        coverage=args.coverage,
        strategy=args.strategy,
        out=args.out,
        shape=(args.size, args.size),
        fov_m=args.fov,
        dwell_s=args.dwell,
        reconstruction=args.reconstruction,
        seed=args.seed,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _train_scan(args: argparse.Namespace) -> int:
    from emauto.models.config import CompletionTrainingConfig
    from emauto.models.training_options import apply_overrides, no_tensorboard, tensorboard_log
    from emauto.tasks.sparse_scan.config import ScanRLConfig
    from emauto.units import load_yaml

    overrides: dict[str, Any] = {
        "seed": args.seed,
        "n_envs": args.n_envs,
        "device": args.device,
        "hyperparams": args.hyperparams,
    }
    if args.model == "completion":
        from emauto.tasks.sparse_scan.completion_training import train

        config = (
            load_yaml(args.config, CompletionTrainingConfig)
            if args.config
            else CompletionTrainingConfig()
        )
        config = apply_overrides(config, **overrides)
        no_tensorboard(args.tensorboard, "the completion network's training")
        model = train(config, args.out)
        print(json.dumps({"out": str(args.out), **model.metadata}, indent=2))
        return 0
    from emauto.tasks.sparse_scan.policies.rl import train_scan_policy

    rl = load_yaml(args.config, ScanRLConfig) if args.config else ScanRLConfig()
    extra = {"total_timesteps": args.timesteps} if args.timesteps else None
    rl = apply_overrides(rl, extra=extra, **overrides)
    folder = train_scan_policy(
        rl, args.out, tensorboard_log=tensorboard_log(args.out, args.tensorboard)
    )
    print(f"wrote the scan policy to {folder}")
    return 0


def _coverage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"coverage must be in (0, 1], got {value:g}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"expected a positive number, got {value:g}")
    return value


def add_bench(bench_tasks: Any) -> None:
    """Register `bench sparse-scan`."""
    bench = bench_tasks.add_parser(
        "sparse-scan", help="every sparse-scan strategy on twin images or your own file"
    )
    bench.add_argument("--image", help="a .npy, .tif, .png, .dm3, .dm4 or .emd image")
    bench.add_argument("--coverage", type=_coverage, required=True, help="fraction of pixels")
    bench.add_argument(
        "--dose", type=_positive, help="electrons at full intensity per position (default: none)"
    )
    bench.add_argument(
        "--strategies", nargs="+", choices=STRATEGIES.names(), help="strategies (default: all)"
    )
    bench.add_argument(
        "--reconstruction",
        choices=RECONSTRUCTIONS.names(),
        default=DEFAULT_RECONSTRUCTION,
        help="the headline reconstruction (default: %(default)s, chosen per image without "
        "ground truth from held-out samples)",
    )
    bench.add_argument(
        "--reconstructions",
        nargs="+",
        choices=RECONSTRUCTIONS.names(),
        help="the methods scored beside it (default: every fast one)",
    )
    bench.add_argument(
        "--timing-repeats",
        type=int,
        default=1,
        help="runs of each reconstruction; its median time is reported (default: 1)",
    )
    bench.add_argument(
        "--no-equal-time",
        dest="equal_time",
        action="store_false",
        help="leave out the adaptive strategies' margins (the static patterns' re-runs at "
        "each adaptive scan's time)",
    )
    bench.add_argument("--size", type=int, default=256, help="twin image size (pixels)")
    bench.add_argument("--out", help="folder for PNGs of the reconstructions")
    add_output_options(bench, seed=0, keyed=True)
    bench.set_defaults(handler=_bench_sparse_scan)


def add_commands(commands: Any) -> None:
    """Register `scan` and `train-scan`."""
    scan = commands.add_parser("scan", help="a sparse scan on any microscope, reconstructed")
    scan.add_argument("--microscope", default="sim://", help="microscope URI")
    scan.add_argument(
        "--coverage", type=_coverage, required=True, help="fraction of the raster's pixels"
    )
    scan.add_argument(
        "--strategy",
        choices=STRATEGIES.names(),
        default="jittered",
        help="sampling strategy (default: %(default)s)",
    )
    scan.add_argument("--out", type=Path, required=True, help="output folder")
    scan.add_argument("--size", type=int, default=256, help="raster pixels per side")
    scan.add_argument("--fov", type=_positive, help="field of view, m (default: scan_fov knob)")
    scan.add_argument("--dwell", type=_positive, help="dwell per position, s (default: knob)")
    scan.add_argument(
        "--reconstruction",
        choices=RECONSTRUCTIONS.names(),
        default=DEFAULT_RECONSTRUCTION,
        help="reconstruction (default: %(default)s, chosen per image on held-out samples)",
    )
    scan.add_argument("--seed", type=int, default=0, help="seed of the sampling pattern")
    scan.set_defaults(handler=_scan)

    train = commands.add_parser(
        "train-scan", help="train the completion network or the RL scan policy"
    )
    train.add_argument(
        "model",
        choices=["completion", "rl"],
        help="completion: the completion network; rl: the PPO scan policy",
    )
    train.add_argument("--config", type=Path, help="CompletionTrainingConfig / ScanRLConfig")
    train.add_argument("--out", type=Path, required=True, help=".pt file or policy folder")
    train.add_argument("--timesteps", type=int, help="override total_timesteps (rl)")
    add_training_options(train)
    train.set_defaults(handler=_train_scan)
