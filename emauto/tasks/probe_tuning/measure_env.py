"""`emauto/ProbeTuningMeasure-v0`: probe tuning where measuring is an action.

Each step is one decision (`decisions.Decision`: measure near or far, correct with gains per
aberration group, correct and stop, stop) carried out on a `ProbeTuningEnv` by a
`DecisionCore`; every frame is taken through the inner env's microscope and counted there.
An episode ends at a stop or when the next decision does not fit in the budget of frames
(`budget`, the reset frame included), never on ground truth.

Observation (a Dict): ``public`` float32 (`decisions.OBSERVATION_SIZE`,), what a real
microscope gives (`DecisionCore.observation`); ``privileged`` float32
(`decisions.PRIVILEGED_SIZE`,): the twin's true aberrations at the parked probe (scaled like
the estimate), their phase potential and Strehl ratio. Only a critic may read
``privileged`` while training (asymmetric actor-critic); a policy that acts reads
``public`` only (`policies.decider`).

Reward, from ground truth (it trains, it never steers): the change of the parked probe's
phase potential ``-ln(phase variance + 0.01) / ln(100)``, minus ``frame_cost`` per frame;
at the end ``+1`` when the state left (settled) reaches the success Strehl ratio, and
``-false_done_penalty`` when the policy declared it aligned and it is not.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from emauto import optics
from emauto.errors import ConfigError
from emauto.microscope import GroundTruth, Microscope
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.decisions import (
    ACTION_NVEC,
    OBSERVATION_SIZE,
    PRIVILEGED_SIZE,
    Decision,
    DecisionCore,
)
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.wrappers.base import unwrap
from emauto.wrappers.counting import CountingMicroscope

MeasureObservation = dict[str, np.ndarray]
#: The benchmark's budget of Ronchigrams per episode, the reset frame included.
DEFAULT_BUDGET = 31


class MeasureCorrectEnv(gym.Env[MeasureObservation, np.ndarray]):
    """Decisions on a twin (ground truth needed for the reward and the privileged vector)."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        microscope: str | Microscope = "sim://",
        config: ProbeTuningConfig | dict[str, Any] | None = None,
        *,
        budget: int = DEFAULT_BUDGET,
        frame_cost: float = 0.01,
        false_done_penalty: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = ProbeTuningConfig.model_validate(config)
        config = (config or ProbeTuningConfig()).model_copy(update={"max_steps": 1000})
        if isinstance(microscope, str):
            from emauto.drivers import connect

            microscope = connect(microscope)
        self.counter = CountingMicroscope(microscope)
        self.inner = ProbeTuningEnv(self.counter, config)
        twin = unwrap(microscope)
        if not isinstance(twin, GroundTruth):
            raise ConfigError("the decision env's reward needs a twin's ground truth")
        self._twin = twin
        self.core = DecisionCore(self.inner, budget)
        self.budget = budget
        self.frame_cost = frame_cost
        self.false_done_penalty = false_done_penalty
        self._wavelength = optics.wavelength(microscope.describe().energy_eV)
        self.observation_space = spaces.Dict(  # type: ignore[assignment]
            {
                "public": spaces.Box(-10.0, 10.0, (OBSERVATION_SIZE,), dtype=np.float32),
                "privileged": spaces.Box(-10.0, 10.0, (PRIVILEGED_SIZE,), dtype=np.float32),
            }
        )
        self.action_space = spaces.MultiDiscrete(list(ACTION_NVEC))
        self._potential = 0.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[MeasureObservation, dict[str, Any]]:
        super().reset(seed=seed)
        self.counter.reset_counts()
        self.counter.limit = self.budget
        _, info = self.inner.reset(seed=seed, options=options)
        self.core.reset(info)
        truth = self._parked_aberrations()
        self._potential = self._true_potential(truth)
        return self._observation(truth), self._info(ended=False, declared=False)

    def step(
        self, action: np.ndarray
    ) -> tuple[MeasureObservation, float, bool, bool, dict[str, Any]]:
        decision = Decision.from_action(action)
        before = self.core.frames
        plan = self.core.plan(decision)
        if plan.ends:
            if plan.final is not None and np.any(plan.final != 0):
                self.inner.settle(plan.final)
        else:
            assert plan.action is not None
            _, _, _, _, info = self.inner.step(plan.action)
            self.core.after_step(info)
        truth = self._parked_aberrations()  # read once a step: reward and critic alike
        previous, self._potential = self._potential, self._true_potential(truth)
        reward = self._potential - previous - self.frame_cost * (self.core.frames - before)
        ended = plan.ends
        terminated = ended and plan.declared
        truncated = ended and not plan.declared
        info = self._info(ended=ended, declared=plan.declared)
        if ended:
            reward += 1.0 if info["success"] else 0.0
            if plan.declared and not info["success"]:
                reward -= self.false_done_penalty
        return self._observation(truth), float(reward), terminated, truncated, info

    def close(self) -> None:
        self.inner.close()
        super().close()

    # ------------------------------------------------------------------ internals

    def _parked_aberrations(self) -> optics.Aberrations:
        """The twin's true aberrations with the deliberate probe defocus taken off."""
        truth = self._twin.true_aberrations()
        return truth.replace(C10=truth.C10 - self.core.offset_m)

    def _true_potential(self, truth: optics.Aberrations) -> float:
        """``-ln(phase variance + 0.01) / ln(100)`` of the parked probe's ``truth``."""
        variance = optics.phase_variance(truth, self._wavelength, self.inner.config.convergence_rad)
        return -math.log(variance + 0.01) / math.log(100.0)

    def _observation(self, truth: optics.Aberrations) -> MeasureObservation:
        scaled = np.array([getattr(truth, k) for k in self.core.knobs]) / self.core.scale_m
        strehl = optics.strehl_ratio(truth, self._wavelength, self.inner.config.convergence_rad)
        privileged = np.concatenate(
            [np.clip(scaled, -5, 5), [self._potential, float(strehl)]]
        ).astype(np.float32)
        return {"public": self.core.observation(), "privileged": privileged}

    def _info(self, *, ended: bool, declared: bool) -> dict[str, Any]:
        info: dict[str, Any] = {
            "acquisitions": self.counter.acquisitions,
            "dose_e": self.counter.dose_e,
            "frames": self.core.frames,
            "declared_aligned": declared,
        }
        if ended:
            strehl = self.inner.true_strehl()
            info["final_strehl"] = strehl
            info["success"] = strehl is not None and strehl >= self.inner.config.success_strehl
            info["is_success"] = info["success"]
        return info
