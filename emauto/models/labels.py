"""An operator's labelling session: labelled patches on disk, a few-shot classifier on top.

A session is one ``.npz`` file (``features`` (N, 32, 32) float32, ``labels`` (N,) str),
written atomically; `LabelSession.classifier` builds the `FewShotClassifier` from it.
Patches are cut from raw count images at (x, y) pixel centres and turned into features
with the electrons each pixel received (`emauto.models.patches.to_features`).

`OnlineLabels` is the daemon's side: each operator label of a patch goes at once into the
support set of the running `FewShotClassifier` (its prototype moves), into the label file,
and, through ``record``, into the recorded session.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emauto.errors import AnalysisError, LabelError, ModelFileError
from emauto.microscope import Frame
from emauto.models.classifier import FewShotClassifier, PatchClassifier, load_classifier
from emauto.models.patches import PATCH_PX, to_features


def cut_patch(image: np.ndarray, x: float, y: float, size: int = PATCH_PX) -> np.ndarray:
    """The ``size`` square of ``image`` ``[y, x]`` centred on pixel (x, y)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise AnalysisError(f"expected a 2-D image, got shape {image.shape}")
    x0, y0 = round(x) - size // 2, round(y) - size // 2
    ny, nx = image.shape
    if not (x0 >= 0 and y0 >= 0 and x0 + size <= nx and y0 + size <= ny):
        raise AnalysisError(
            f"a {size}x{size} patch at (x={x:g}, y={y:g}) does not fit in the {nx}x{ny} image"
        )
    return image[y0 : y0 + size, x0 : x0 + size]


def grid_patches(image: np.ndarray, size: int = PATCH_PX) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping patches (N, size, size) tiling ``image`` and their centres (N, 2 as x, y)."""
    ny, nx = np.asarray(image).shape
    rows, cols = ny // size, nx // size
    if rows == 0 or cols == 0:
        raise AnalysisError(f"the image {nx}x{ny} is smaller than one {size}x{size} patch")
    tiles = np.asarray(image)[: rows * size, : cols * size]
    patches = tiles.reshape(rows, size, cols, size).transpose(0, 2, 1, 3).reshape(-1, size, size)
    cy, cx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    centres = np.stack([cx.ravel() * size + size / 2, cy.ravel() * size + size / 2], axis=1)
    return patches, centres


class LabelSession:
    """Labelled patches in ``path`` (created on the first `add`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.features = np.zeros((0, PATCH_PX, PATCH_PX), dtype=np.float32)
        self.labels: list[str] = []
        if self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    self.features = data["features"].astype(np.float32)
                    self.labels = [str(x) for x in data["labels"]]
            except Exception as exc:
                raise ModelFileError(f"{self.path}: not a label session file: {exc}") from exc
            if len(self.labels) != len(self.features):
                raise ModelFileError(
                    f"{self.path}: {len(self.features)} patches but {len(self.labels)} labels"
                )

    def add(
        self, image: np.ndarray, x: float, y: float, label: str, electrons_per_pixel: float
    ) -> None:
        """Label the patch of a raw count image centred on pixel (x, y); saved at once."""
        if not isinstance(label, str) or not label.strip():
            raise LabelError(f"expected a non-empty class name, got {label!r}")
        if not electrons_per_pixel > 0:
            raise LabelError(f"electrons_per_pixel: expected > 0, got {electrons_per_pixel}")
        patch = to_features(cut_patch(image, x, y), electrons_per_pixel)
        self.features = np.concatenate([self.features, patch[None]])
        self.labels.append(label.strip())
        self.save()

    def counts(self) -> dict[str, int]:
        """Labelled patches per class."""
        names, counts = np.unique(np.array(self.labels, dtype=str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    def classifier(self, backbone: PatchClassifier | None = None) -> FewShotClassifier:
        """A few-shot classifier holding every label of the session."""
        if not self.labels:
            raise LabelError(
                f"{self.path}: the session has no labels yet; add some with `emauto label add`"
            )
        fewshot = FewShotClassifier(backbone or load_classifier())
        fewshot.add_labels(self.features, self.labels)
        return fewshot

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz")
        os.close(handle)
        np.savez(tmp, features=self.features, labels=np.array(self.labels, dtype=str))
        os.replace(tmp, self.path)


def frame_label_payload(frame: Frame, x_px: Any, y_px: Any, label: Any) -> dict[str, Any]:
    """The label message for the patch of an image ``frame`` centred on pixel (``x_px``,
    ``y_px``) (column, row; what an operator clicks on the console's picture): its raw
    counts, the electrons each pixel received (the frame's dose over its pixels) and its
    stage position (m: the stage knobs plus the scan-frame offset of the pixel).
    `LabelError` for a frame that is not a 2-D image or a position that is not a number;
    `AnalysisError` when the patch does not fit in the image."""
    data = np.asarray(frame.data)
    if frame.kind != "image" or data.ndim != 2:
        raise LabelError(
            f"labels are patches of a 2-D image; the latest frame is a {frame.kind} "
            f"of shape {data.shape}"
        )
    where = []
    for name, value in (("x_px", x_px), ("y_px", y_px)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise LabelError(f"{name}: expected a pixel position (a number), got {value!r}")
        where.append(float(value))
    x, y = where
    counts = cut_patch(data, x, y)
    metres = [c for c in frame.calibrations if c.units == "m"]  # the scan's (y, x)
    scan_y, scan_x = (
        (c.offset + c.scale * pixel for c, pixel in zip(metres, (y, x), strict=True))
        if len(metres) == 2
        else (0.0, 0.0)
    )
    knobs = frame.state.knobs
    return {
        "counts": counts.tolist(),
        "electrons_per_pixel": float(frame.dose_e) / data.size,
        "label": label,
        "x_m": float(knobs.get("stage_x", 0.0)) + scan_x,
        "y_m": float(knobs.get("stage_y", 0.0)) + scan_y,
    }


#: Called with each accepted label's record (the daemon writes it into the session).
LabelRecorder = Callable[[dict[str, Any]], None]


class OnlineLabels:
    """Operator labels arriving while the daemon runs: the few-shot head updates at once.

    ``store`` (optional) keeps every labelled patch (a `LabelSession` file), so that a
    restarted daemon starts from the labels already given; the backbone is loaded on the
    first label (default: the shipped weights).
    """

    def __init__(
        self, store: str | Path | None = None, backbone: PatchClassifier | None = None
    ) -> None:
        self.store_path = Path(store) if store is not None else None
        self._store: LabelSession | None = None
        self._backbone = backbone
        self._fewshot: FewShotClassifier | None = None
        self.records = 0

    @property
    def store(self) -> LabelSession | None:
        """The label file, read on first use (a bad file fails the labels, not the caller's
        start-up)."""
        if self._store is None and self.store_path is not None:
            self._store = LabelSession(self.store_path)
        return self._store

    @property
    def fewshot(self) -> FewShotClassifier:
        """The running few-shot classifier (with every stored label)."""
        if self._fewshot is None:
            fewshot = FewShotClassifier(self._backbone or load_classifier())
            store = self.store
            if store is not None and store.labels:
                fewshot.add_labels(store.features, store.labels)
            self._fewshot = fewshot
        return self._fewshot

    def add(
        self,
        counts: Any,
        electrons_per_pixel: float,
        label: str,
        *,
        x_m: float = float("nan"),
        y_m: float = float("nan"),
        record: LabelRecorder | None = None,
    ) -> dict[str, Any]:
        """Label one raw-count patch (32, 32) that received ``electrons_per_pixel`` electrons
        a pixel, at stage position (``x_m``, ``y_m``) m; returns the record (also given to
        ``record``). Bad input raises `LabelError` / `AnalysisError` and changes nothing."""
        if not isinstance(label, str) or not label.strip():
            raise LabelError(f"expected a non-empty class name, got {label!r}")
        try:
            dose = float(electrons_per_pixel)
        except (TypeError, ValueError) as exc:
            raise LabelError(
                f"electrons_per_pixel: expected a number, got {electrons_per_pixel!r}"
            ) from exc
        if not dose > 0 or not np.isfinite(dose):
            raise LabelError(f"electrons_per_pixel: expected > 0, got {electrons_per_pixel!r}")
        try:
            array = np.asarray(counts, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise AnalysisError(f"the patch is not an array of counts: {exc}") from exc
        if array.shape != (PATCH_PX, PATCH_PX) or not np.all(np.isfinite(array)):
            raise AnalysisError(
                f"expected a finite {PATCH_PX}x{PATCH_PX} patch of counts, got shape {array.shape}"
            )
        features = to_features(array, dose)
        name = label.strip()
        fewshot, store = self.fewshot, self.store  # both read before anything changes
        fewshot.add_labels(features[None], [name])
        if store is not None:
            store.features = np.concatenate([store.features, features[None]])
            store.labels.append(name)
            store.save()
        self.records += 1
        entry = {
            "label": name,
            "x_m": float(x_m),
            "y_m": float(y_m),
            "electrons_per_pixel": dose,
            "counts": self.fewshot.counts,
        }
        if record is not None:
            record(entry)
        return entry

    def add_payload(
        self, payload: Mapping[str, Any], record: LabelRecorder | None = None
    ) -> dict[str, Any]:
        """`add` from a control message ``{"counts": 32x32 raw counts, "electrons_per_pixel",
        "label", "x_m", "y_m" (optional, m)}``; `LabelError` names a bad field."""
        if not isinstance(payload, Mapping):
            raise LabelError(f"expected a label message (a mapping), got {type(payload).__name__}")
        where = {}
        for key in ("x_m", "y_m"):
            value = payload.get(key, float("nan"))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LabelError(f"{key}: expected a stage position in m, got {value!r}")
            where[key] = float(value)
        return self.add(
            payload.get("counts"),
            payload.get("electrons_per_pixel"),  # type: ignore[arg-type]  # checked in add
            payload.get("label"),  # type: ignore[arg-type]
            record=record,
            **where,
        )

    def predict(self, counts: Any, electrons_per_pixel: float) -> tuple[list[str], np.ndarray]:
        """Class and confidence of raw-count patches (N, 32, 32) with the labels so far."""
        if not electrons_per_pixel > 0:
            raise LabelError(f"electrons_per_pixel: expected > 0, got {electrons_per_pixel}")
        return self.fewshot.predict(to_features(np.asarray(counts), electrons_per_pixel))
