"""``rl_belief``: the learned stop on `bo`'s posterior — its choices carried out, the recorded
stop outcomes against the real final move, the replay env's rewards, the actor file and a
tiny training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.errors import ModelFileError
from emauto.tasks.probe_tuning.belief_training import (
    BeliefTrainingConfig,
    StopReplayEnv,
    load_episodes,
    record_episode,
    replay_step,
    save_episodes,
    train_belief_stop,
)
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.decisions import ACTION_NVEC, OBSERVATION_SIZE
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.tasks.probe_tuning.policies.base import run_episode
from emauto.tasks.probe_tuning.policies.belief_stop import (
    FEATURE_NAMES,
    FEATURE_SIZE,
    BeliefStopPolicy,
    Choice,
    StopActor,
)
from emauto.tasks.probe_tuning.policies.decider import ActorSpec, DecisionActor
from emauto.tasks.probe_tuning.policies.objective import AberrationMeter
from emauto.wrappers.counting import CountingMicroscope

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _episode(strehl: list[float], can: list[bool] | None = None) -> dict[str, np.ndarray]:
    n = len(strehl)
    return {
        "features": np.zeros((n, FEATURE_SIZE), dtype=np.float32),
        "can_measure": np.array(can if can is not None else [True] * n),
        "frames": np.arange(n) * 3 + 4,
        "strehl": np.array(strehl),
        "extra_frame": np.array([True] + [False] * (n - 1)),
        "final_strehl": np.array(strehl[-1]),
        "final_predicted": np.array(strehl[-1]),
    }


def test_replay_rewards_follow_the_choice() -> None:
    episode = _episode([0.3, 0.9, 0.85])
    cost, penalty = 0.01, 4.0

    def step(t: int, choice: Choice) -> tuple[float, bool]:
        return replay_step(episode, t, choice, 0.8, cost, penalty)

    assert step(0, Choice.MEASURE) == (pytest.approx(-3 * cost), False)
    assert step(1, Choice.DECLARE) == (pytest.approx(1.0), True)  # aligned, declared
    assert step(0, Choice.DECLARE) == (pytest.approx(-penalty - cost), True)  # + settling frame
    assert step(1, Choice.OPERATOR) == (0.0, True)  # handed over: nothing won or lost
    assert step(2, Choice.MEASURE) == (0.0, True)  # the last point: measuring ends it


def test_the_replay_env_passes_gymnasiums_checker() -> None:
    env = StopReplayEnv([_episode([0.3, 0.9]), _episode([0.1, 0.2, 0.5])])
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=0)
    assert observation["public"].shape == (FEATURE_SIZE,)
    assert len(FEATURE_NAMES) == FEATURE_SIZE


def test_the_actor_file_is_its_own_kind(tmp_path: Path) -> None:
    spec = ActorSpec(observation_size=FEATURE_SIZE, action_nvec=StopActor.action_nvec, hidden=(8,))
    actor = StopActor(spec)
    actor.save(tmp_path / "actor.pt")
    features = np.linspace(-1, 1, FEATURE_SIZE).astype(np.float32)
    assert np.array_equal(StopActor.load(tmp_path / "actor.pt").act(features), actor.act(features))
    other = ActorSpec(observation_size=OBSERVATION_SIZE, action_nvec=ACTION_NVEC, hidden=(8,))
    DecisionActor(other).save(tmp_path / "decision.pt")
    with pytest.raises(ModelFileError):
        StopActor.load(tmp_path / "decision.pt")


def _run(
    twin: SimulatedMicroscope, decide: Any, budget: int, seed: int = 1000
) -> tuple[Any, BeliefStopPolicy]:
    counter = CountingMicroscope(twin)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=budget))
    meter = AberrationMeter(env.knobs, counter, last_frame=lambda: env.last_frame)
    policy = BeliefStopPolicy(env.knobs, env.step_limits, meter, decide)
    return run_episode(env, policy, seed, counter, max_acquisitions=budget), policy


def test_each_choice_is_carried_out(carbon: SimulatedMicroscope) -> None:
    """Declare at the first decision: ends early, declared; hand over: ends, not declared;
    measure always: runs to the budget. The actor is asked only after a measurement."""
    asked: list[np.ndarray] = []

    def declare(features: np.ndarray, can_measure: bool) -> Choice:
        asked.append(features)
        return Choice.DECLARE

    result, policy = _run(carbon, declare, 31)
    assert result.ended_by == "policy" and result.declared_aligned
    assert policy.accepted == 1 and result.acquisitions <= 10
    assert len(asked) == 1 and np.all(np.isfinite(asked[0]))
    result, _ = _run(carbon, lambda f, c: Choice.OPERATOR, 31)
    assert result.ended_by == "policy" and not result.declared_aligned
    assert result.needs_operator
    result, _ = _run(carbon, lambda f, c: Choice.MEASURE, 13)
    assert result.ended_by in ("budget", "policy") and result.acquisitions == 13
    assert not result.declared_aligned


def test_recorded_stop_outcomes_match_the_real_final_move(
    carbon_uri: str, specimen_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome recorded for a stop (the twin's lens model after the final move, on a
    copy) is the twin's true Strehl ratio after the real final move at the budget."""
    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    episode = record_episode(carbon_uri + "?seed=7", 0.01, 1001, 16)
    assert len(episode["strehl"]) >= 2
    assert np.all(np.diff(episode["frames"]) > 0)
    assert np.all((episode["strehl"] >= 0) & (episode["strehl"] <= 1))
    assert float(episode["final_predicted"]) == pytest.approx(
        float(episode["final_strehl"]), abs=1e-6
    )


def test_tiny_training_writes_an_actor_that_loads(
    carbon_uri: str, specimen_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording on Dask into a folder (resumed), PPO on the replay, the actor and its record."""
    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    config = BeliefTrainingConfig(
        microscopes=(carbon_uri + "?seed=7",),
        budget=7,
        episodes=2,
        validation=1,
        timesteps=64,
        n_envs=1,
        n_steps=32,
        batch_size=32,
        workers=1,
    )
    folder = tmp_path / "episodes"
    report = train_belief_stop(config, tmp_path / "belief", folder=folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["chunk-0000000.npz"]  # 3 episodes
    actor = StopActor.load(tmp_path / "belief" / "actor.pt")
    assert actor.spec.provenance["episodes"] == 2
    saved = json.loads((tmp_path / "belief" / "training.json").read_text())
    assert saved["validation"]["episodes"] == report["validation"]["episodes"] == 1
    again = train_belief_stop(config, tmp_path / "again", folder=folder, progress=False)
    assert (report["chunks_read_from_the_folder"], again["chunks_read_from_the_folder"]) == (0, 1)
    assert again["counterfactual_error"] == report["counterfactual_error"]


def test_episodes_file_round_trip(tmp_path: Path) -> None:
    episodes = [_episode([0.1, 0.9]), _episode([0.5])]
    loaded = load_episodes(save_episodes(episodes, tmp_path / "e.npz"))
    assert len(loaded) == 2
    for a, b in zip(episodes, loaded, strict=True):
        assert set(a) == set(b)
        assert all(np.array_equal(a[k], b[k]) for k in a)
