"""Reinforcement learning (stable-baselines3 PPO or SAC) on `emauto/ProbeTuning-v0`.

Features: by default the frozen CNN estimator reads the observation's Ronchigram pair and
the last action (the knob change between the two frames) and hands its aberration means and
log-variances, with both frames' flatness and the action history, to the policy's MLP;
``features: cnn`` learns SB3's NatureCNN from scratch instead. Training uses vectorised
envs, evaluation and checkpoint callbacks and a progress bar; TensorBoard logs on request.
A trained policy is a folder: ``policy.zip`` (SB3's format), ``config.yaml`` (the
`RLTrainingConfig`) and ``normalization.json`` (reward normalisation statistics;
observations are not normalised).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from emauto.config import RLTrainingConfig, load_yaml
from emauto.errors import ModelFileError
from emauto.policies.base import Observation
from emauto.policies.estimator import EstimatorNet, RonchigramEstimator
from emauto.policies.flatness import flatness_torch

#: Flatness (about 0.07-0.15) times this is of order one, like the other features.
FLATNESS_GAIN = 10.0
DEFAULT_POLICY = Path(__file__).with_name("weights") / "probe_tuning_ppo"


class EstimatorFeatures(BaseFeaturesExtractor):
    """Frozen estimator outputs (mean, log-var per aberration), the flatness of both frames
    (`emauto.policies.flatness`, the fine-focus signal) and the action history."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        estimator_path: str,
        step_limits_m: list[float],
        knobs: list[str],
    ) -> None:
        estimator = RonchigramEstimator.load(estimator_path)
        history_dim = int(np.prod(observation_space["history"].shape or (0,)))
        super().__init__(observation_space, 2 * len(estimator.knobs) + 2 + history_dim)
        self.margin = estimator.metadata.observation_margin
        self.estimator: EstimatorNet = estimator.net
        for parameter in self.estimator.parameters():
            parameter.requires_grad_(False)
        scales = np.array(estimator.metadata.scales_m)
        # last action (env knob order) x step limit / scale -> change in estimator order
        mapping = np.zeros((len(knobs), len(estimator.knobs)), dtype=np.float32)
        for row, knob in enumerate(knobs):
            if knob in estimator.knobs:
                column = estimator.knobs.index(knob)
                mapping[row, column] = step_limits_m[row] / scales[column]
        self.action_to_change: torch.Tensor
        self.register_buffer("action_to_change", torch.from_numpy(mapping))
        self.n_knobs = len(knobs)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        history = observations["history"]
        last_action = history[:, -self.n_knobs :]
        change = last_action @ self.action_to_change
        self.estimator.eval()
        images = observations["ronchigram"]
        mean, log_var = self.estimator(images, change)
        flat = FLATNESS_GAIN * flatness_torch(images, self.margin)
        return torch.cat([mean, log_var / 10.0, flat, history], dim=1)


class SB3Policy:
    """A trained SB3 model behind the `TuningPolicy` interface: ``name = "rl"``."""

    name = "rl"

    def __init__(self, model: Any, config: RLTrainingConfig) -> None:
        self.model = model
        self.config = config
        self._observation: Observation | None = None

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self._observation = observation

    def suggest(self) -> np.ndarray:
        assert self._observation is not None, "reset() first"
        action, _ = self.model.predict(self._observation, deterministic=True)
        return np.asarray(action, dtype=np.float32)

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self._observation = observation


def _algorithm(name: str) -> Any:
    from stable_baselines3 import PPO, SAC

    return {"ppo": PPO, "sac": SAC}[name]


def load_policy(path: str | Path | None = None) -> SB3Policy:
    """Load a trained policy folder (default: the one shipped with emauto)."""
    folder = Path(path) if path else DEFAULT_POLICY
    if not (folder / "policy.zip").is_file() or not (folder / "config.yaml").is_file():
        raise ModelFileError(f"{folder}: expected a policy folder with policy.zip and config.yaml")
    config = load_yaml(folder / "config.yaml", RLTrainingConfig)
    try:
        model = _algorithm(config.algo).load(folder / "policy.zip", device="cpu")
    except Exception as exc:  # SB3 raises many kinds on a bad zip
        raise ModelFileError(f"{folder / 'policy.zip'}: not a readable SB3 model ({exc})") from exc
    return SB3Policy(model, config)


def _make_env(config: RLTrainingConfig, role: str = "train") -> Any:
    def factory() -> gym.Env[Any, Any]:
        import uuid

        from emauto.envs.probe_tuning import ProbeTuningEnv

        record = None
        if config.record_dir is not None:  # one session per env, in any process
            record = config.record_dir / f"{role}-{uuid.uuid4().hex[:12]}"
        return ProbeTuningEnv(config.microscope, config.env, record=record)

    return factory


def train_policy(
    config: RLTrainingConfig,
    out: str | Path,
    *,
    estimator_path: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train PPO or SAC per ``config``; write the policy folder ``out`` and return it."""
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    from emauto.policies.estimator import DEFAULT_WEIGHTS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vec_cls = SubprocVecEnv if config.vec_env == "subproc" else DummyVecEnv
    env = make_vec_env(
        _make_env(config), n_envs=config.n_envs, seed=config.seed, vec_env_cls=vec_cls
    )
    env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=config.gamma)
    eval_env = VecNormalize(
        make_vec_env(_make_env(config, "eval"), n_envs=1, seed=config.seed + 10_000),
        norm_obs=False,
        norm_reward=False,
        training=False,
    )
    knobs = list(config.env.knobs())
    policy_kwargs: dict[str, Any] = {"net_arch": list(config.net_arch)}
    if config.features == "estimator":
        policy_kwargs["features_extractor_class"] = EstimatorFeatures
        policy_kwargs["features_extractor_kwargs"] = {
            "estimator_path": str(estimator_path or DEFAULT_WEIGHTS),
            "step_limits_m": list(config.env.step_limits()),
            "knobs": knobs,
        }
    common: dict[str, Any] = {
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "gamma": config.gamma,
        "seed": config.seed,
        "device": config.device,
        "policy_kwargs": policy_kwargs,
        "tensorboard_log": str(out / "tensorboard") if config.tensorboard else None,
        "verbose": 0,
    }
    if config.algo == "ppo":
        common["n_steps"] = config.n_steps
    model = _algorithm(config.algo)("MultiInputPolicy", env, **common)
    per_env = max(1, config.n_envs)
    callbacks = [
        EvalCallback(
            eval_env,
            n_eval_episodes=config.eval_episodes,
            eval_freq=max(1, config.eval_freq // per_env),
            best_model_save_path=str(out / "best"),
            log_path=str(out / "eval"),
            deterministic=True,
            verbose=0,
        ),
        CheckpointCallback(
            save_freq=max(1, config.checkpoint_freq // per_env),
            save_path=str(out / "checkpoints"),
            name_prefix=config.algo,
        ),
    ]
    try:
        model.learn(config.total_timesteps, callback=callbacks, progress_bar=progress)
    finally:
        env.close()
        eval_env.close()
    model.save(out / "policy.zip")
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    statistics = {
        "reward_return_mean": float(env.ret_rms.mean),
        "reward_return_var": float(env.ret_rms.var),
        "observations": "not normalised",
    }
    (out / "normalization.json").write_text(json.dumps(statistics, indent=2))
    return out
