"""Ground truth scores, it never steers: episodes end at the policy's own stop or at the
budget, the env does not terminate on the true Strehl ratio, and a twin whose ground truth
raises runs the same episode, action for action, as one whose ground truth works."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.drivers.sim.uri import sim_config_from_uri
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.tasks.probe_tuning.policies.base import (
    Observation,
    RunsToTheBudget,
    StopDecision,
    run_episode,
)
from emauto.tasks.probe_tuning.policies.registry import make_policy
from emauto.wrappers.counting import CountingMicroscope


class GroundTruthRaises(SimulatedMicroscope):
    """The twin, but reading its ground truth is an error."""

    def strehl_ratio(self) -> float:
        raise AssertionError("ground truth read during control")

    def true_aberrations(self) -> Any:
        raise AssertionError("ground truth read during control")


def _twin(cls: type[SimulatedMicroscope], specimen_cache: Path) -> SimulatedMicroscope:
    config = sim_config_from_uri("sim://?seed=7").model_copy(update={"cache_dir": specimen_cache})
    return cls(config)


def _actions(
    microscope: SimulatedMicroscope, seed: int, method: str
) -> tuple[list[np.ndarray], Any]:
    """Run ``method`` on an estimator-rewarded env (which reads no ground truth) for 31
    frames."""
    counter = CountingMicroscope(microscope)
    config = ProbeTuningConfig(reward="estimator", max_steps=30)
    env = ProbeTuningEnv(counter, config)
    policy = make_policy(method, env)
    actions: list[np.ndarray] = []
    result = run_episode(
        env,
        policy,
        seed,
        counter,
        max_acquisitions=31,
        on_step=lambda action, *_: actions.append(action.copy()),
        score=False,
    )
    return actions, result


@pytest.mark.parametrize("method", ["shift", "shift_decide", "rl_decide", "rl_belief"])
def test_a_twin_whose_ground_truth_raises_runs_the_same_episode(
    carbon_uri: str, specimen_cache: Path, method: str
) -> None:
    raising_actions, raising = _actions(_twin(GroundTruthRaises, specimen_cache), 4, method)
    actions, normal = _actions(_twin(SimulatedMicroscope, specimen_cache), 4, method)
    assert len(raising_actions) == len(actions) > 2
    assert all(np.array_equal(a, b) for a, b in zip(raising_actions, actions, strict=True))
    assert raising.ended_by == normal.ended_by and raising.acquisitions == normal.acquisitions
    assert math.isnan(raising.final_strehl) and not raising.success  # not scored


class _StopsAfter(RunsToTheBudget):
    """Zero actions; stops after ``steps`` steps; its final action moves C1 by +0.5 limit."""

    name = "stops"

    def __init__(self, steps: int) -> None:
        self.steps, self.taken = steps, 0

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.taken = 0

    def stop(self) -> StopDecision | None:
        return StopDecision(True, 0.9, "test") if self.taken >= self.steps else None

    def suggest(self) -> np.ndarray:
        self.taken += 1
        return np.zeros(7, dtype=np.float32)

    def ingest(self, *args: Any) -> None:
        pass

    def final_action(self) -> np.ndarray | None:
        return np.array([0.5, 0, 0, 0, 0, 0, 0], dtype=np.float32)


def test_the_episode_ends_at_the_policys_stop_and_scores_the_state_it_leaves(
    carbon: SimulatedMicroscope,
) -> None:
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=30))
    before = {}

    def on_step(*_: Any) -> None:
        before["C10"] = carbon.read().knobs["C10"]

    result = run_episode(env, _StopsAfter(2), 3, counter, max_acquisitions=31, on_step=on_step)
    assert result.ended_by == "policy" and result.declared_aligned
    assert result.acquisitions == 3  # reset + 2 steps; the final action takes no frame
    after = carbon.read().knobs["C10"]
    assert after - before["C10"] == pytest.approx(0.5 * env.step_limits[0])
    # the state left, once the lenses have settled
    assert result.final_strehl == pytest.approx(carbon.strehl_ratio_after(env.config.lens_wait_s))
    assert result.success == (result.final_strehl >= 0.8)
    assert result.false_done == (not result.success)


def test_a_policy_that_never_stops_runs_to_the_budget(carbon: SimulatedMicroscope) -> None:
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=30))
    result = run_episode(env, _StopsAfter(10_000), 3, counter, max_acquisitions=6)
    assert result.ended_by == "budget" and result.acquisitions == 6
    assert not result.declared_aligned and result.confidence is None
