"""The RL scan policy: stable-baselines3 PPO on `emauto/SparseScan-v0`.

A trained policy is a folder: ``policy.pt`` (the PPO policy's tensors and description,
`emauto.models.sb3_policy`: no pickle) and ``config.yaml`` (the `ScanRLConfig`).
`ScanPolicy.chooser` turns it into a patch chooser for
`emauto.tasks.sparse_scan.adaptive.patch_scan`, which reads images of any size of at least the
observation size (`emauto.tasks.sparse_scan.env.scan_observation`).
"""

from __future__ import annotations

import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from emauto.errors import ModelFileError
from emauto.models.sb3_policy import (
    POLICY_FILE,
    learn_until_interrupted,
    load_policy_file,
    save_policy_file,
)
from emauto.models.weights import shipped_path
from emauto.tasks.sparse_scan.adaptive import Measure, PatchChooser, patch_scan
from emauto.tasks.sparse_scan.config import ScanRLConfig
from emauto.tasks.sparse_scan.strategies import ScanPlan

__all__ = [
    "DEFAULT_SCAN_POLICY",
    "ScanPolicy",
    "load_default_scan_policy",
    "rl_scan",
    "train_scan_policy",
]

DEFAULT_SCAN_POLICY = shipped_path("sparse_scan_ppo")


class SmallCNN(BaseFeaturesExtractor):
    """Three strided convolutions and a 128-wide layer: (B, 3, 64, 64) uint8 -> (B, 128)."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        channels = int(observation_space.shape[0])
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.linear = nn.Sequential(nn.Linear(32 * 16, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations))


#: The network the scan policy is trained and loaded with.
POLICY_KWARGS: dict[str, Any] = {"features_extractor_class": SmallCNN, "normalize_images": True}
#: The features extractors a scan-policy file may name (an allow-list).
SCAN_EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {"small_cnn": SmallCNN}


class ScanPolicy:
    """A trained PPO scan policy (SB3's policy module) and the env geometry it was trained
    for."""

    def __init__(self, policy: Any, observation_size: int, grid: int) -> None:
        self.policy = policy
        self.observation_size = observation_size
        self.grid = grid

    def chooser(self, coverage: float) -> PatchChooser:
        """Patch scores for `patch_scan` at ``coverage``: the policy's action probabilities
        (the most probable patch with room left is scanned: deterministic)."""
        from emauto.tasks.sparse_scan.env import scan_observation

        def choose(values: np.ndarray, mask: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
            observation = scan_observation(
                values, mask, reconstruction, coverage, self.observation_size
            )
            tensor, _ = self.policy.obs_to_tensor(observation)
            with torch.no_grad():
                probs = self.policy.get_distribution(tensor).distribution.probs
            return np.asarray(probs[0].cpu().numpy(), dtype=np.float64)

        return choose


def load_scan_policy(path: str | Path) -> ScanPolicy:
    """Load a policy folder written by `train_scan_policy` (no unpickling)."""
    folder = Path(path)
    if not (folder / POLICY_FILE).is_file():
        raise ModelFileError(f"{folder}: expected a scan-policy folder with {POLICY_FILE}")
    policy, _ = load_policy_file(folder / POLICY_FILE, extractors=SCAN_EXTRACTORS, algo="ppo")
    observation_space, action_space = policy.observation_space, policy.action_space
    if not (
        isinstance(observation_space, spaces.Box)
        and observation_space.shape is not None
        and isinstance(action_space, spaces.Discrete)
    ):
        raise ModelFileError(f"{folder}: not a SparseScan-v0 policy (Box images, Discrete patches)")
    grid = round(float(np.sqrt(int(action_space.n))))
    return ScanPolicy(policy, int(observation_space.shape[-1]), grid)


@lru_cache(maxsize=1)
def load_default_scan_policy() -> ScanPolicy:
    """The shipped scan policy (``emauto/models/weights/sparse_scan_ppo``)."""
    return load_scan_policy(DEFAULT_SCAN_POLICY)


def rl_scan(
    shape: tuple[int, int], coverage: float, measure: Measure, seed: int = 0
) -> tuple[ScanPlan, np.ndarray]:
    """``rl``: patch by patch, each patch chosen by the shipped PPO scan policy."""
    chooser = load_default_scan_policy().chooser(coverage)
    return patch_scan(shape, coverage, measure, chooser, seed=seed)


def train_scan_policy(
    config: ScanRLConfig, out: str | Path, *, tensorboard_log: str | Path | None = None
) -> Path:
    """Train PPO on `emauto/SparseScan-v0` (seed-1 twin images) and save it to ``out``.
    The training episodes' mean reward is printed on stderr after each rollout; TensorBoard
    logs go to ``tensorboard_log`` if given; Ctrl-C saves the policy reached so far (its
    notes say ``interrupted``)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from emauto.models.sb3_callbacks import EpisodeStatsPrinter
    from emauto.tasks.sparse_scan.env import SparseScanEnv

    torch.set_num_threads(2)
    started = time.perf_counter()
    bank = SparseScanEnv(images_per_specimen=config.images_per_specimen, seed=config.seed).images
    print(f"[train-scan rl] {len(bank)} training images", file=sys.stderr, flush=True)
    env = make_vec_env(
        SparseScanEnv, n_envs=config.n_envs, seed=config.seed, env_kwargs={"images": bank}
    )
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=config.n_steps,
        batch_size=64,
        learning_rate=config.learning_rate,
        gamma=0.95,
        ent_coef=0.01,
        seed=config.seed,
        device=config.device,
        policy_kwargs=POLICY_KWARGS,
        tensorboard_log=None if tensorboard_log is None else str(tensorboard_log),
        verbose=0,
    )
    printer = EpisodeStatsPrinter(every=config.n_steps * config.n_envs)
    notes = learn_until_interrupted(
        model, config.total_timesteps, callback=printer, progress_bar=True
    )
    folder = Path(out)
    save_policy_file(model, folder / POLICY_FILE, extractors=SCAN_EXTRACTORS, training=notes)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    print(
        f"[train-scan rl] {notes['timesteps_done']} steps in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return folder
