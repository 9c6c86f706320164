"""PPO (stable-baselines3) on `emauto/RegionSearch-v0`, and the trained policy's wrapper.

The policy reads the env's uint8 (3, 64, 64) observation through SB3's NatureCNN (64
features) and a small MLP. A trained policy is a folder: ``policy.pt`` (the PPO policy's
tensors and description, `emauto.models.sb3_policy`: no pickle) and ``config.json`` (the env
config and the training settings).

    emauto region-search train --out emauto/models/weights/region_search_ppo --timesteps 4096
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from emauto.errors import ModelFileError
from emauto.models.sb3_policy import (
    POLICY_FILE,
    learn_until_interrupted,
    load_policy_file,
    save_policy_file,
)
from emauto.models.weights import shipped_path
from emauto.tasks.region_search.env import RegionSearchConfig, RegionSearchEnv

DEFAULT_POLICY = shipped_path("region_search_ppo")
#: Training episodes are shorter than benchmark ones (fewer steps per field).
TRAIN_MAX_STEPS = 48


def train_region_policy(
    out: str | Path,
    *,
    timesteps: int = 4096,
    seed: int = 0,
    config: RegionSearchConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train PPO on fields drawn from ``config.field_seeds`` and save it to ``out``."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)  # small batches: one thread is fastest and leaves a core free
    config = config or RegionSearchConfig(max_steps=TRAIN_MAX_STEPS)
    env = RegionSearchEnv(config)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=256,
        batch_size=64,
        n_epochs=4,
        learning_rate=3e-4,
        gamma=0.95,
        seed=seed,
        policy_kwargs={"features_extractor_kwargs": {"features_dim": 64}, "net_arch": [64]},
        verbose=0,
    )
    start = time.perf_counter()
    notes = learn_until_interrupted(model, timesteps, progress_bar=progress)  # rich bar on stderr
    folder = Path(out)
    save_policy_file(model, folder / POLICY_FILE, training=notes)
    meta = {
        "env": config.model_dump(mode="json"),
        "timesteps": notes["timesteps_done"],
        "interrupted": notes["interrupted"],
        "seed": seed,
        "train_s": round(time.perf_counter() - start, 1),
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
