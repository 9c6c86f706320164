"""`emauto/SparseScan-v0`: choose where to scan next, patch by patch, on a budget of pixels.

Each episode takes a ground-truth image (normalised to [0, 1]): a random one of ``images``
if given, otherwise of a bank of noise-free twin images of the seed-1 training specimens
(`twin_images.training_images`, never the benchmark images). A jittered grid
spends ``initial`` of the budget (``coverage`` x pixels); each step the agent picks one
patch of a ``grid x grid`` partition and the probe measures ``batch`` random unsampled
pixels in it (Poisson noise at ``dose_e`` electrons at full intensity; None: noise-free).
The episode terminates when the budget is spent; it is truncated after ``4 x`` the steps the
budget needs (steps on a full patch add nothing).

Observation: uint8 (3, S, S), channels first (`scan_observation`): the partial image (block
mean of the samples, 0 where none), the sampled fraction of each block relative to twice the
coverage (saturating), and the current reconstruction (linear interpolation), each reduced to
S x S by block means, so the same policy reads any image of at least S x S pixels.
Action: Discrete(grid**2), the patch, row-major. Reward: the reduction of the RMS error of
the reconstruction (ground truth from the twin) per electron, in units of 100 x RMS per
batch's electrons (a full batch that lowers the RMS error by 1 % earns 1); a step that adds
nothing earns -0.01.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from emauto.errors import ConfigError
from emauto.tasks.sparse_scan.adaptive import add_in_patch
from emauto.tasks.sparse_scan.reconstruct import linear
from emauto.tasks.sparse_scan.sampling import check_dose, normalise, sample_image
from emauto.tasks.sparse_scan.strategies import check_coverage, jittered_plan, n_positions

__all__ = ["SparseScanEnv", "scan_observation"]


def _blocks(image: np.ndarray, size: int) -> np.ndarray:
    """Means over a ``size x size`` grid of near-equal blocks (any image of >= size pixels)."""
    ny, nx = image.shape
    rows = np.linspace(0, ny, size + 1).astype(np.int64)[:-1]
    cols = np.linspace(0, nx, size + 1).astype(np.int64)[:-1]
    sums = np.add.reduceat(np.add.reduceat(image, rows, axis=0), cols, axis=1)
    counts = np.diff(np.r_[rows, ny])[:, None] * np.diff(np.r_[cols, nx])[None, :]
    return np.asarray(sums / counts, dtype=np.float64)


def scan_observation(
    values: np.ndarray, mask: np.ndarray, reconstruction: np.ndarray, coverage: float, size: int
) -> np.ndarray:
    """The policy's view (3, size, size) uint8 of a partial scan (see the module docstring)."""
    if min(mask.shape) < size:
        raise ConfigError(f"image shape {mask.shape} is smaller than the observation {size}")
    m = mask.astype(np.float64)
    counts = _blocks(m, size)
    partial = np.where(
        counts > 0, _blocks(np.where(mask, values, 0.0), size) / np.maximum(counts, 1e-12), 0.0
    )
    density = np.clip(counts / (2 * coverage), 0, 1)
    recon = _blocks(reconstruction, size)
    stack = np.stack([partial, density, recon])
    return np.asarray(np.clip(np.rint(255 * stack), 0, 255), dtype=np.uint8)


class SparseScanEnv(gym.Env[np.ndarray, np.int64]):
    """Adaptive sparse scanning as an MDP (see the module docstring)."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        images: np.ndarray | None = None,
        coverage: float = 0.05,
        dose_e: float | None = None,
        image_size: int = 128,
        observation_size: int = 64,
        grid: int = 8,
        initial: float = 0.5,
        images_per_specimen: int = 8,
        seed: int = 0,
    ) -> None:
        self.coverage = check_coverage(coverage)
        self.dose_e = check_dose(dose_e)
        if image_size % observation_size or image_size % grid:
            raise ConfigError(
                f"image_size {image_size} must be a multiple of observation_size "
                f"{observation_size} and of grid {grid}"
            )
        if not 0.0 < initial < 1.0:
            raise ConfigError(f"initial must be a fraction in (0, 1), got {initial}")
        self.grid = grid
        self.initial = initial
        self.size = observation_size
        self.images = self._bank(images, image_size, images_per_specimen, seed)
        self.shape = (int(self.images.shape[1]), int(self.images.shape[2]))
        self.budget = n_positions(self.shape, self.coverage)
        self.batch = max(1, self.budget // 64)
        needed = int(np.ceil(self.budget * (1 - initial) / self.batch)) + 1
        self.max_steps = 4 * needed
        self.observation_space = spaces.Box(0, 255, (3, self.size, self.size), dtype=np.uint8)
        self.action_space = spaces.Discrete(grid * grid)
        self._truth = self.images[0]
        self._values = np.zeros(self.shape)
        self._mask = np.zeros(self.shape, dtype=bool)
        self._recon = np.zeros(self.shape)
        self._rms = 0.0
        self._steps = 0

    @staticmethod
    def _bank(images: np.ndarray | None, size: int, per_specimen: int, seed: int) -> np.ndarray:
        if images is None:
            from emauto.tasks.sparse_scan.twin_images import training_images

            images = np.stack(
                [image for _, image in training_images(per_specimen, (size, size), seed + 7)]
            )
        array = np.asarray(images, dtype=np.float64)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ConfigError(f"images must be (n, ny, nx) or (ny, nx), got shape {array.shape}")
        if array.shape[1] != size or array.shape[2] != size:
            raise ConfigError(f"images must be {size}x{size}, got {array.shape[1:]}")
        return np.stack([normalise(image) for image in array])

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        self._truth = self.images[int(rng.integers(len(self.images)))]
        first = jittered_plan(self.shape, max(1, round(self.budget * self.initial)), rng).pixels
        self._values = np.zeros(self.shape)
        self._mask = np.zeros(self.shape, dtype=bool)
        self._measure(first)
        self._steps = 0
        return self._observation(), self._info(0)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ConfigError(
                f"action must be a patch index in [0, {self.grid**2}), got {action!r}"
            )
        self._steps += 1
        before = self._rms
        room = self.budget - int(self._mask.sum())
        new = add_in_patch(
            self._mask, self.grid, int(action), min(self.batch, room), self.np_random
        )
        if len(new):
            self._measure(new)
            electrons = len(new) * (self.dose_e or 1.0)
            per_batch = self.batch * (self.dose_e or 1.0)
            reward = 100.0 * (before - self._rms) * per_batch / electrons
        else:
            reward = -0.01
        terminated = int(self._mask.sum()) >= self.budget
        truncated = not terminated and self._steps >= self.max_steps
        return self._observation(), float(reward), terminated, truncated, self._info(len(new))

    # ------------------------------------------------------------------ internals

    def _measure(self, pixels: np.ndarray) -> None:
        self._values[pixels[:, 0], pixels[:, 1]] = sample_image(
            self._truth, pixels, self.dose_e, self.np_random
        )
        self._mask[pixels[:, 0], pixels[:, 1]] = True
        self._recon = linear(self._values, self._mask)
        self._rms = float(np.sqrt(np.mean((self._recon - self._truth) ** 2)))

    def _observation(self) -> np.ndarray:
        return scan_observation(self._values, self._mask, self._recon, self.coverage, self.size)

    def _info(self, added: int) -> dict[str, Any]:
        return {
            "rms_error": self._rms,
            "positions": int(self._mask.sum()),
            "budget": self.budget,
            "added": added,
        }
