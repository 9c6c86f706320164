"""Patch classifiers: a small CNN and a prototypical few-shot head on its embedding.

Input: patch features (N, 32, 32) float32 from `emauto.models.patches.to_features` (the
scattered fraction on a log scale). `PatchNet` maps a patch to a 32-d embedding and, through
a linear layer, to logits over `CLASSES`; `PatchClassifier` is the trained CNN with a
temperature that calibrates its softmax.

`FewShotClassifier` is the operator's classifier: N-way K-shot labels arrive during a
session (any class names, any number per class); each class is the mean of its labelled
patches in the few-shot metric space (a prototype, updated online as labels arrive, the
networks frozen), and a patch's class probabilities are ``softmax(-|e - p_k|^2 / T)`` with
the temperature ``T`` fitted on held-out fields (temperature scaling, minimum NLL).

The metric space is `FewShotHead`: a small MLP, trained episodically (prototypical loss on
5-shot episodes of the training fields), on the CNN embedding together with
`emauto.models.patches.lattice_features` (the fringe-direction statistics that tell a twin
boundary from a plain zone-axis lattice, which the CNN embedding alone confuses). A file
without a head (older weights) uses the CNN embedding itself.

Saved as one ``.pt`` file ``{"format", "metadata" (JSON), "state_dict"}`` (plus
``"fewshot_state_dict"`` when there is a head) read with ``torch.load(weights_only=True)``:
no pickled code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, ValidationError
from torch import nn

from emauto.drivers.sim.survey import CLASSES
from emauto.errors import AnalysisError, LabelError, ModelFileError
from emauto.models.patches import (
    LATTICE_FEATURE_NAMES,
    PATCH_PIXEL_M,
    PATCH_PX,
    lattice_features,
)
from emauto.models.weights import read_weights_file, shipped_path
from emauto.units import StrictModel

FORMAT = "emauto-patch-classifier/1"
DEFAULT_WEIGHTS = shipped_path("patch_classifier.pt")


class PatchClassifierMetadata(StrictModel):
    """What the classifier was trained on and its calibration and validation figures."""

    classes: tuple[str, ...] = CLASSES
    patch_px: int = PATCH_PX
    pixel_m: float = PATCH_PIXEL_M
    width: int = Field(default=16, ge=4)
    embedding_dim: int = Field(default=32, ge=2)
    cnn_temperature: float = Field(default=1.0, gt=0)
    fewshot_temperature: float = Field(default=1.0, gt=0)
    training: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    fewshot_head: FewShotHeadMetadata | None = None


class FewShotHeadMetadata(StrictModel):
    """Shape and training of the few-shot metric head."""

    features: tuple[str, ...] = LATTICE_FEATURE_NAMES
    hidden: int = Field(default=64, ge=2)
    dim: int = Field(default=32, ge=2)
    training: dict[str, Any] = Field(default_factory=dict)


class FewShotHead(nn.Module):
    """[standardised CNN embedding (E), standardised lattice features (F)] -> metric (D)."""

    embedding_mean: torch.Tensor
    embedding_scale: torch.Tensor
    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, embedding_dim: int, n_features: int, hidden: int = 64, dim: int = 32):
        super().__init__()
        self.register_buffer("embedding_mean", torch.zeros(embedding_dim))
        self.register_buffer("embedding_scale", torch.ones(()))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.net = nn.Sequential(
            nn.Linear(embedding_dim + n_features, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )

    def standardise(self, embedding: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        e = (embedding - self.embedding_mean) / self.embedding_scale
        f = (lattice - self.feature_mean) / self.feature_std
        return torch.cat([e, f], dim=1)

    def forward(self, embedding: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardise(embedding, lattice))


PatchClassifierMetadata.model_rebuild()


class PatchNet(nn.Module):
    """(B, 1, 32, 32) -> embedding (B, E) -> logits (B, C)."""

    def __init__(self, n_classes: int, width: int = 16, embedding_dim: int = 32) -> None:
        super().__init__()
        c = width
        self.backbone = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.BatchNorm2d(4 * c), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4 * c, 4 * c, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, embedding_dim),
        )  # fmt: skip
        self.head = nn.Linear(embedding_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _as_batch(features: Any, patch_px: int) -> torch.Tensor:
    array = np.asarray(features, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (patch_px, patch_px) or len(array) == 0:
        raise AnalysisError(
            f"expected patches of shape (N, {patch_px}, {patch_px}) with N >= 1, got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise AnalysisError("patches must be finite")
    return torch.from_numpy(array[:, None])


class PatchClassifier:
    """The trained CNN: embeddings and calibrated class probabilities of patches."""

    def __init__(
        self, net: PatchNet, metadata: PatchClassifierMetadata, head: FewShotHead | None = None
    ) -> None:
        self.net = net.eval()
        self.metadata = metadata
        self.fewshot_head = head.eval() if head is not None else None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.metadata.classes

    @torch.no_grad()
    def embed(self, features: Any) -> np.ndarray:
        """Embeddings (N, E) of patch features (N, 32, 32)."""
        return self.net.embed(_as_batch(features, self.metadata.patch_px)).numpy()

    @torch.no_grad()
    def fewshot_embed(self, features: Any) -> np.ndarray:
        """Points (N, D) of patch features (N, 32, 32) in the few-shot metric space (the
        head on the embedding and lattice features; the embedding itself without a head)."""
        batch = _as_batch(features, self.metadata.patch_px)
        embedding = self.net.embed(batch)
        if self.fewshot_head is None:
            return embedding.numpy()
        lattice = torch.from_numpy(lattice_features(batch[:, 0].numpy(), self.metadata.pixel_m))
        return self.fewshot_head(embedding, lattice).numpy()

    @torch.no_grad()
    def predict_proba(self, features: Any) -> np.ndarray:
        """Calibrated class probabilities (N, C), columns in the order of `classes`."""
        logits = self.net(_as_batch(features, self.metadata.patch_px))
        return torch.softmax(logits / self.metadata.cnn_temperature, dim=1).numpy()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if (self.fewshot_head is None) != (self.metadata.fewshot_head is None):
            raise ModelFileError("the few-shot head and its metadata must come together")
        blob: dict[str, Any] = {
            "format": FORMAT,
            "metadata": self.metadata.model_dump_json(),
            "state_dict": self.net.state_dict(),
        }
        if self.fewshot_head is not None:
            blob["fewshot_state_dict"] = self.fewshot_head.state_dict()
        torch.save(blob, path)
        return path


def load_classifier(path: str | Path | None = None) -> PatchClassifier:
    """Load a saved classifier (default: the shipped weights); `ModelFileError` if bad."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    missing = f"no such classifier file; train one with `emauto classifier train --out {path}`"
    blob = read_weights_file(path, FORMAT, missing)
    try:
        metadata = PatchClassifierMetadata.model_validate(json.loads(blob["metadata"]))
    except (ValidationError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: bad metadata: {exc}") from exc
    net = PatchNet(len(metadata.classes), metadata.width, metadata.embedding_dim)
    try:
        net.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise ModelFileError(f"{path}: weights do not match the metadata: {exc}") from exc
    head = None
    if metadata.fewshot_head is not None:
        spec = metadata.fewshot_head
        head = FewShotHead(metadata.embedding_dim, len(spec.features), spec.hidden, spec.dim)
        try:
            head.load_state_dict(blob["fewshot_state_dict"])
        except (RuntimeError, KeyError) as exc:
            raise ModelFileError(
                f"{path}: few-shot head does not match the metadata: {exc}"
            ) from exc
        if tuple(spec.features) != LATTICE_FEATURE_NAMES:
            raise ModelFileError(
                f"{path}: the few-shot head reads features {list(spec.features)}, "
                f"this emauto computes {list(LATTICE_FEATURE_NAMES)}"
            )
    return PatchClassifier(net, metadata, head)


class FewShotClassifier:
    """Prototypical few-shot head on a frozen `PatchClassifier` embedding, updated online."""

    def __init__(self, backbone: PatchClassifier, temperature: float | None = None) -> None:
        self.backbone = backbone
        self.temperature = temperature or backbone.metadata.fewshot_temperature
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        """Labelled classes, in the order they first arrived (the probability columns)."""
        return tuple(self._sums)

    @property
    def counts(self) -> dict[str, int]:
        """Labelled patches per class."""
        return dict(self._counts)

    def add_labels(self, features: Any, labels: Sequence[str]) -> None:
        """Add labelled patches (N, 32, 32) with N class names; prototypes update at once."""
        labels = list(labels)
        if not labels:
            raise LabelError("expected at least one label, got an empty label set")
        bad = [x for x in labels if not isinstance(x, str) or not x.strip()]
        if bad:
            raise LabelError(f"labels must be non-empty class names, got {bad[:3]!r}")
        embeddings = self.backbone.fewshot_embed(features)
        if len(embeddings) != len(labels):
            raise LabelError(
                f"expected one label per patch: {len(embeddings)} patches, {len(labels)} labels"
            )
        for name in sorted(set(labels)):
            rows = embeddings[[i for i, x in enumerate(labels) if x == name]]
            self._sums[name] = self._sums.get(name, 0.0) + rows.sum(axis=0)
            self._counts[name] = self._counts.get(name, 0) + len(rows)

    def prototypes(self) -> np.ndarray:
        """(K, E) mean embedding of each labelled class."""
        return np.stack([self._sums[c] / self._counts[c] for c in self.classes])

    def predict_proba(self, features: Any) -> np.ndarray:
        """Calibrated probabilities (N, K) over `classes`; `LabelError` before any label."""
        if not self._sums:
            raise LabelError("no labels yet: add at least one labelled patch per class first")
        embeddings = self.backbone.fewshot_embed(features)
        prototypes = self.prototypes()
        d2 = ((embeddings[:, None, :] - prototypes[None]) ** 2).sum(axis=2)
        logits = -d2 / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, features: Any) -> tuple[list[str], np.ndarray]:
        """Class name and confidence (its probability) of each patch."""
        p = self.predict_proba(features)
        best = p.argmax(axis=1)
        return [self.classes[i] for i in best], p[np.arange(len(p)), best]
