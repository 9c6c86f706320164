"""Train the patch CNN (and its embedding for the few-shot head) on survey-twin patches.

Fields ``train_seeds`` give the training patches, ``calibration_seeds`` the temperatures
(CNN softmax and few-shot distances, minimum NLL) and the validation figures; benchmarks
use other seeds again (`emauto.bench.fewshot`). The loss is cross-entropy plus a
prototypical-network loss in each batch (half the batch as support, half as query), so the
embedding clusters by class for the few-shot head. Patches are augmented by the eight
square symmetries.

The few-shot metric head (`FewShotHead`: CNN embedding + lattice features -> metric) is
then trained with the CNN frozen, on the same training patches, episode by episode
(``shots``-shot 6-way episodes, prototypical loss); its temperature is fitted on 5-shot
episodes of the calibration fields. ``--head-only`` retrains just the head on a saved CNN
(seconds, not minutes):

    emauto classifier train --out emauto/models/weights/patch_classifier.pt
    emauto classifier train --head-only --out emauto/models/weights/patch_classifier.pt
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn
from tqdm import tqdm

from emauto.drivers.sim.survey import CLASSES
from emauto.models.classifier import (
    FewShotClassifier,
    FewShotHead,
    FewShotHeadMetadata,
    PatchClassifier,
    PatchClassifierMetadata,
    PatchNet,
    load_classifier,
)
from emauto.models.patches import LATTICE_FEATURE_NAMES, lattice_features, make_patch_dataset
from emauto.units import StrictModel


class PatchTrainingConfig(StrictModel):
    """Training of the patch classifier (seeds are survey-field seeds)."""

    train_seeds: tuple[int, ...] = tuple(range(1000, 1016))
    calibration_seeds: tuple[int, ...] = (2000, 2001, 2002)
    per_class: int = Field(default=120, ge=5)
    epochs: int = Field(default=16, ge=1)
    batch_size: int = Field(default=192, ge=12)
    learning_rate: float = Field(default=2e-3, gt=0)
    width: int = Field(default=16, ge=4)
    embedding_dim: int = Field(default=32, ge=2)
    seed: int = 0
    head: FewShotHeadConfig = Field(default_factory=lambda: FewShotHeadConfig())


class FewShotHeadConfig(StrictModel):
    """Episodic training of the few-shot metric head (the CNN frozen)."""

    hidden: int = Field(default=64, ge=2)
    dim: int = Field(default=32, ge=2)
    steps: int = Field(default=1500, ge=1)
    shots: int = Field(default=5, ge=1)
    queries: int = Field(default=15, ge=1)
    learning_rate: float = Field(default=1e-2, gt=0)
    seed: int = 0


PatchTrainingConfig.model_rebuild()


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    k = int(torch.randint(0, 4, (1,), generator=generator))
    x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        x = torch.flip(x, dims=(3,))
    return x


def _proto_loss(embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Prototypical loss: first half of the batch as support, second half as query."""
    half = len(labels) // 2
    support, query = embedding[:half], embedding[half:]
    s_labels, q_labels = labels[:half], labels[half:]
    present = torch.unique(s_labels)
    prototypes = torch.stack([support[s_labels == c].mean(0) for c in present])
    keep = torch.isin(q_labels, present)
    if not bool(keep.any()):
        return embedding.sum() * 0
    index = torch.searchsorted(present, q_labels[keep])
    d2 = torch.cdist(query[keep], prototypes) ** 2
    return nn.functional.cross_entropy(-d2, index)


def _fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (grid in log T)."""
    best, best_t = math.inf, 1.0
    for t in np.exp(np.linspace(math.log(0.01), math.log(100.0), 161)):
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        nll = -np.mean(z[np.arange(len(z)), labels] - np.log(np.exp(z).sum(axis=1)))
        if nll < best:
            best, best_t = nll, float(t)
    return best_t


def fewshot_episode_logits(
    classifier: PatchClassifier,
    features: np.ndarray,
    labels: np.ndarray,
    shots: int,
    rng: np.random.Generator,
    queries: int = 20,
    *,
    embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One N-way K-shot episode: (-squared distances (Q, N), query labels (Q,)); pass the
    few-shot ``embeddings`` of ``features`` to reuse them over episodes."""
    if embeddings is None:
        embeddings = classifier.fewshot_embed(features)
    support_idx, query_idx = [], []
    for c in range(len(CLASSES)):
        pool = rng.permutation(np.flatnonzero(labels == c))
        support_idx.append(pool[:shots])
        query_idx.append(pool[shots : shots + queries])
    prototypes = np.stack([embeddings[i].mean(0) for i in support_idx])
    q = np.concatenate(query_idx)
    d2 = ((embeddings[q][:, None] - prototypes[None]) ** 2).sum(axis=2)
    return -d2, labels[q]


def train_fewshot_head(
    classifier: PatchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    config: FewShotHeadConfig,
    *,
    progress: bool = False,
) -> FewShotHead:
    """The head trained on patches ``x`` (N, 32, 32) with class indices ``y``: random
    ``shots``-shot episodes over every class, prototypical loss, the CNN frozen."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    embedding = torch.from_numpy(classifier.embed(x))
    lattice = torch.from_numpy(lattice_features(x, classifier.metadata.pixel_m))
    head = FewShotHead(embedding.shape[1], lattice.shape[1], config.hidden, config.dim)
    head.embedding_mean.copy_(embedding.mean(0))
    head.embedding_scale.copy_(embedding.std(0).mean())
    head.feature_mean.copy_(lattice.mean(0))
    head.feature_std.copy_(lattice.std(0).clamp_min(1e-6))
    inputs = head.standardise(embedding, lattice)
    targets = torch.from_numpy(np.asarray(y)).long()
    pools = [torch.nonzero(targets == c)[:, 0] for c in range(int(targets.max()) + 1)]
    per_class = config.shots + config.queries
    pools = [p for p in pools if len(p) >= per_class]
    if len(pools) < 2:
        raise ValueError(f"episodes need two classes with >= {per_class} patches each")
    optimiser = torch.optim.Adam(head.net.parameters(), lr=config.learning_rate)
    query_labels = torch.arange(len(pools)).repeat_interleave(config.queries)
    head.train()
    for _step in tqdm(range(config.steps), desc="train few-shot head", disable=not progress):
        index = torch.stack(
            [p[torch.randperm(len(p), generator=generator)[:per_class]] for p in pools]
        )
        points = head.net(inputs[index.flatten()]).view(len(pools), per_class, -1)
        prototypes = points[:, : config.shots].mean(1)
        queries = points[:, config.shots :].reshape(-1, points.shape[-1])
        loss = nn.functional.cross_entropy(-(torch.cdist(queries, prototypes) ** 2), query_labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return head.eval()


def _calibrate_fewshot(
    classifier: PatchClassifier, xc: np.ndarray, yc: np.ndarray, seed: int
) -> tuple[float, float]:
    """(temperature, accuracy) of 20 5-shot episodes on the calibration patches."""
    rng = np.random.default_rng(seed)
    points = classifier.fewshot_embed(xc)
    episodes = [fewshot_episode_logits(classifier, xc, yc, 5, rng, embeddings=points)
                for _ in range(20)]  # fmt: skip
    logits = np.concatenate([e[0] for e in episodes])
    labels = np.concatenate([e[1] for e in episodes])
    return _fit_temperature(logits, labels), float((logits.argmax(1) == labels).mean())


def _training_and_calibration_patches(
    config: PatchTrainingConfig, progress: bool
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Labelled patches (x, y) of the training fields and of the calibration fields."""
    x, y, _ = make_patch_dataset(config.train_seeds, config.per_class, sample_seed=config.seed,
                                 progress=progress)  # fmt: skip
    xc, yc, _ = make_patch_dataset(config.calibration_seeds, config.per_class,
                                   sample_seed=config.seed + 1)  # fmt: skip
    return (x, y), (xc, yc)


def add_fewshot_head(
    classifier: PatchClassifier, config: PatchTrainingConfig, *, progress: bool = True
) -> PatchClassifier:
    """``classifier`` with a head trained on ``config.train_seeds`` and its temperature and
    5-shot figure from ``config.calibration_seeds`` (the CNN and its figures are kept)."""
    start = time.perf_counter()
    (x, y), (xc, yc) = _training_and_calibration_patches(config, progress)
    data_s = time.perf_counter() - start
    head = train_fewshot_head(classifier, x, y, config.head, progress=progress)
    train_s = time.perf_counter() - start - data_s
    result = PatchClassifier(classifier.net, classifier.metadata, head)
    metadata = FewShotHeadMetadata(
        features=LATTICE_FEATURE_NAMES,
        hidden=config.head.hidden,
        dim=config.head.dim,
        training={**config.head.model_dump(), "train_seeds": list(config.train_seeds),
                  "per_class": config.per_class, "patches": len(y), "train_s": round(train_s, 1)},
    )  # fmt: skip
    result.metadata = classifier.metadata.model_copy(update={"fewshot_head": metadata})
    temperature, accuracy = _calibrate_fewshot(result, xc, yc, config.seed)
    validation = {**result.metadata.validation, "fewshot_5shot_accuracy": round(accuracy, 4)}
    result.metadata = result.metadata.model_copy(
        update={"fewshot_temperature": temperature, "validation": validation}
    )
    return result


def train_classifier(config: PatchTrainingConfig, *, progress: bool = True) -> PatchClassifier:
    """Generate the data, train, calibrate; returns the classifier with its figures."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    (x, y), (xc, yc) = _training_and_calibration_patches(config, progress)
    data_s = time.perf_counter() - start
    net = PatchNet(len(CLASSES), config.width, config.embedding_dim)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    features, targets = torch.from_numpy(x[:, None]), torch.from_numpy(y).long()
    bar = tqdm(range(config.epochs), desc="train classifier", disable=not progress)
    for _epoch in bar:
        net.train()
        order = torch.randperm(len(targets), generator=generator)
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            batch = order[i : i + config.batch_size]
            xb, yb = _augment(features[batch], generator), targets[batch]
            embedding = net.embed(xb)
            loss = nn.functional.cross_entropy(net.head(embedding), yb) + _proto_loss(embedding, yb)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        scheduler.step()
        bar.set_postfix(loss=f"{total / len(order):.3f}")
    net.eval()
    metadata = PatchClassifierMetadata(width=config.width, embedding_dim=config.embedding_dim)
    classifier = PatchClassifier(net, metadata)
    with torch.no_grad():
        logits = net(torch.from_numpy(xc[:, None])).numpy()
    cnn_t = _fit_temperature(logits, yc)
    validation = {
        "cnn_accuracy": round(float((logits.argmax(1) == yc).mean()), 4),
        "patches": len(yc),
    }
    training: dict[str, Any] = {
        **config.model_dump(),
        "patches": len(y),
        "data_s": round(data_s, 1),
        "train_s": round(time.perf_counter() - start - data_s, 1),
    }
    classifier.metadata = metadata.model_copy(
        update={"cnn_temperature": cnn_t, "training": training, "validation": validation}
    )  # fmt: skip
    return add_fewshot_head(classifier, config, progress=progress)


def train_to_file(
    config: PatchTrainingConfig,
    out: str | Path,
    progress: bool = True,
    *,
    head_only_from: str | Path | None = None,
) -> PatchClassifier:
    """Train and save to ``out`` (.pt); with ``head_only_from`` (a saved classifier) keep its
    CNN and train only the few-shot head."""
    if head_only_from is not None:
        classifier = add_fewshot_head(load_classifier(head_only_from), config, progress=progress)
    else:
        classifier = train_classifier(config, progress=progress)
    classifier.save(out)
    return classifier


__all__ = [
    "FewShotClassifier",
    "FewShotHeadConfig",
    "PatchTrainingConfig",
    "add_fewshot_head",
    "train_classifier",
    "train_fewshot_head",
    "train_to_file",
]
