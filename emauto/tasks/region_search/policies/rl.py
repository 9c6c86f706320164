"""PPO (stable-baselines3) on `emauto/RegionSearch-v0`, and the trained policy's wrapper.

The policy reads the env's uint8 (3, 64, 64) observation through SB3's NatureCNN (64
features) and a small MLP. A trained policy is a folder: ``policy.pt`` (the PPO policy's
tensors and description, `emauto.models.sb3_policy`: no pickle) and ``config.json`` (the env
config and the training settings).

    emauto region-search train --out emauto/models/weights/region_search_ppo --timesteps 4096

(``--seed``, ``--n-envs``, ``--device`` and ``--hyperparams KEY=VALUE`` override fields of
`RegionTrainingConfig`.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from emauto.errors import ModelFileError
from emauto.models.sb3_policy import (
    POLICY_FILE,
    learn_until_interrupted,
    load_policy_file,
    save_policy_file,
)
from emauto.models.weights import shipped_path
from emauto.tasks.region_search.env import RegionSearchConfig, RegionSearchEnv
from emauto.units import StrictModel

DEFAULT_POLICY = shipped_path("region_search_ppo")
#: Training episodes are shorter than benchmark ones (fewer steps per field).
TRAIN_MAX_STEPS = 48


class RegionTrainingConfig(StrictModel):
    """`emauto region-search train`: PPO on `emauto/RegionSearch-v0` (its env config in
    ``env``: training episodes of `TRAIN_MAX_STEPS` steps)."""

    total_timesteps: int = Field(default=4096, ge=1, le=100_000_000)
    seed: int = Field(default=0, ge=0)
    n_envs: int = Field(default=1, ge=1, le=64, description="envs stepped in turn (dummy)")
    device: str = Field(default="auto", description="torch device: cpu, cuda, auto")
    n_steps: int = Field(default=256, ge=2, description="steps per env per PPO update")
    batch_size: int = Field(default=64, ge=2)
    n_epochs: int = Field(default=4, ge=1, le=1000)
    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    gamma: float = Field(default=0.95, gt=0, le=1)
    features_dim: int = Field(default=64, ge=1, le=4096, description="NatureCNN features")
    net_arch: tuple[int, ...] = (64,)
    env: RegionSearchConfig = RegionSearchConfig(max_steps=TRAIN_MAX_STEPS)


def train_region_policy(
    out: str | Path,
    *,
    timesteps: int = 4096,
    seed: int = 0,
    config: RegionSearchConfig | None = None,
    progress: bool = True,
    training: RegionTrainingConfig | None = None,
    tensorboard_log: str | Path | None = None,
) -> Path:
    """Train PPO on fields drawn from the env config's ``field_seeds`` and save it to
    ``out``. ``training`` (default: ``timesteps``, ``seed`` and ``config`` as the env) holds
    every setting. The training episodes' mean reward is printed on stderr after each
    rollout; TensorBoard logs go to ``tensorboard_log`` if given; Ctrl-C saves the policy
    reached so far (``interrupted`` in ``config.json`` and in the policy's notes)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from emauto.models.sb3_callbacks import EpisodeStatsPrinter

    torch.set_num_threads(1)  # small batches: one thread is fastest and leaves a core free
    if training is None:
        env_config = config or RegionSearchConfig(max_steps=TRAIN_MAX_STEPS)
        training = RegionTrainingConfig(total_timesteps=timesteps, seed=seed, env=env_config)
    config = training.env
    seed = training.seed
    env: Any = RegionSearchEnv(config)
    if training.n_envs > 1:
        env.close()
        env = make_vec_env(
            RegionSearchEnv, n_envs=training.n_envs, seed=seed, env_kwargs={"config": config}
        )
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=training.n_steps,
        batch_size=training.batch_size,
        n_epochs=training.n_epochs,
        learning_rate=training.learning_rate,
        gamma=training.gamma,
        seed=seed,
        device=training.device,
        policy_kwargs={
            "features_extractor_kwargs": {"features_dim": training.features_dim},
            "net_arch": list(training.net_arch),
        },
        tensorboard_log=None if tensorboard_log is None else str(tensorboard_log),
        verbose=0,
    )
    start = time.perf_counter()
    printer = EpisodeStatsPrinter(every=training.n_steps * training.n_envs)
    notes = learn_until_interrupted(  # rich bar on stderr
        model, training.total_timesteps, callback=printer, progress_bar=progress
    )
    folder = Path(out)
    save_policy_file(model, folder / POLICY_FILE, training=notes)
    meta = {
        "env": config.model_dump(mode="json"),
        "timesteps": notes["timesteps_done"],
        "interrupted": notes["interrupted"],
        "seed": seed,
        "train_s": round(time.perf_counter() - start, 1),
        "training": training.model_dump(mode="json"),
    }
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    env.close()
    return folder


class RegionPolicy:
    """``rl``: a trained PPO policy (SB3's policy module), observation -> action
    (deterministic)."""

    name = "rl"

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def reset(
        self, env: RegionSearchEnv, observation: np.ndarray, info: dict[str, Any], seed: int
    ) -> None:
        """A feed-forward policy keeps no state between episodes."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        action, _ = self.policy.predict(observation, deterministic=True)
        return np.asarray(action, dtype=np.float32)

    def observe(self, action: np.ndarray, observation: np.ndarray, info: dict[str, Any]) -> None:
        """Nothing to learn online."""


def load_region_policy(path: str | Path | None = None) -> RegionPolicy:
    """Load a policy folder (default: the shipped one), without unpickling;
    `ModelFileError` if missing/bad."""
    folder = Path(path) if path is not None else DEFAULT_POLICY
    file = folder / POLICY_FILE
    if not file.is_file():
        raise ModelFileError(
            f"{file}: no such policy; train one with `emauto region-search train --out {folder}`"
        )
    policy, _ = load_policy_file(file, algo="ppo")
    return RegionPolicy(policy)
