"""`emauto analyze`, `emauto label`, `emauto classifier` and the benchmarks
`emauto bench fewshot | analysis`: on-the-fly image analysis and the patch classifier."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emauto.errors import ConfigError
from emauto.io.results import add_output_options, emit, save


def _analyze(args: argparse.Namespace) -> int:
    from emauto.analysis.analyze import analyze_image, write_result_overlay
    from emauto.io.images import load_image

    loaded = load_image(args.image[0])
    pixel = args.pixel_size if args.pixel_size is not None else loaded.pixel_m
    if len(args.image) > 1:  # a series: registered, averaged, then analysed
        from emauto.analysis.series import analyze_series

        frames = [loaded.data, *(load_image(path).data for path in args.image[1:])]
        result, _ = analyze_series(frames, pixel_m=pixel)
    else:
        previous = load_image(args.previous).data if args.previous else None
        result = analyze_image(loaded.data, pixel_m=pixel, previous=previous, dt_s=args.dt)
    overlay = args.overlay or loaded.path.with_name(f"{loaded.path.stem}_overlay.png")
    write_result_overlay(loaded.data, result, overlay)
    out = {"image": str(loaded.path), **result.as_dict(), "overlay": str(overlay)}
    emit(out, args.json)
    return 0


def _label(args: argparse.Namespace) -> int:
    from emauto.io.images import load_image
    from emauto.models.labels import LabelSession, grid_patches
    from emauto.models.patches import to_features

    session = LabelSession(args.session)
    if args.label_command == "add":
        image = load_image(args.image).data
        session.add(image, args.x, args.y, args.label, args.electrons_per_pixel)
        print(json.dumps({"session": str(session.path), "counts": session.counts()}))
        return 0
    if args.label_command == "list":
        print(json.dumps({"session": str(session.path), "counts": session.counts()}))
        return 0
    classifier = session.classifier()
    image = load_image(args.image).data
    patches, centres = grid_patches(image)
    names, confidence = classifier.predict(to_features(patches, args.electrons_per_pixel))
    out = {
        "session": str(session.path),
        "classes": list(classifier.classes),
        "patches": [
            {"x": float(c[0]), "y": float(c[1]), "label": n, "confidence": round(float(p), 4)}
            for c, n, p in zip(centres, names, confidence, strict=True)
        ],
    }
    emit(out, args.json)
    return 0


def _classifier_train(args: argparse.Namespace) -> int:
    from emauto.models.classifier_training import PatchTrainingConfig, train_to_file

    config = PatchTrainingConfig()
    if args.epochs:
        config = config.model_copy(update={"epochs": args.epochs})
    source = (args.head_only_from or args.out) if args.head_only else None
    classifier = train_to_file(config, args.out, head_only_from=source)
    print(json.dumps({"out": str(args.out), **classifier.metadata.validation}, indent=2))
    return 0


def _bench_fewshot(args: argparse.Namespace) -> int:
    from emauto.bench.fewshot import run_fewshot_benchmark

    try:
        shots = [int(s) for s in args.shots.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(
            f"--shots: expected a comma list of integers, got {args.shots!r}"
        ) from exc
    if not shots or min(shots) < 1:
        raise ConfigError(f"--shots: expected positive integers, got {args.shots!r}")
    result = run_fewshot_benchmark(shots, episodes=args.episodes, seed=args.seed,
                                   progress=not args.json)  # fmt: skip
    save(result, args.save)
    emit(result, args.json)
    return 0


def _bench_analysis(args: argparse.Namespace) -> int:
    from emauto.bench.analysis import run_analysis_benchmark

    result = run_analysis_benchmark(seed=args.seed, images_per_dose=args.images,
                                    progress=not args.json)  # fmt: skip
    save(result, args.save)
    emit(result, args.json)
    return 0


def add_commands(commands: Any) -> None:
    """Register `analyze`, `label` and `classifier`."""
    analyze = commands.add_parser(
        "analyze", help="atom columns, lattice, resolution (and drift) of an image"
    )
    analyze.add_argument(
        "image",
        type=Path,
        nargs="+",
        help=".npy, .tif, .png, .dm3, .dm4 or .emd; several frames of one field: registered "
        "(drift), averaged, then analysed",
    )
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.add_argument("--pixel-size", type=float, help="pixel size in m (overrides the file)")
    analyze.add_argument("--previous", type=Path, help="the previous frame, for drift")
    analyze.add_argument("--dt", type=float, help="time between the frames, s")
    analyze.add_argument("--overlay", type=Path, help="overlay PNG (default: IMAGE_overlay.png)")
    analyze.set_defaults(handler=_analyze)

    label = commands.add_parser("label", help="operator labels for the few-shot classifier")
    actions = label.add_subparsers(dest="label_command", required=True)
    add = actions.add_parser("add", help="label the 32x32 patch centred on (x, y)")
    add.add_argument("--session", type=Path, required=True, help="session .npz")
    add.add_argument("--image", type=Path, required=True, help="raw-count image")
    add.add_argument("--x", type=float, required=True, help="patch centre, pixels")
    add.add_argument("--y", type=float, required=True, help="patch centre, pixels")
    add.add_argument("--label", required=True, help="class name")
    add.add_argument("--electrons-per-pixel", type=float, required=True, help="dose per pixel")
    listing = actions.add_parser("list", help="labels per class")
    listing.add_argument("--session", type=Path, required=True, help="session .npz")
    predict = actions.add_parser("predict", help="classify a grid of patches of an image")
    predict.add_argument("--session", type=Path, required=True, help="session .npz")
    predict.add_argument("--image", type=Path, required=True, help="raw-count image")
    predict.add_argument("--electrons-per-pixel", type=float, required=True, help="dose per pixel")
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    label.set_defaults(handler=_label)

    classifier = commands.add_parser("classifier", help="the patch CNN")
    c_actions = classifier.add_subparsers(dest="classifier_command", required=True)
    train = c_actions.add_parser("train", help="train on survey-twin patches")
    train.add_argument("--out", type=Path, required=True, help="output .pt")
    train.add_argument("--epochs", type=int, help="override the epochs")
    train.add_argument(
        "--head-only",
        action="store_true",
        help="keep the CNN of --from (default: --out) and train only the few-shot head",
    )
    train.add_argument("--from", dest="head_only_from", type=Path, help="with --head-only")
    classifier.set_defaults(handler=_classifier_train)


def add_bench(bench_tasks: Any) -> None:
    """Register `bench fewshot` and `bench analysis`."""
    fewshot = bench_tasks.add_parser("fewshot", help="few-shot accuracy and latency per shot")
    fewshot.add_argument("--shots", default="1,5,10", help="comma list (default: %(default)s)")
    fewshot.add_argument(
        "--episodes", type=int, default=20, help="episodes per shot (default: %(default)s)"
    )
    analysis = bench_tasks.add_parser("analysis", help="atom finding against twin ground truth")
    analysis.add_argument("--images", type=int, default=3, help="images per dose")
    add_output_options(fewshot, seed=0)
    fewshot.set_defaults(handler=_bench_fewshot)
    add_output_options(analysis, seed=1)
    analysis.set_defaults(handler=_bench_analysis)
