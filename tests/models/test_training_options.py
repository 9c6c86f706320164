"""The shared training options: overrides validated by the task's config, TensorBoard's
default, and the SB3 callbacks that print evaluations and training episodes on stderr."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from emauto.errors import ConfigError
from emauto.models.config import CompletionTrainingConfig, EstimatorTrainingConfig
from emauto.models.training_options import (
    TENSORBOARD_DIR,
    add_training_options,
    apply_overrides,
    parse_hyperparams,
    tensorboard_field,
    tensorboard_installed,
    tensorboard_log,
    tensorboard_wanted,
)
from emauto.tasks.probe_tuning.belief_training import BeliefTrainingConfig
from emauto.tasks.probe_tuning.config import RLTrainingConfig
from emauto.tasks.probe_tuning.decider_training import DeciderTrainingConfig
from emauto.tasks.region_search.policies.rl import TRAIN_MAX_STEPS, RegionTrainingConfig
from emauto.tasks.sparse_scan.config import ScanRLConfig


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_training_options(parser)
    return parser.parse_args(list(argv))


def test_the_options_parse_and_override_the_config() -> None:
    args = _args(
        "--seed", "3", "--n-envs", "2", "--device", "auto",
        "--hyperparams", "learning_rate=1e-4", "--hyperparams", "net_arch=[64, 32]",
        "--hyperparams", "env.max_steps=7", "--no-tensorboard",
    )  # fmt: skip
    assert args.tensorboard is False
    config = apply_overrides(
        RLTrainingConfig(),
        seed=args.seed,
        n_envs=args.n_envs,
        device=args.device,
        hyperparams=args.hyperparams,
    )
    assert (config.seed, config.n_envs, config.device) == (3, 2, "auto")
    assert config.learning_rate == pytest.approx(1e-4) and config.net_arch == (64, 32)
    assert config.env.max_steps == 7
    # everything not named keeps its value
    assert config.model_dump(exclude={"seed", "n_envs", "device", "learning_rate", "net_arch",
                                      "env"}) == RLTrainingConfig().model_dump(
        exclude={"seed", "n_envs", "device", "learning_rate", "net_arch", "env"}
    )  # fmt: skip
    assert apply_overrides(RLTrainingConfig()) == RLTrainingConfig()


@pytest.mark.parametrize(
    "config",
    [RLTrainingConfig(), DeciderTrainingConfig(), BeliefTrainingConfig(), ScanRLConfig(),
     RegionTrainingConfig()],
    ids=lambda c: type(c).__name__,
)  # fmt: skip
def test_every_rl_training_takes_seed_n_envs_and_device(config: Any) -> None:
    changed = apply_overrides(config, seed=5, n_envs=3, device="cpu")
    assert (changed.seed, changed.n_envs, changed.device) == (5, 3, "cpu")


def test_region_training_defaults_are_what_it_trained_with_before() -> None:
    config = RegionTrainingConfig()
    assert (config.total_timesteps, config.seed, config.n_envs, config.device) == (
        4096, 0, 1, "auto")  # fmt: skip
    assert (config.n_steps, config.batch_size, config.n_epochs) == (256, 64, 4)
    assert config.env.max_steps == TRAIN_MAX_STEPS and config.net_arch == (64,)


@pytest.mark.parametrize(
    ("config", "kwargs", "match"),
    [
        (RLTrainingConfig(), {"hyperparams": ["nope=1"]}, "has no field 'nope'"),
        (RLTrainingConfig(), {"hyperparams": ["env.nope=1"]}, "'env.nope'.*no field 'nope'"),
        (RLTrainingConfig(), {"hyperparams": ["seed.x=1"]}, "'seed' is a value"),
        (RLTrainingConfig(), {"hyperparams": ["n_envs=0"]}, "n_envs: Input should be greater"),
        (RLTrainingConfig(), {"n_envs": 0}, "n_envs: Input should be greater"),
        (RLTrainingConfig(), {"hyperparams": ["gamma=lots"]}, "gamma: Input should be a valid"),
        (RLTrainingConfig(), {"hyperparams": ["algo=dqn"]}, "algo: Input should be 'ppo'"),
        (RLTrainingConfig(), {"hyperparams": ["learning_rate"]}, "expected KEY=VALUE"),
        (EstimatorTrainingConfig(), {"n_envs": 2}, "--n-envs.*EstimatorTrainingConfig"),
        (CompletionTrainingConfig(), {"device": "cuda"}, "--device.*CompletionTrainingConfig"),
    ],
)
def test_an_unknown_key_or_a_bad_value_is_a_config_error_naming_it(
    config: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_overrides(config, **kwargs)


def test_hyperparams_are_read_as_yaml() -> None:
    parsed = parse_hyperparams(["a=1", "b=0.5", "c=[1, 2]", "d=true", "e=null", "f=x: [", "g="])
    assert parsed == {"a": 1, "b": 0.5, "c": [1, 2], "d": True, "e": None, "f": "x: [",
                      "g": None}  # fmt: skip


def test_tensorboard_is_on_by_default_when_installed(tmp_path: Path) -> None:
    assert tensorboard_installed()  # installed here (the dev extra)
    assert tensorboard_wanted(None) and tensorboard_wanted(True)
    assert not tensorboard_wanted(False)
    assert tensorboard_log(tmp_path / "out", None) == tmp_path / "out" / TENSORBOARD_DIR
    assert tensorboard_log(tmp_path / "estimator.pt", None) == tmp_path / TENSORBOARD_DIR
    assert tensorboard_log(tmp_path / "out", False) is None


# --------------------------------------------------------------------------- the callbacks


class _Guess(gym.Env[np.ndarray, np.int64]):
    """Guess the sign of the observation: 4 steps, a success when 3 or more are right."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        super().reset(seed=seed)
        self._t, self._right = 0, 0
        return self._draw(), {}

    def _draw(self) -> np.ndarray:
        self._obs = self.np_random.uniform(-1, 1, 1).astype(np.float32)
        return self._obs

    def step(self, action: Any) -> Any:
        right = int(action) == int(self._obs[0] > 0)
        self._t += 1
        self._right += right
        done = self._t == 4
        info = {"success": self._right >= 3} if done else {}
        return self._draw(), float(right), done, False, info


def test_evaluations_and_training_episodes_are_printed_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from emauto.models.sb3_callbacks import EpisodeStatsPrinter, PrintedEvalCallback

    model = PPO("MlpPolicy", make_vec_env(_Guess, n_envs=2, seed=0), n_steps=16, batch_size=16,
                seed=0, device="cpu", policy_kwargs={"net_arch": [8]})  # fmt: skip
    evaluation = PrintedEvalCallback(make_vec_env(_Guess, n_envs=1, seed=9), eval_freq=16,
                                     n_eval_episodes=3, log_path=None)  # fmt: skip
    episodes = EpisodeStatsPrinter(every=32)
    model.learn(96, callback=[evaluation, episodes])
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays free for a command's JSON
    assert evaluation.lines == [line for line in captured.err.splitlines() if "[eval]" in line]
    assert len(evaluation.lines) == 3  # steps 32, 64, 96 (16 calls of 2 envs each)
    assert evaluation.lines[0].startswith("[eval] 32 steps: mean reward ")
    assert "(3 episodes), success rate " in evaluation.lines[0]
    assert evaluation.lines[0].endswith("%")  # from the info's "success" key
    assert len(episodes.lines) == 3 and episodes.lines[-1].startswith("[train] 96 steps: ")
    assert "mean episode reward" in episodes.lines[-1]
    assert "(8 episodes), success rate" in episodes.lines[-1]  # 32 steps of 4-step episodes


def test_a_config_file_that_sets_tensorboard_is_kept_unless_a_flag_says_otherwise() -> None:
    unset, off = RLTrainingConfig(), RLTrainingConfig(tensorboard=False)
    assert tensorboard_field(unset, None) == {"tensorboard": True}  # installed: on
    assert tensorboard_field(off, None) == {}  # the file said false
    assert tensorboard_field(off, True) == {"tensorboard": True}
    assert tensorboard_field(unset, False) == {"tensorboard": False}
