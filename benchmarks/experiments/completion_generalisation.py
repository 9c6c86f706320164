"""How the completion network does on kinds of images it was never trained on.

Usage (from the repository root; prints JSON)::

    git show 063eb4a:emauto/models/weights/sparse_scan_completion.pt > build/completion_twin.pt
    python benchmarks/experiments/completion_generalisation.py \
        --old build/completion_twin.pt > benchmarks/completion-generalisation-latest.json

``--new`` defaults to the shipped network (``emauto/models/weights/sparse_scan_completion.pt``);
``--old`` is the network it replaces (trained on seed-1 twin images only), taken from the
commit before.

Held-out kinds (none is made by `emauto.tasks.sparse_scan.domain_images`, the new network's
only training data; every image 256x256, min-max normalised as the sparse-scan benchmark
does):

- ``photographs``: scikit-image's ``camera``, ``coins``, ``moon``, ``page``, ``text``,
  ``cell``, ``brick``, ``gravel`` (centre crops).
- ``twin``: the sparse-scan benchmark's twin images (`twin_images.benchmark_images`: seed-0
  amorphous carbon 8 nm, Au on carbon 16 nm, SrTiO3 8 nm; noise-free abTEM-based ADF). The
  OLD network was trained on seed-1 twin images of the same specimens: for it this kind is
  not unseen.
- ``survey``: the region-search survey field (`drivers.sim.survey`, Au particles on holey
  carbon with contamination, Poisson noise), seed 11, 60 nm and 20 nm fields centred on the
  particle with the most others within 30 nm.
- ``synthetic``: `emauto.analysis.synthetic` images with Poisson noise: perovskite,
  honeycomb and dumbbell crystals (20 pm pixels), particles, blob beside vacuum, fringes.

Each image is sampled without noise (as the benchmark's default) by ``jittered``, ``spiral``
and ``raster_lines`` at coverages 1/20 and 1/100 and reconstructed by ``linear``, ``tv``,
``cs`` (`reconstruct`) and both networks; ``validated_old`` / ``validated_new``: the choice
`validation.validate` makes among linear, tv, cs and that network (the same held-out folds
and area weights), with how often it picks the network. Figures are RMS error in % of the
[0, 1] range, means over images and strategies. ``generated`` (in-distribution, for
reference, not a held-out kind): four `domain_image` images from test seeds no training
used. No setting of the networks was chosen on any of these images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emauto.models.completion import DEFAULT_WEIGHTS, CompletionModel, load_completion
from emauto.tasks.sparse_scan.reconstruct import cs, linear, tv
from emauto.tasks.sparse_scan.sampling import normalise, sparse_image
from emauto.tasks.sparse_scan.strategies import make_plan
from emauto.tasks.sparse_scan.validation import holdout_folds, sample_areas

SIZE = 256
COVERAGES = (0.05, 0.01)
STRATEGIES = ("jittered", "spiral", "raster_lines")
PHOTOS = ("camera", "coins", "moon", "page", "text", "cell", "brick", "gravel")
HELD_OUT_GROUPS = ("photographs", "twin", "survey", "synthetic")


def _crop(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=2)
    if min(image.shape) < SIZE:  # upsample small images to the size (nearest)
        factor = -(-SIZE // min(image.shape))
        image = np.kron(image, np.ones((factor, factor)))
    y0 = (image.shape[0] - SIZE) // 2
    x0 = (image.shape[1] - SIZE) // 2
    return image[y0 : y0 + SIZE, x0 : x0 + SIZE]


def held_out_images() -> dict[str, dict[str, np.ndarray]]:
    """``{group: {name: normalised 256x256 image}}``."""
    from skimage import data

    from emauto.analysis.synthetic import crystal_image, non_atomic_image
    from emauto.drivers.sim.survey import SurveyConfig, SurveyMicroscope
    from emauto.microscope import ImageRequest, RasterScan
    from emauto.tasks.sparse_scan.twin_images import benchmark_images

    groups: dict[str, dict[str, np.ndarray]] = {}
    groups["photographs"] = {name: normalise(_crop(getattr(data, name)())) for name in PHOTOS}
    groups["twin"] = {k: normalise(v) for k, v in benchmark_images((SIZE, SIZE)).items()}
    scope = SurveyMicroscope(SurveyConfig(seed=11))
    centres = scope.field.centres_m
    crowd = (np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1)) < 30e-9).sum(1)
    stage = centres[int(np.argmax(crowd))]  # the particle with the most within 30 nm
    survey = {}
    for fov in (60e-9, 20e-9):
        scope.set({"scan_fov": fov, "stage_x": float(stage[0]), "stage_y": float(stage[1])})
        frame = scope.acquire(ImageRequest(detector="adf", scan=RasterScan(shape=(SIZE, SIZE))))
        survey[f"survey_{round(fov * 1e9)}nm"] = normalise(np.asarray(frame.data))
    scope.close()
    groups["survey"] = survey
    synthetic = {}
    for i, structure in enumerate(("perovskite", "honeycomb", "dumbbell")):
        image = crystal_image(structure, seed=70_000 + i, shape=(SIZE, SIZE), pixel_m=20e-12)
        synthetic[structure] = normalise(image.image)
    for i, kind in enumerate(("particles", "blob_vacuum", "fringes")):
        image = non_atomic_image(kind, seed=71_000 + i, shape=(SIZE, SIZE))
        synthetic[kind] = normalise(image.image)
    groups["synthetic"] = synthetic
    return groups


def generated_images() -> dict[str, np.ndarray]:
    """Four in-distribution images from test seeds (never trained on)."""
    from emauto.tasks.sparse_scan.completion_training import TEST_SEED_BASE
    from emauto.tasks.sparse_scan.domain_images import domain_image

    out = {}
    for i in range(4):
        image = domain_image(TEST_SEED_BASE + 500 + i, (SIZE, SIZE))
        out[f"{image.kind}_{i}"] = image.image
    return out


Method = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _methods(old: CompletionModel, new: CompletionModel) -> dict[str, Method]:
    return {
        "linear": lambda v, m, b: b,
        "tv": lambda v, m, b: tv(v, m, base=b),
        "cs": lambda v, m, b: cs(v, m, base=b),
        "completion_old": lambda v, m, b: old.complete(b, v, m),
        "completion_new": lambda v, m, b: new.complete(b, v, m),
    }


def _validation_errors(
    values: np.ndarray, mask: np.ndarray, methods: dict[str, Method]
) -> dict[str, float]:
    """`validation.validate`'s pooled, area-weighted held-out RMS of every method (%)."""
    weight = sample_areas(mask)
    squares = dict.fromkeys(methods, 0.0)
    total = 0.0
    for held in holdout_folds(mask):
        train = mask & ~held
        train_values = np.where(train, values, 0.0)
        base = linear(train_values, train)
        for name, method in methods.items():
            image = method(train_values, train, base)
            squares[name] += float(np.sum(weight[held] * (image[held] - values[held]) ** 2))
        total += float(weight[held].sum())
    return {name: 100 * float(np.sqrt(squares[name] / total)) for name in methods}


def evaluate(
    image: np.ndarray, coverage: float, strategy: str, methods: dict[str, Method]
) -> dict[str, object]:
    """True RMS (%) of every method and of the two validated choices on one scan."""
    plan = make_plan(strategy, image.shape, coverage, seed=0)
    values, mask = sparse_image(plan, image, None)
    base = linear(values, mask)
    rms = {
        name: 100 * float(np.sqrt(np.mean((method(values, mask, base) - image) ** 2)))
        for name, method in methods.items()
    }
    validation = _validation_errors(values, mask, methods)
    picked = {}
    for which in ("old", "new"):
        candidates = ("linear", "tv", "cs", f"completion_{which}")
        choice = min(candidates, key=lambda m: (validation[m], candidates.index(m)))
        picked[which] = choice
        rms[f"validated_{which}"] = rms[choice]
    return {"rms_error_pct": rms, "picked": picked}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the network replaced (.pt)")
    parser.add_argument("--new", type=Path, default=DEFAULT_WEIGHTS, help="the new network")
    args = parser.parse_args()
    started = time.perf_counter()
    old, new = load_completion(args.old), load_completion(args.new)
    methods = _methods(old, new)
    groups = {**held_out_images(), "generated": generated_images()}
    results: dict[str, dict[str, object]] = {}
    per_image: dict[str, dict[str, object]] = {}
    for coverage in COVERAGES:
        key = f"1/{round(1 / coverage)}"
        by_group: dict[str, object] = {}
        all_rows: list[dict[str, float]] = []
        for group, images in groups.items():
            rows = []
            picks = {"old": 0, "new": 0}
            for name, image in images.items():
                for strategy in STRATEGIES:
                    print(f"[generalisation] {key} {group}/{name} {strategy}", file=sys.stderr)
                    result = evaluate(image, coverage, strategy, methods)
                    row = result["rms_error_pct"]
                    assert isinstance(row, dict)
                    rows.append(row)
                    picked = result["picked"]
                    assert isinstance(picked, dict)
                    picks["old"] += picked["old"] == "completion_old"
                    picks["new"] += picked["new"] == "completion_new"
                    per_image.setdefault(key, {})[f"{group}/{name}/{strategy}"] = {
                        "rms_error_pct": {k: round(v, 3) for k, v in row.items()},
                        "picked": picked,
                    }
            by_group[group] = {
                "images": list(images),
                "scans": len(rows),
                "rms_error_pct": _mean(rows),
                "network_picked": {
                    "validated_old": f"{picks['old']} of {len(rows)}",
                    "validated_new": f"{picks['new']} of {len(rows)}",
                },
            }
            if group in HELD_OUT_GROUPS:
                all_rows.extend(rows)
        held = _mean(all_rows)
        by_group["held_out_mean"] = {"scans": len(all_rows), "rms_error_pct": held}
        results[key] = by_group
    held_means = [results[k]["held_out_mean"]["rms_error_pct"] for k in results]  # type: ignore[index]
    new_better = all(m["completion_new"] < m["completion_old"] for m in held_means)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    out = {
        "command": "python benchmarks/experiments/completion_generalisation.py "
        f"--old {args.old}" + ("" if args.new == DEFAULT_WEIGHTS else f" --new {args.new}"),
        "commit": commit,
        "size": SIZE,
        "coverages": list(COVERAGES),
        "strategies": list(STRATEGIES),
        "sampling": "noise-free samples of the normalised image",
        "held_out_groups": list(HELD_OUT_GROUPS),
        "reference_group": "generated (in-distribution, test seeds; not held out)",
        "networks": {
            "old": {"file": str(args.old), "data": old.metadata.get("data", "seed-1 twin images")},
            "new": {
                "file": str(args.new),
                "data": new.metadata.get("data"),
                "generated_validation_rms_pct": round(100 * new.metadata["validation_rms"], 3),
                "generated_validation_rms_linear_pct": round(
                    100 * new.metadata["validation_rms_linear"], 3
                ),
            },
        },
        "new_better_than_old_on_held_out": new_better,
        "results": results,
        "per_scan": per_image,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
