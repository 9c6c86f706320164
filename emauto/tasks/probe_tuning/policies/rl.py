"""Reinforcement learning (stable-baselines3 PPO or SAC) on `emauto/ProbeTuning-v0`.

Features: by default (``features: estimator``) the frozen CNN estimator reads each
observation's Ronchigram pair and the last action (the knob change between the two frames);
its aberration means and log-variances, both frames' flatness and the action history form
a vector observation (`EstimatorObservation`, a Gymnasium wrapper: the estimator runs once
per env step, not in every gradient step) for SB3's MLP policy. ``features: cnn`` learns
SB3's NatureCNN on the raw observation instead. Training uses vectorised envs, evaluation
and checkpoint callbacks (each evaluation printed on stderr: steps, mean reward, success rate)
and a progress bar; TensorBoard logs on request (``emauto train`` asks for them when
tensorboard is installed); Ctrl-C ends training early and saves the policy reached so far.
A trained policy is a folder: ``policy.pt`` (the SB3 policy's tensors and description,
`emauto.models.sb3_policy`: loaded without unpickling), ``config.yaml`` (the
`RLTrainingConfig`), ``normalization.json`` (reward normalisation statistics; observations
are not normalised) and, for estimator features,
``estimator.json`` (the estimator file's name and SHA-256: the policy is loaded with that
very estimator or not at all). The best policy of the evaluations and the periodic
checkpoints are policy folders too (``best/``, ``checkpoints/<algo>_<steps>_steps/``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from gymnasium import spaces

from emauto.errors import ModelFileError
from emauto.models.estimator import DEFAULT_WEIGHTS, RonchigramEstimator
from emauto.models.sb3_policy import (
    POLICY_FILE,
    learn_until_interrupted,
    load_policy_file,
    save_policy_file,
)
from emauto.models.weights import file_digest, shipped_path
from emauto.tasks.probe_tuning.config import RLTrainingConfig
from emauto.tasks.probe_tuning.policies.base import Observation, RunsToTheBudget
from emauto.tasks.probe_tuning.policies.flatness import flatness_torch
from emauto.units import load_yaml

#: Flatness (about 0.07-0.15) times this is of order one, like the other features.
FLATNESS_GAIN = 10.0
DEFAULT_POLICY = shipped_path("probe_tuning_ppo")


class EstimatorFeatureMap:
    """A ProbeTuning-v0 observation -> the feature vector (float32): the frozen estimator's
    means (in units of each knob's scale) and log-variances / 10 at the latest frame, the
    flatness of both frames (x `FLATNESS_GAIN`) and the action history."""

    def __init__(
        self,
        estimator: RonchigramEstimator,
        knobs: Sequence[str],
        step_limits_m: Sequence[float],
        history_length: int,
    ) -> None:
        self.estimator = estimator
        self.knobs = tuple(knobs)
        self.step_limits_m = np.asarray(step_limits_m, dtype=np.float64)
        self.size = 2 * len(estimator.knobs) + 2 + history_length * len(self.knobs)
        self._scales = np.asarray(estimator.metadata.scales_m, dtype=np.float64)

    @torch.no_grad()
    def __call__(self, observation: Observation) -> np.ndarray:
        history = np.asarray(observation["history"], dtype=np.float32).ravel()
        last_action = history[-len(self.knobs) :] * self.step_limits_m
        change = dict(zip(self.knobs, last_action, strict=True))
        pair = observation["ronchigram"]
        mean_m, std_m = self.estimator.predict(
            pair[None], self.estimator.change_vector(change)[None]
        )
        mean, std = mean_m[0] / self._scales, std_m[0] / self._scales
        log_var = 2 * np.log(np.maximum(std, 1e-12))
        images = torch.from_numpy(pair[None].astype(np.float32) / 255.0)
        flat = FLATNESS_GAIN * flatness_torch(images, self.estimator.metadata.observation_margin)
        parts = [mean, log_var / 10.0, flat[0].numpy(), history]
        return np.concatenate(parts).astype(np.float32)


class EstimatorObservation(gym.ObservationWrapper[np.ndarray, Any, Observation]):
    """ProbeTuning-v0 with `EstimatorFeatureMap` vectors as its observations."""

    def __init__(self, env: gym.Env[Observation, Any], features: EstimatorFeatureMap) -> None:
        super().__init__(env)
        self.features = features
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(features.size,), dtype=np.float32
        )

    def observation(self, observation: Observation) -> np.ndarray:
        return self.features(observation)


def _feature_map(config: RLTrainingConfig, estimator: RonchigramEstimator) -> EstimatorFeatureMap:
    return EstimatorFeatureMap(
        estimator, config.env.knobs(), config.env.step_limits(), config.env.history_length
    )


def _policy_estimator(folder: Path) -> RonchigramEstimator:
    """The estimator a policy folder was trained with (`estimator.json`), digest checked."""
    try:
        record = json.loads((folder / "estimator.json").read_text())
        recorded, digest = Path(record["path"]), str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{folder}: no readable estimator.json ({exc})") from exc
    for candidate in (DEFAULT_WEIGHTS, recorded, folder / recorded.name):
        if candidate.is_file() and file_digest(candidate) == digest:
            return RonchigramEstimator.load(candidate)
    raise ModelFileError(
        f"{folder}: trained with the estimator {recorded.name} (sha256 {digest[:12]}…), which "
        "is neither the shipped estimator nor found beside the policy"
    )


class SB3Policy(RunsToTheBudget):
    """A trained SB3 policy module behind the `TuningPolicy` interface: ``name = "rl"``."""

    name = "rl"

    def __init__(
        self, module: Any, config: RLTrainingConfig, features: EstimatorFeatureMap | None = None
    ) -> None:
        self.module = module
        self.config = config
        self.features = features
        self._observation: Observation | None = None

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self._observation = observation

    def suggest(self) -> np.ndarray:
        assert self._observation is not None, "reset() first"
        observation: Any = self._observation
        if self.features is not None:
            observation = self.features(observation)
        action, _ = self.module.predict(observation, deterministic=True)
        return np.asarray(action, dtype=np.float32)

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self._observation = observation


def _algorithm(name: str) -> Any:
    from stable_baselines3 import PPO, SAC

    return {"ppo": PPO, "sac": SAC}[name]


def load_policy(path: str | Path | None = None) -> SB3Policy:
    """Load a trained policy folder (default: the one shipped with emauto), without
    unpickling anything; `ModelFileError` for a missing or bad folder."""
    folder = Path(path) if path else DEFAULT_POLICY
    if not (folder / POLICY_FILE).is_file() or not (folder / "config.yaml").is_file():
        raise ModelFileError(
            f"{folder}: expected a policy folder with {POLICY_FILE} and config.yaml"
        )
    config = load_yaml(folder / "config.yaml", RLTrainingConfig)
    module, _ = load_policy_file(folder / POLICY_FILE, algo=config.algo)
    features = None
    if config.features == "estimator":
        features = _feature_map(config, _policy_estimator(folder))
        expected = (features.size,)
        if getattr(module.observation_space, "shape", None) != expected:
            raise ModelFileError(
                f"{folder}: the policy reads observations of shape "
                f"{module.observation_space}, its estimator features are {expected}"
            )
    return SB3Policy(module, config, features)


def _make_env(
    config: RLTrainingConfig, role: str = "train", estimator_path: Path | None = None
) -> Any:
    def factory() -> gym.Env[Any, Any]:
        import uuid

        from emauto.tasks.probe_tuning.env import ProbeTuningEnv

        record = None
        if config.record_dir is not None:  # one session per env, in any process
            record = config.record_dir / f"{role}-{uuid.uuid4().hex[:12]}"
        env = ProbeTuningEnv(config.microscope, config.env, record=record)
        if estimator_path is None:
            return env
        estimator = RonchigramEstimator.load(estimator_path)
        return EstimatorObservation(env, _feature_map(config, estimator))

    return factory


def _write_policy_folder(
    model: Any,
    folder: Path,
    config: RLTrainingConfig,
    estimator: Path | None,
    env: Any,
    training: dict[str, Any],
) -> Path:
    """Write a loadable policy folder (see the module docstring) for ``model`` now."""
    save_policy_file(model, folder / POLICY_FILE, training=training)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    statistics = {
        "reward_return_mean": float(env.ret_rms.mean),
        "reward_return_var": float(env.ret_rms.var),
        "observations": "not normalised",
    }
    (folder / "normalization.json").write_text(json.dumps(statistics, indent=2))
    if estimator is not None:
        shipped = estimator.resolve() == DEFAULT_WEIGHTS.resolve()
        record = {
            "path": DEFAULT_WEIGHTS.name if shipped else str(estimator),
            "sha256": file_digest(estimator),
        }
        (folder / "estimator.json").write_text(json.dumps(record, indent=2))
    return folder


def train_policy(
    config: RLTrainingConfig,
    out: str | Path,
    *,
    estimator_path: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train PPO or SAC per ``config``; write the policy folder ``out`` and return it.

    Ctrl-C during training stops it and writes the policy reached so far (its ``policy.pt``
    notes ``interrupted`` and the steps done)."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    from emauto.models.sb3_callbacks import EpisodeStatsPrinter, PrintedEvalCallback

    root = Path(out)
    estimator = None
    if config.features == "estimator":
        estimator = Path(estimator_path or DEFAULT_WEIGHTS)
        RonchigramEstimator.load(estimator)  # a bad file fails here, not in every env
    vec_cls = SubprocVecEnv if config.vec_env == "subproc" else DummyVecEnv
    env = make_vec_env(
        _make_env(config, "train", estimator),
        n_envs=config.n_envs,
        seed=config.seed,
        vec_env_cls=vec_cls,
    )
    env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=config.gamma)
    eval_env = VecNormalize(
        make_vec_env(_make_env(config, "eval", estimator), n_envs=1, seed=config.seed + 10_000),
        norm_obs=False,
        norm_reward=False,
        training=False,
    )

    def write(model: Any, folder: Path, **notes: Any) -> None:
        steps = int(model.num_timesteps)
        training = {"total_timesteps": config.total_timesteps, "timesteps_done": steps, **notes}
        _write_policy_folder(model, folder, config, estimator, env, training)

    class SaveBest(BaseCallback):
        """Called by `EvalCallback` on a new best mean reward."""

        def _on_step(self) -> bool:
            write(self.model, root / "best", note="best evaluation so far")
            return True

    class Checkpoint(BaseCallback):
        """Every ``every`` calls (each call is one step of every env): a policy folder."""

        def __init__(self, every: int) -> None:
            super().__init__()
            self.every = every

        def _on_step(self) -> bool:
            if self.n_calls % self.every == 0:
                steps = self.model.num_timesteps
                write(self.model, root / "checkpoints" / f"{config.algo}_{steps}_steps")
            return True

    policy_kwargs: dict[str, Any] = {"net_arch": list(config.net_arch)}
    common: dict[str, Any] = {
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "gamma": config.gamma,
        "seed": config.seed,
        "device": config.device,
        "policy_kwargs": policy_kwargs,
        "tensorboard_log": str(root / "tensorboard") if config.tensorboard else None,
        "verbose": 0,
    }
    if config.algo == "ppo":
        common["n_steps"] = config.n_steps
    network = "MlpPolicy" if estimator is not None else "MultiInputPolicy"
    model = _algorithm(config.algo)(network, env, **common)
    per_env = max(1, config.n_envs)
    callbacks = [
        PrintedEvalCallback(
            eval_env,
            n_eval_episodes=config.eval_episodes,
            eval_freq=max(1, config.eval_freq // per_env),
            callback_on_new_best=SaveBest(),
            log_path=str(root / "eval"),
            deterministic=True,
            verbose=0,
        ),
        Checkpoint(max(1, config.checkpoint_freq // per_env)),
        EpisodeStatsPrinter(every=config.n_steps * per_env),
    ]
    try:
        notes = learn_until_interrupted(
            model, config.total_timesteps, callback=callbacks, progress_bar=progress
        )
    finally:
        for vec in (env, eval_env):
            try:
                vec.close()
            except (OSError, EOFError) as exc:  # a subprocess env already gone after Ctrl-C
                print(f"closing an env failed: {exc}", file=sys.stderr)
    write(model, root, **notes)
    return root
