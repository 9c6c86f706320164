"""Measurement as an action: decisions, their frames, the decision env, the actor file and
the asymmetric actor-critic (the actor never reads the privileged observation)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.errors import ModelFileError
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.decider_training import AsymmetricActorCritic
from emauto.tasks.probe_tuning.decisions import (
    ACTION_NVEC,
    OBSERVATION_SIZE,
    PRIVILEGED_SIZE,
    Decision,
    DecisionCore,
    Mode,
)
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.tasks.probe_tuning.measure_env import MeasureCorrectEnv
from emauto.tasks.probe_tuning.policies.decider import ActorSpec, DecisionActor
from emauto.wrappers.counting import CountingMicroscope

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
#: A start close to alignment, untuned aberrations at zero (m).
NEAR_ALIGNED = {"C10": 5e-9, "C12a": 2e-9, "C21a": 20e-9, "C23b": 20e-9, "C30": 0.0}


def test_decisions_map_to_actions_and_bad_actions_are_refused() -> None:
    decision = Decision(Mode.CORRECT, (1.0, 1.25, 0.75))
    assert Decision.from_action(decision.to_action()) == decision
    for bad in ([5, 0, 0, 0], [0, 4, 0, 0], [0, 0, 0], [-1, 0, 0, 0]):
        with pytest.raises(ValueError, match="indices"):
            Decision.from_action(bad)


def test_each_decision_takes_its_frames_counted_at_the_microscope(
    carbon: SimulatedMicroscope,
) -> None:
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=100))
    core = DecisionCore(env, budget=31)
    _, info = env.reset(seed=3, options={"offsets": NEAR_ALIGNED})  # the fit is accepted
    core.reset(info)
    taken = []
    for mode in (Mode.MEASURE_NEAR, Mode.CORRECT, Mode.MEASURE_NEAR, Mode.MEASURE_FAR):
        before = counter.acquisitions
        plan = core.plan(Decision(mode))
        assert plan.action is not None and not plan.ends
        _, _, _, _, info = env.step(plan.action)
        core.after_step(info)
        taken.append(counter.acquisitions - before)
        assert core.frames == counter.acquisitions
    assert taken == [3, 1, 3, 3]
    assert core.offset_m == pytest.approx(60e-9)  # 40 nm, then further out: one C1 step
    plan = core.plan(Decision(Mode.STOP))
    assert plan.ends and plan.declared and plan.final is not None
    assert plan.final[0] == pytest.approx(-1.0)  # 60 nm off again: one C1 step limit


def test_a_decision_that_does_not_fit_in_the_budget_ends_the_episode(
    carbon: SimulatedMicroscope,
) -> None:
    env = ProbeTuningEnv(CountingMicroscope(carbon), ProbeTuningConfig(max_steps=100))
    core = DecisionCore(env, budget=3)  # the reset frame + 2: no room for a measurement
    _, info = env.reset(seed=3)
    core.reset(info)
    plan = core.plan(Decision(Mode.MEASURE_NEAR))
    assert plan.ends and not plan.declared and plan.final is None


def test_a_correction_without_a_measurement_measures(carbon: SimulatedMicroscope) -> None:
    env = ProbeTuningEnv(CountingMicroscope(carbon), ProbeTuningConfig(max_steps=100))
    core = DecisionCore(env, budget=31)
    _, info = env.reset(seed=3)
    core.reset(info)
    plan = core.plan(Decision(Mode.CORRECT_AND_STOP))
    assert plan.measure and not plan.ends


def test_the_decision_env_passes_gymnasiums_checker(carbon: SimulatedMicroscope) -> None:
    env = MeasureCorrectEnv(carbon, budget=10)
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(seed=1)
    assert observation["public"].shape == (OBSERVATION_SIZE,)
    assert observation["privileged"].shape == (PRIVILEGED_SIZE,)


def _spaces() -> tuple[spaces.Dict, spaces.MultiDiscrete]:
    observation = spaces.Dict(
        {
            "public": spaces.Box(-10, 10, (OBSERVATION_SIZE,), dtype=np.float32),
            "privileged": spaces.Box(-10, 10, (PRIVILEGED_SIZE,), dtype=np.float32),
        }
    )
    return observation, spaces.MultiDiscrete(ACTION_NVEC)


def test_the_actor_never_reads_the_privileged_observation() -> None:
    observation_space, action_space = _spaces()
    policy = AsymmetricActorCritic(observation_space, action_space, lambda _: 1e-4)
    rng = np.random.default_rng(0)
    public = torch.as_tensor(rng.normal(size=(4, OBSERVATION_SIZE)), dtype=torch.float32)
    values, logits = [], []
    for _ in range(2):
        privileged = torch.as_tensor(rng.normal(size=(4, PRIVILEGED_SIZE)), dtype=torch.float32)
        obs = {"public": public, "privileged": privileged}
        distribution = policy.get_distribution(obs)
        logits.append(torch.cat([d.logits for d in distribution.distribution], dim=1))
        values.append(policy.predict_values(obs))
    assert torch.equal(logits[0], logits[1])  # the actor: public only
    assert not torch.allclose(values[0], values[1])  # the critic reads the privileged part


def test_actor_file_round_trip(tmp_path: Path) -> None:
    spec = ActorSpec(observation_size=OBSERVATION_SIZE, action_nvec=ACTION_NVEC, hidden=(8,))
    actor = DecisionActor(spec)
    actor.save(tmp_path / "actor.pt")
    loaded = DecisionActor.load(tmp_path / "actor.pt")
    observation = np.linspace(-1, 1, OBSERVATION_SIZE).astype(np.float32)
    assert np.array_equal(loaded.act(observation), actor.act(observation))


class _Payload:
    """Unpickling this creates ``marker``: what a crafted file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_a_crafted_actor_file_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "actor.pt"
    torch.save({"format": "emauto-decision-actor/1", "payload": _Payload(marker)}, path)
    with pytest.raises(ModelFileError):
        DecisionActor.load(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelFileError):
        DecisionActor.load(path)
    assert not marker.exists()


def test_a_correction_that_spends_the_budget_is_kept(carbon: SimulatedMicroscope) -> None:
    """Budget 5: reset, a measurement (3 frames), the correction's frame: the budget is
    spent before the policy ingests it. Its final move must not undo a probe defocus the
    correction already took off (`DecisionCore.step_unobserved`)."""
    from emauto.tasks.probe_tuning.policies.base import run_episode
    from emauto.tasks.probe_tuning.policies.decider import DecisionPolicy

    def measure_then_correct(core: DecisionCore) -> Decision:
        return Decision(Mode.MEASURE_NEAR if core.estimate is None else Mode.CORRECT)

    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=30))
    policy = DecisionPolicy("test", DecisionCore(env, 5), measure_then_correct)
    result = run_episode(env, policy, 1000, counter, max_acquisitions=5)
    assert result.acquisitions == 5 and result.ended_by == "budget"
    corrected = result.strehl_path[-1]
    assert corrected > 0.3
    assert result.final_strehl >= corrected - 0.05


def test_tiny_training_writes_an_actor_that_loads(
    carbon_uri: str, specimen_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole recipe (expert rollouts, DAgger, critic warm-up, PPO), tiny."""
    import json

    from emauto.tasks.probe_tuning.decider_training import DeciderTrainingConfig, train_decider

    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    config = DeciderTrainingConfig(
        microscope=carbon_uri,
        expert_episodes=1,
        dagger_rounds=1,
        dagger_episodes=1,
        bc_epochs=5,
        ppo_timesteps=16,
        n_envs=1,
        n_steps=8,
        batch_size=8,
    )
    report = train_decider(config, tmp_path / "decider")
    assert report["ppo_timesteps"] >= 16 and not report["interrupted"]
    actor = DecisionActor.load(tmp_path / "decider" / "actor.pt")
    assert actor.spec.provenance["config"]["expert_episodes"] == 1
    saved = json.loads((tmp_path / "decider" / "training.json").read_text())
    assert saved["bc_states"] == report["bc_states"] > 0
