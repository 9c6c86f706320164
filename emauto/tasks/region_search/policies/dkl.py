"""Deep kernel learning (GPyTorch) for choosing where to look next.

Each cell of the field is described by its crop of the survey map; a small CNN maps the
crop to a few features and a Gaussian process with an RBF kernel on those features
predicts a target property of the cell (here: ``log1p`` of the number of high-resolution
patches the patch CNN calls a target, measured after the cell is acquired). CNN weights,
kernel hyperparameters and noise are learned together by maximising the exact marginal
likelihood of the cells measured so far (Wilson et al. 2016; as in the autonomous STEM
work of Roccapriore, Kalinin and Ziatdinov). The next cell maximises the upper confidence
bound ``mean + beta * std`` among the cells not yet acquired.

Shapes: crops (N, S, S) float32 in [0, 1] (flattened for the GP); targets (N,) float.
"""

from __future__ import annotations

from typing import Any

import gpytorch
import numpy as np
import torch
from torch import nn

from emauto.tasks.region_search.env import RegionSearchEnv, cell_action


class CropFeatures(nn.Module):
    """(N, S * S) flattened square survey crops -> (N, D) features in [-1, 1].

    The GP sees flat inputs (GPyTorch joins training and test inputs along dim -2)."""

    def __init__(self, side: int, features: int = 4, width: int = 8) -> None:
        super().__init__()
        self.side = side
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(2), nn.Flatten(),
            nn.Linear(8 * width, features), nn.Tanh(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, self.side, self.side))


class DeepKernelGP(gpytorch.models.ExactGP):
    """An exact GP whose RBF kernel acts on `CropFeatures` of the inputs."""

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        features: CropFeatures,
    ) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.features = features
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        z = self.features(x)
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


class DKLSearch:
    """Suggest cells to acquire by DKL + UCB; `observe` each measured cell.

    ``crops``: (n_cells, S, S) float32 survey crops, one per cell (cell index = row * grid
    + col). ``seed`` seeds the network initialisation and the random first cells.
    """

    def __init__(
        self,
        crops: np.ndarray,
        *,
        beta: float = 2.0,
        initial: int = 3,
        iterations: int = 40,
        seed: int = 0,
    ) -> None:
        crops = np.asarray(crops, dtype=np.float32)
        self.crops = torch.from_numpy(crops.reshape(len(crops), -1))
        self.beta = beta
        self.initial = initial
        self.iterations = iterations
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.features = CropFeatures(crops.shape[-1])
        self.likelihood = gpytorch.likelihoods.GaussianLikelihood()
        self.measured: list[int] = []
        self.values: list[float] = []

    def observe(self, cell: int, value: float) -> None:
        """Record the measured property of a cell."""
        self.measured.append(int(cell))
        self.values.append(float(value))

    def suggest(self) -> int:
        """The next cell: random for the first ``initial``, then the UCB maximiser."""
        free = np.setdiff1d(np.arange(len(self.crops)), self.measured)
        if len(free) == 0:
            raise RuntimeError("every cell has been measured")
        if len(self.measured) < self.initial:
            return int(self.rng.choice(free))
        mean, std = self.predict(free)
        return int(free[int(np.argmax(mean + self.beta * std))])

    def predict(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of the property at ``cells`` after refitting."""
        x = self.crops[self.measured]
        y = torch.tensor(self.values, dtype=torch.float32)
        y_mean, y_std = y.mean(), y.std() if len(y) > 1 else torch.tensor(1.0)
        y_std = torch.clamp(y_std, min=1e-3)
        model = DeepKernelGP(x, (y - y_mean) / y_std, self.likelihood, self.features)
        model.train()
        self.likelihood.train()
        optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, model)
        for _ in range(self.iterations):
            optimiser.zero_grad()
            loss = -mll(model(x), (y - y_mean) / y_std)
            loss.backward()
            optimiser.step()
        model.eval()
        self.likelihood.eval()
        with torch.no_grad(), gpytorch.settings.fast_pred_var():
            posterior = model(self.crops[cells])
            mean = posterior.mean * y_std + y_mean
            std = posterior.variance.clamp_min(0).sqrt() * y_std
        return mean.numpy(), std.numpy()


def cell_crops(survey: np.ndarray, grid: int, margin: int = 2) -> np.ndarray:
    """Crops (grid * grid, S + 2 margin, ...) of a square survey map, one per cell."""
    s = survey.shape[0] // grid
    padded = np.pad(survey, margin, mode="edge")
    crops = np.zeros((grid * grid, s + 2 * margin, s + 2 * margin), dtype=np.float32)
    for row in range(grid):
        for col in range(grid):
            crops[row * grid + col] = padded[
                row * s : (row + 1) * s + 2 * margin, col * s : (col + 1) * s + 2 * margin
            ]
    return crops


class DKLPolicy:
    """``dkl``: `DKLSearch` over the cells' survey crops; a cell's measured property is
    ``log(1 + cells' patches with target probability > 0.5)`` after acquiring it."""

    name = "dkl"

    def __init__(self, policy_path: str | None = None) -> None:
        self._search: DKLSearch | None = None
        self._env: RegionSearchEnv | None = None
        self._cell = -1

    def reset(
        self, env: RegionSearchEnv, observation: np.ndarray, info: dict[str, Any], seed: int
    ) -> None:
        self._env = env
        self._search = DKLSearch(cell_crops(env.survey, env.config.grid), seed=seed)

    def act(self, observation: np.ndarray) -> np.ndarray:
        assert self._search is not None and self._env is not None, "reset first"
        grid = self._env.config.grid
        self._cell = self._search.suggest()
        return cell_action(self._cell // grid, self._cell % grid, grid)

    def observe(self, action: np.ndarray, observation: np.ndarray, info: dict[str, Any]) -> None:
        assert self._search is not None and self._env is not None, "reset first"
        count = int((self._env.patch_target_probability > 0.5).sum())
        self._search.observe(self._cell, float(np.log1p(count)))
