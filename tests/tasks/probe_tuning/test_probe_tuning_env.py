"""`emauto/ProbeTuning-v0` on the twin: checkers, determinism, actions, success, configs."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import emauto
from emauto.errors import ConfigError
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.units import load_yaml
from emauto.wrappers.counting import CountingMicroscope
from emauto.wrappers.safety import SafeMicroscope, SafetyConfig


@pytest.fixture
def scope(tiny_carbon: Path, specimen_cache: Path) -> emauto.microscope.Microscope:
    return emauto.connect(f"sim://?specimen={tiny_carbon}&seed=3", cache_dir=specimen_cache)


def test_registered_on_import() -> None:
    assert "emauto/ProbeTuning-v0" in gym.registry


def test_gymnasium_and_sb3_checkers_pass_without_warnings(
    scope: emauto.microscope.Microscope,
) -> None:
    env = gym.make("emauto/ProbeTuning-v0", microscope=scope).unwrapped  # a spec: render checks
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env)
        sb3_check_env(env, warn=True)


def test_gym_make_by_module_path(tiny_carbon: Path, specimen_cache: Path) -> None:
    env = gym.make(
        "emauto:emauto/ProbeTuning-v0",
        microscope=emauto.connect(f"sim://?specimen={tiny_carbon}", cache_dir=specimen_cache),
    )
    observation, info = env.reset(seed=0)
    assert observation["ronchigram"].shape == (2, 64, 64)
    assert np.array_equal(observation["ronchigram"][0], observation["ronchigram"][1])
    assert observation["ronchigram"].dtype == np.uint8
    assert info["acquisitions"] == 1
    env.close()


def test_same_seed_same_episode(tiny_carbon: Path, specimen_cache: Path) -> None:
    def episode() -> list[np.ndarray]:
        scope = emauto.connect(f"sim://?specimen={tiny_carbon}", cache_dir=specimen_cache)
        env = ProbeTuningEnv(scope)
        observation, _ = env.reset(seed=42)
        frames = [observation["ronchigram"]]
        for action in np.linspace(-1, 1, 3 * 7).reshape(3, 7):
            observation, *_ = env.step(action.astype(np.float32))
            frames.append(observation["ronchigram"])
        return frames

    first, second = episode(), episode()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], first[1])


def test_a_wrapped_twin_gives_the_same_episode(tiny_carbon: Path, specimen_cache: Path) -> None:
    """Below wrappers the env still scores with the twin's ground truth and restarts it from
    the episode's seed: the same rewards and Strehl ratios as on the bare twin."""

    def episode(wrap: bool) -> list[tuple[float, float]]:
        scope = emauto.connect(f"sim://?specimen={tiny_carbon}", cache_dir=specimen_cache)
        scope.set({"C10": 5e-9})  # undone by the restart at reset(seed=...)
        wrapped = CountingMicroscope(SafeMicroscope(scope, SafetyConfig())) if wrap else scope
        env = ProbeTuningEnv(wrapped, {"reward": "wavefront"})
        _, info = env.reset(seed=7)
        path = [(0.0, info["strehl"])]
        for action in np.linspace(-0.5, 0.5, 2 * 7).reshape(2, 7):
            _, reward, *_, info = env.step(action.astype(np.float32))
            path.append((reward, info["strehl"]))
        return path

    assert episode(wrap=True) == episode(wrap=False)


def test_action_moves_knobs_by_step_limits(scope: emauto.microscope.Microscope) -> None:
    env = ProbeTuningEnv(scope)
    env.reset(seed=1)
    before = scope.read().knobs
    action = np.zeros(7, dtype=np.float32)
    action[0], action[3] = 0.5, -1.0  # C10 +30 nm, C21a -350 nm
    env.step(action)
    after = scope.read().knobs
    assert after["C10"] - before["C10"] == pytest.approx(30e-9, rel=1e-9)
    assert after["C21a"] - before["C21a"] == pytest.approx(-350e-9, rel=1e-9)
    assert after["C12a"] == pytest.approx(before["C12a"])
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(7, np.nan, dtype=np.float32))


def test_undoing_the_start_succeeds(scope: emauto.microscope.Microscope) -> None:
    """An oracle step that cancels the start offsets reaches Strehl >= 0.8 and earns the
    success bonus, but does not end the episode: ground truth scores, it does not steer."""
    config = ProbeTuningConfig(
        start={"C1": 40e-9, "A1": 10e-9, "B2": 200e-9, "A2": 200e-9, "C3": 0.0}
    )
    env = ProbeTuningEnv(scope, config)
    _, info = env.reset(seed=5)
    assert info["strehl"] < 0.8
    knobs = scope.read().knobs
    action = np.array([-knobs[k] for k in env.knobs]) / env.step_limits
    _, reward, terminated, truncated, info = env.step(action.astype(np.float32))
    assert not terminated and not truncated and info["is_success"]
    assert info["strehl"] >= 0.8 and reward > 0.9
    assert info["acquisitions"] == 2


def test_episode_truncates(scope: emauto.microscope.Microscope) -> None:
    env = ProbeTuningEnv(scope, {"max_steps": 2})
    env.reset(seed=2)
    env.step(np.zeros(7, np.float32))
    *_, terminated, truncated, _ = env.step(np.zeros(7, np.float32))
    assert truncated and not terminated


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "tuning.yaml"
    bad.write_text("start:\n  C1: -5.0e-9\nmax_steps: 3\n")
    with pytest.raises(ConfigError, match=r"start\.C1"):
        load_yaml(bad, ProbeTuningConfig)
    bad.write_text("aberrations: [C1, Z9]\n")
    with pytest.raises(ConfigError, match=r"aberrations\.1"):
        load_yaml(bad, ProbeTuningConfig)
    bad.write_text("step_limits: {C1: 1.0e-9}\n")
    with pytest.raises(ConfigError, match="step_limits"):
        load_yaml(bad, ProbeTuningConfig)


def test_unknown_start_offsets_are_rejected(scope: emauto.microscope.Microscope) -> None:
    env = ProbeTuningEnv(scope)
    with pytest.raises(ConfigError, match="Z99"):
        env.reset(seed=0, options={"offsets": {"Z99": 1e-9}})


def test_closing_leaves_the_beam_blanked(scope: emauto.microscope.Microscope) -> None:
    env = ProbeTuningEnv(scope)
    env.reset(seed=0)
    env.close()
    assert scope.read().knobs["beam_blank"] == 1.0


def test_estimator_reward_sees_the_pair_and_the_change(
    scope: emauto.microscope.Microscope,
) -> None:
    """reward='estimator' (hardware) scores each frame pair with the given predictor only."""
    calls: list[tuple[tuple[int, ...], dict[str, float]]] = []

    def predictor(pair: np.ndarray, change: dict[str, float]) -> float:
        calls.append((pair.shape, dict(change)))
        return 0.5

    env = ProbeTuningEnv(scope, {"reward": "estimator"}, strehl_from_image=predictor)
    _, info = env.reset(seed=0)
    assert info["strehl"] == 0.5 and calls[0] == ((2, 64, 64), dict.fromkeys(env.knobs, 0.0))
    action = np.zeros(7, np.float32)
    action[0] = 0.5
    env.step(action)
    assert calls[1][1]["C10"] == pytest.approx(30e-9) and calls[1][1]["C12a"] == 0.0


def test_wavefront_reward_is_dense_and_rewards_correction(
    scope: emauto.microscope.Microscope,
) -> None:
    """Far from the optimum the Strehl reward is flat; the wavefront reward still says which
    way is better."""
    config = {"reward": "wavefront", "step_penalty": 0.0}
    env = ProbeTuningEnv(scope, config)
    zero = dict.fromkeys(env._all_knobs, 0.0)
    env.reset(seed=0, options={"offsets": {**zero, "C10": 50e-9}})
    action = np.zeros(7, np.float32)
    action[0] = -0.5  # 50 nm -> 20 nm: Strehl stays ~0, the wavefront improves
    _, better, *_, info = env.step(action)
    assert info["strehl"] < 0.05 and better > 0.05
    action[0] = 0.5  # back to 50 nm
    _, worse, *_ = env.step(action)
    assert worse == pytest.approx(-better, abs=0.02)


def test_ground_truth_rewards_need_a_twin(scope: emauto.microscope.Microscope) -> None:
    class NoTruth:
        def __init__(self, scope: emauto.microscope.Microscope) -> None:
            self._scope = scope

        def __getattr__(self, name: str) -> object:
            if name in ("strehl_ratio", "true_aberrations", "restart"):
                raise AttributeError(name)
            return getattr(self._scope, name)

    hardware = NoTruth(scope)
    with pytest.raises(ConfigError, match="ground truth"):
        ProbeTuningEnv(hardware, {"reward": "wavefront"})  # type: ignore[arg-type]
