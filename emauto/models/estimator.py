"""CNN estimator: a Ronchigram pair and the knob change between them -> aberrations.

The input is what `emauto/ProbeTuning-v0` observes: two uint8 Ronchigrams (previous, latest),
channels first, and the knob change (m) made between them. A single Ronchigram of an
amorphous specimen cannot tell over- from under-focus (the shadow image is merely inverted);
the known change between two frames can. The output is the aberrations at the latest frame,
``ESTIMATED_KNOBS`` in m, each with a standard deviation (a Gaussian, trained by beta-NLL).

Saved as one ``.pt`` file: ``{"format", "metadata" (JSON), "state_dict"}``, read back with
``torch.load(weights_only=True)``: no pickled code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError
from torch import nn
from torch.nn import functional

from emauto import optics
from emauto.errors import ModelFileError
from emauto.models.weights import read_weights_file, shipped_path
from emauto.units import StrictModel

FORMAT = "emauto-ronchigram-estimator/1"
#: The aberrations the estimator measures (Krivanek Cartesian components, m).
ESTIMATED_KNOBS = ("C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b", "C30")
#: Natural scale of each output (the default start widths): the network works in these units.
KNOB_SCALES_M = (50e-9, 20e-9, 20e-9, 300e-9, 300e-9, 300e-9, 300e-9, 1e-6)
DEFAULT_WEIGHTS = shipped_path("ronchigram_estimator.pt")


class EstimatorMetadata(StrictModel):
    """What an estimator was trained for and how well it did (validation figures)."""

    knobs: tuple[str, ...] = ESTIMATED_KNOBS
    scales_m: tuple[float, ...] = KNOB_SCALES_M
    image_size: int = Field(default=64, ge=16)
    observation_margin: float = 1.15
    convergence_rad: float = 0.030
    energy_eV: float = 200e3
    width: int = 32
    arch: Literal["plain", "resnet"] = "plain"
    data: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)


class _Residual(nn.Module):
    """Two 3x3 convolutions with group norm, added to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(8, channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(8, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.gelu(x + self.body(x))


class _WithCoordinates(nn.Module):
    """Appends the camera angle (x, y in [-1, 1]) as two channels: aberrations are read from
    where on the Ronchigram a pattern sits, which plain convolutions do not see."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        axis = torch.linspace(-1.0, 1.0, image_size)
        y, x = torch.meshgrid(axis, axis, indexing="ij")
        self.grid: torch.Tensor
        self.register_buffer("grid", torch.stack([x, y])[None], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.grid.to(images.dtype).expand(images.shape[0], -1, -1, -1)
        return torch.cat([images, grid], dim=1)


def _plain_trunk(image_size: int, c: int) -> list[nn.Module]:
    return [
        nn.Conv2d(2, c, 5, stride=2, padding=2),
        nn.GELU(),
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
        nn.GELU(),
        nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1),
        nn.GELU(),
        nn.Conv2d(4 * c, 4 * c, 3, stride=2, padding=1),
        nn.GELU(),
    ]


def _resnet_trunk(image_size: int, c: int) -> list[nn.Module]:
    layers: list[nn.Module] = [
        _WithCoordinates(image_size),
        nn.Conv2d(4, c, 5, stride=2, padding=2),
        nn.GroupNorm(8, c),
        nn.GELU(),
        _Residual(c),
        _Residual(c),
    ]
    for before, after, blocks in ((c, 2 * c, 2), (2 * c, 4 * c, 2), (4 * c, 4 * c, 1)):
        layers += [
            nn.Conv2d(before, after, 3, stride=2, padding=1, bias=False),
            nn.GroupNorm(8, after),
            nn.GELU(),
        ]
        layers += [_Residual(after) for _ in range(blocks)]
    return layers


class EstimatorNet(nn.Module):
    """Conv trunk over the image pair, joined with the knob change; outputs mean, log-var.

    images (B, 2, S, S) float in [0, 1]; change (B, K) in scale units -> two (B, K) tensors.
    ``arch``: ``plain`` (four strided convolutions, the first shipped estimator) or
    ``resnet`` (camera-angle channels and residual stages); both end at S/16 x S/16.
    """

    def __init__(self, n_knobs: int, image_size: int, width: int = 32, arch: str = "plain") -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        trunks = {"plain": _plain_trunk, "resnet": _resnet_trunk}
        if arch not in trunks:
            raise ValueError(f"unknown estimator arch {arch!r}; expected one of {sorted(trunks)}")
        c = width
        self.trunk = nn.Sequential(
            *trunks[arch](image_size, c),
            nn.Flatten(),
            nn.Linear(4 * c * (image_size // 16) ** 2, 256),
            nn.GELU(),
        )
        self.head = nn.Sequential(
            nn.Linear(256 + n_knobs, 256), nn.GELU(), nn.Linear(256, 2 * n_knobs)
        )
        self.n_knobs = n_knobs

    def forward(self, images: torch.Tensor, change: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.trunk(images - 0.5)
        out = self.head(torch.cat([features, change], dim=1))
        mean, log_var = out[:, : self.n_knobs], out[:, self.n_knobs :]
        return mean, log_var.clamp(-10.0, 6.0)


@dataclass(frozen=True)
class Estimate:
    """Aberrations at the latest frame (m) with one standard deviation each (m)."""

    mean_m: dict[str, float]
    std_m: dict[str, float]


class RonchigramEstimator:
    """A trained `EstimatorNet` with its metadata; predicts in SI units."""

    def __init__(self, net: EstimatorNet, metadata: EstimatorMetadata) -> None:
        self.net = net.eval()
        self.metadata = metadata
        self.knobs = metadata.knobs
        self._scales = torch.tensor(metadata.scales_m, dtype=torch.float64)
        self._wavelength = optics.wavelength(metadata.energy_eV)
        self._normal = np.random.default_rng(0).standard_normal((64, len(self.knobs)))

    @classmethod
    def untrained(cls, metadata: EstimatorMetadata | None = None) -> RonchigramEstimator:
        """A freshly initialised estimator (for training)."""
        metadata = metadata or EstimatorMetadata()
        return cls(_net_for(metadata), metadata)

    # ------------------------------------------------------------------ prediction

    def change_vector(self, change_m: Mapping[str, float]) -> np.ndarray:
        """Knob change (m) as the (K,) vector in the estimator's knob order (0 where absent)."""
        return np.array([float(change_m.get(k, 0.0)) for k in self.knobs], dtype=np.float64)

    @torch.no_grad()
    def predict(self, pairs: np.ndarray, changes_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """pairs uint8 (B, 2, S, S), changes (B, K) m -> mean (B, K) m, std (B, K) m."""
        pairs = np.asarray(pairs)
        size = self.metadata.image_size
        if pairs.ndim != 4 or pairs.shape[1:] != (2, size, size):
            raise ValueError(f"expected Ronchigram pairs (B, 2, {size}, {size}), got {pairs.shape}")
        images = torch.from_numpy(pairs.astype(np.float32) / 255.0)
        change = torch.from_numpy(np.asarray(changes_m, dtype=np.float64)) / self._scales
        mean, log_var = self.net(images, change.float())
        scale = self._scales.numpy()
        std = np.exp(0.5 * log_var.double().numpy()) * scale
        return mean.double().numpy() * scale, std

    def estimate(self, pair: np.ndarray, change_m: Mapping[str, float]) -> Estimate:
        """One pair (2, S, S) and its knob change -> `Estimate` at the latest frame."""
        mean, std = self.predict(pair[None], self.change_vector(change_m)[None])
        return Estimate(
            mean_m=dict(zip(self.knobs, mean[0].tolist(), strict=True)),
            std_m=dict(zip(self.knobs, std[0].tolist(), strict=True)),
        )

    def expected_strehl(self, estimate: Estimate, aperture_rad: float | None = None) -> float:
        """Strehl ratio averaged over the estimate's Gaussian (64 fixed draws): an objective
        that an uncertain estimate cannot flatter."""
        mean = np.array([estimate.mean_m[k] for k in self.knobs])
        std = np.array([estimate.std_m[k] for k in self.knobs])
        draws = mean + self._normal * std
        aperture = aperture_rad or self.metadata.convergence_rad
        values = optics.strehl_ratio_batch(draws, self.knobs, self._wavelength, aperture)
        return float(values.mean())

    def strehl_predictor(self, pair: np.ndarray, change_m: Mapping[str, float]) -> float:
        """The env's ``StrehlFromImage``: expected Strehl of the latest frame."""
        return self.expected_strehl(self.estimate(pair, change_m))

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write the weights and metadata to one ``.pt`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "format": FORMAT,
            "metadata": self.metadata.model_dump_json(),
            "state_dict": self.net.state_dict(),
        }
        torch.save(blob, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RonchigramEstimator:
        """Read an estimator saved by `save`; a bad file raises `ModelFileError`."""
        path = Path(path)
        blob = read_weights_file(path, FORMAT, "no such estimator file")
        try:
            metadata = EstimatorMetadata.model_validate(json.loads(blob["metadata"]))
            net = _net_for(metadata)
            net.load_state_dict(blob["state_dict"])
        except (KeyError, ValueError, RuntimeError, ValidationError) as exc:
            raise ModelFileError(f"{path}: estimator file does not match its model: {exc}") from exc
        return cls(net, metadata)


def _net_for(metadata: EstimatorMetadata) -> EstimatorNet:
    return EstimatorNet(len(metadata.knobs), metadata.image_size, metadata.width, metadata.arch)


def load_default_estimator() -> RonchigramEstimator:
    """The estimator that ships with emauto (see README: how it was trained)."""
    return RonchigramEstimator.load(DEFAULT_WEIGHTS)


def load_default_strehl_predictor() -> Any:
    """The shipped estimator's expected-Strehl predictor, for ``reward="estimator"``."""
    return load_default_estimator().strehl_predictor


def rms_by_knob(errors_m: np.ndarray, knobs: Sequence[str]) -> dict[str, float]:
    """Root-mean-square error (m) of each column of ``errors_m`` (B, K)."""
    rms = np.sqrt(np.mean(np.square(errors_m), axis=0))
    return {k: float(v) for k, v in zip(knobs, rms, strict=True)}


def coverage_1sigma(errors_m: np.ndarray, std_m: np.ndarray) -> float:
    """Fraction of errors within one predicted standard deviation (0.683 if calibrated)."""
    return float(np.mean(np.abs(errors_m) <= std_m)) if errors_m.size else math.nan
