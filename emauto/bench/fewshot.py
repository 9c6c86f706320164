"""`emauto bench fewshot`: N-way K-shot accuracy and latency of the operator's classifier.

Patches come from survey fields never used in training or calibration (seeds from 5000):
the support (the operator's K labels per class) from two fields, the queries from two
others. Each episode builds a fresh `FewShotClassifier` through its public API
(``add_labels`` with class names, then ``predict``) on the shipped backbone. Figures per
shot count: ``accuracy`` (mean over episodes, and its standard deviation), ``confusion``
(rows: true class, columns: predicted, summed over episodes), ``ece`` (expected calibration
error of the confidence, 10 bins) and ``reliability`` (per bin: mean confidence, accuracy,
queries), ``latency_ms_per_patch`` (one patch per
call, median; what an operator waits for) and ``batched_ms_per_patch`` (256 per call),
both on one torch thread.
The CNN's accuracy on the same queries is given for reference.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from emauto import stats
from emauto.drivers.sim.survey import CLASSES
from emauto.models.classifier import FewShotClassifier, load_classifier
from emauto.models.patches import make_patch_dataset

SUPPORT_SEEDS = (5000, 5001)
QUERY_SEEDS = (5002, 5003)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10
) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if np.any(members):
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10
) -> list[dict[str, Any]]:
    """Per non-empty equal-width confidence bin: its range, mean confidence, accuracy, count."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        if np.any(members):
            rows.append({"bin": [round(float(edges[b]), 2), round(float(edges[b + 1]), 2)],
                         "confidence": round(float(confidence[members].mean()), 4),
                         "accuracy": round(float(correct[members].mean()), 4),
                         "queries": int(members.sum())})  # fmt: skip
    return rows


def run_fewshot_benchmark(
    shots: Sequence[int] = (1, 5, 10),
    *,
    episodes: int = 20,
    seed: int = 0,
    per_class: int = 60,
    weights: str | Path | None = None,
    progress: bool = True,
    support_seeds: Sequence[int] = SUPPORT_SEEDS,
    query_seeds: Sequence[int] = QUERY_SEEDS,
) -> dict[str, Any]:
    """Few-shot accuracy, calibration and latency per shot count (see the module doc).
    Other ``support_seeds`` / ``query_seeds`` give a development split."""
    import torch

    torch.set_num_threads(1)  # latency on one core, robust to a busy machine
    backbone = load_classifier(weights)
    if set(support_seeds) & set(query_seeds):
        raise ValueError("the support and query fields must differ")
    xs, ys, _ = make_patch_dataset(support_seeds, max(per_class, max(shots)), sample_seed=seed)
    xq, yq, _ = make_patch_dataset(query_seeds, per_class, sample_seed=seed + 1)
    names = np.array(CLASSES)
    rng = np.random.default_rng(seed)
    cnn_accuracy = float((backbone.predict_proba(xq).argmax(1) == yq).mean())
    figures: dict[str, Any] = {}
    for k in shots:
        accuracies, confidences, corrects = [], [], []
        confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
        for _ in tqdm(range(episodes), desc=f"{k}-shot", disable=not progress):
            support = np.concatenate(
                [
                    rng.choice(np.flatnonzero(ys == c), size=k, replace=False)
                    for c in range(len(CLASSES))
                ]
            )
            classifier = FewShotClassifier(backbone)
            classifier.add_labels(xs[support], names[ys[support]].tolist())
            predicted, confidence = classifier.predict(xq)
            correct = np.array(predicted) == names[yq]
            np.add.at(confusion, (yq, np.array([CLASSES.index(p) for p in predicted])), 1)
            accuracies.append(float(correct.mean()))
            confidences.append(confidence)
            corrects.append(correct)
        single = []
        for i in range(100):
            start = time.perf_counter()
            classifier.predict(xq[i % len(xq)])
            single.append(time.perf_counter() - start)
        batch = xq[:256]
        start = time.perf_counter()
        for _ in range(5):
            classifier.predict(batch)
        batched = (time.perf_counter() - start) / (5 * len(batch))
        figures[f"{k}_shot"] = {
            "accuracy": round(statistics.fmean(accuracies), 4),
            "accuracy_std": round(statistics.pstdev(accuracies), 4),
            # Wilson 95 % over every query of every episode (episodes share the queries)
            "accuracy_ci95": [
                round(v, 4)
                for v in stats.wilson_interval(
                    int(np.concatenate(corrects).sum()), int(np.concatenate(corrects).size)
                )
            ],
            "confusion": confusion.tolist(),
            "ece": round(
                expected_calibration_error(np.concatenate(confidences), np.concatenate(corrects)), 4
            ),
            "reliability": reliability(np.concatenate(confidences), np.concatenate(corrects)),
            "latency_ms_per_patch": round(1e3 * statistics.median(single), 3),
            "batched_ms_per_patch": round(1e3 * batched, 4),
        }
    return {
        "benchmark": "fewshot",
        "ways": len(CLASSES),
        "classes": list(CLASSES),
        "episodes": episodes,
        "queries": len(yq),
        "support_fields": list(support_seeds),
        "query_fields": list(query_seeds),
        "torch_threads": torch.get_num_threads(),
        "cnn_accuracy": round(cnn_accuracy, 4),
        "shots": figures,
        "goal": "5-shot accuracy >= 0.90 at < 10 ms per patch on CPU",
    }
