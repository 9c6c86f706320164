"""The one interface every probe-tuning policy implements, and the episode loop.

A policy is told where an episode starts (`reset`), says whether it is done (`stop`: its
own decision, with its own confidence), proposes the next action (`suggest`: Box[-1, 1]^n,
``action x step limit`` is the knob change), learns what that action produced (`ingest`),
and at the episode's end names the last knob move that leaves the microscope in its best
state (`final_action`: e.g. undoing a measurement's probe defocus; no frame is taken).
The benchmark, the evaluation command and the agent daemon drive every policy through
`run_episode` only.

Every policy keeps a safe envelope (`envelope`): `run_episode` bounds the total excursion of
each knob from the episode's start, and when the policy's next move would leave that bound,
or its measurements keep being refused, it takes the knobs back to the best state the
policy has evidence for (the start without any) and ends the episode with "needs the
operator" (`StopDecision.needs_operator`), apart from a plain failure.

Ground truth scores, never steers: an episode ends at the policy's stop, at the budget, or at
the env's step limit, whatever the twin's true Strehl ratio is. Success is the true Strehl
ratio of the state the microscope is left in (after `final_action`), read once the episode
is over; `run_episode` reads no ground truth before that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from emauto.errors import AcquisitionBudgetError
from emauto.tasks.probe_tuning.policies.envelope import (
    NEEDS_OPERATOR,
    Envelope,
    MeasurementReport,
    envelope_bounds,
)
from emauto.wrappers.counting import CountingMicroscope

Observation = dict[str, np.ndarray]
#: ``on_step(action, reward, terminated, truncated, info)`` after each env step.
StepCallback = Callable[[np.ndarray, float, bool, bool, dict[str, Any]], None]


@dataclass(frozen=True)
class StopDecision:
    """A policy's own word that the episode is over.

    ``aligned``: the policy declares the probe aligned (False: it gives up).
    ``confidence``: its own estimate of the Strehl ratio it leaves (0-1), from its
    measurements, not from ground truth. ``reason``: for the record.
    ``needs_operator``: the policy hands the probe over to the operator (it cannot make
    progress safely: the daemon pauses); never together with ``aligned``.
    """

    aligned: bool
    confidence: float
    reason: str = ""
    needs_operator: bool = False

    def __post_init__(self) -> None:
        if self.aligned and self.needs_operator:
            raise ValueError("a stop cannot both declare the probe aligned and need the operator")


@runtime_checkable
class TuningPolicy(Protocol):
    """Stop or suggest an action, ingest its result; one episode at a time."""

    name: str

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        """Start an episode from its first observation."""

    def stop(self) -> StopDecision | None:
        """Asked before every `suggest`: a decision ends the episode here, None goes on."""

    def suggest(self) -> np.ndarray:
        """The next action, float32 in [-1, 1]^n."""

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        """What `action` produced."""

    def final_action(self) -> np.ndarray | None:
        """At the episode's end (a stop or the budget): the knob move (an action) that
        leaves the microscope in the policy's best state without another frame, e.g. undoing
        the probe defocus of a measurement in progress; None leaves the knobs as they are."""


@runtime_checkable
class ReportsMeasurements(Protocol):
    """A policy that measures tells the envelope what its measurements gave (optional)."""

    def measurement_report(self) -> MeasurementReport:
        """Accepted and refused measurement rounds this episode, and what the latest
        accepted one predicts (`envelope.MeasurementReport`)."""


class RunsToTheBudget:
    """For policies with no stop rule of their own: they never stop and leave the knobs as
    they are at the end."""

    def stop(self) -> StopDecision | None:
        return None

    def final_action(self) -> np.ndarray | None:
        return None


class ProbeOffset:
    """Book-keeping of a deliberate probe defocus: the action that undoes it."""

    def __init__(self, knobs: tuple[str, ...], step_limits_m: np.ndarray) -> None:
        self._index = knobs.index("C10") if "C10" in knobs else None
        self._step_limits_m = step_limits_m
        self.offset_m = 0.0

    def add(self, action: np.ndarray) -> None:
        """Count the C1 part of ``action`` (made by the policy to probe) as offset."""
        if self._index is not None:
            self.offset_m += float(action[self._index]) * float(self._step_limits_m[self._index])

    def undo(self) -> np.ndarray | None:
        """The action that removes the offset (None when there is none)."""
        if self._index is None or self.offset_m == 0.0:
            return None
        action = np.zeros(len(self._step_limits_m), dtype=np.float32)
        action[self._index] = -self.offset_m / float(self._step_limits_m[self._index])
        return np.clip(action, -1, 1).astype(np.float32)


EndReason = Literal["policy", "budget", "env"]


@dataclass
class EpisodeResult:
    """One episode, scored on the state it leaves.

    ``success``: the true Strehl ratio after the end (``final_strehl``) reaches the env's
    ``success_strehl``; NaN ``final_strehl`` (no ground truth) is no success.
    ``acquisitions`` and ``dose_e`` include the reset frame and the policy's own frames.
    ``ended_by``: the policy's stop, the budget or the env's step limit.
    ``declared_aligned`` / ``confidence``: the policy's stop decision, if it made one;
    a false done is ``declared_aligned and not success``.
    ``needs_operator``: the episode ended with the policy (or its envelope) handing over to
    the operator, apart from a plain failure. ``max_excursion_m``: the largest |change| of
    each tuned knob from the episode's start (m), the final moves included.
    ``first_reached_at``: the first acquisition whose true Strehl ratio reached the
    threshold (what the old oracle stop counted as success), for comparison only.
    ``final_phase_variance``: the true phase variance (rad^2) of that state.
    ``strehl_path`` / ``phase_variance_path`` / ``acquisitions_path``: the true Strehl ratio
    and phase variance (rad^2) of the probe at each env frame, and the acquisitions counted
    by then (for curves; ground truth, read after the fact).
    """

    success: bool
    acquisitions: int
    final_strehl: float
    best_strehl: float
    dose_e: float
    wall_s: float
    ended_by: EndReason = "budget"
    declared_aligned: bool = False
    confidence: float | None = None
    first_reached_at: int | None = None
    final_phase_variance: float = math.nan
    strehl_path: list[float] = field(default_factory=list)
    phase_variance_path: list[float] = field(default_factory=list)
    acquisitions_path: list[int] = field(default_factory=list)
    needs_operator: bool = False
    max_excursion_m: dict[str, float] = field(default_factory=dict)

    @property
    def false_done(self) -> bool:
        """The policy declared the probe aligned and it is not."""
        return self.declared_aligned and not self.success


def run_episode(
    env: Any,
    policy: TuningPolicy,
    seed: int,
    counter: CountingMicroscope | None = None,
    max_acquisitions: int | None = None,
    on_step: StepCallback | None = None,
    options: dict[str, Any] | None = None,
    score: bool = True,
    envelope: bool = True,
) -> EpisodeResult:
    """Run one episode of ``policy`` on the probe-tuning ``env`` from ``reset(seed=seed)``.

    The episode ends when the policy stops, when ``max_acquisitions`` are spent (the
    policy's own frames count: with ``counter``, the env's microscope wrapped, acquisitions
    and dose are counted at the Microscope boundary, where a frame past the budget is
    refused: a policy that measures on its own cannot overspend), or at the env's step
    limit. Then the
    policy's `final_action` is applied without a frame (`env.settle`) and, with ``score``,
    the twin's true Strehl ratio of that state is read (`env.true_strehl`): the only ground
    truth this loop reads. ``on_step(action, reward, terminated, truncated, info)`` is told
    every step (recording, progress); ``options`` go to ``env.reset``.

    With ``envelope`` (the default) the policy keeps the safe envelope (`envelope`): a move
    that would take a knob past its bound from the start, a final move too, or
    `envelope.MAX_REFUSED_ROUNDS` refused measurements in a row end the episode with
    "needs the operator", the knobs taken back (frameless) to the best state the policy has
    evidence for. Without it the excursion is still measured (``max_excursion_m``).
    """

    def spent() -> tuple[int, float]:
        if counter is not None:
            return counter.acquisitions, counter.dose_e
        return int(info["acquisitions"]), float(info["dose_e"])

    def budget_spent() -> bool:
        return max_acquisitions is not None and spent()[0] >= max_acquisitions

    def handover(why: str) -> StopDecision:
        confidence = 0.0 if guard.best_strehl is None else guard.best_strehl
        return StopDecision(False, confidence, f"{NEEDS_OPERATOR}: {why}", needs_operator=True)

    def settle(action: np.ndarray) -> None:
        env.settle(np.asarray(action, dtype=np.float32))
        change = getattr(env, "last_change", None)  # what the env made of it, knob limits in
        guard.moved(change if isinstance(change, dict) else guard.change_of(action))

    guard = Envelope(env.knobs, env.step_limits, envelope_bounds(env.config))
    reports = isinstance(policy, ReportsMeasurements)
    handed_over = False
    started = time.perf_counter()
    previous_limit = counter.limit if counter is not None else None
    if counter is not None:
        counter.reset_counts()
        counter.limit = max_acquisitions
    try:
        observation, info = env.reset(seed=seed, options=options)
        policy.reset(observation, info)
        path = [float(info["strehl"])]
        variances = [float(info.get("phase_variance_rad2", math.nan))]
        path_acquisitions = [spent()[0]]
        ended_by: EndReason = "budget"
        decision: StopDecision | None = None
        while not budget_spent():
            decision = policy.stop()
            if decision is not None:
                ended_by = "policy"
                break
            action = np.asarray(policy.suggest(), dtype=np.float32)
            if envelope and not guard.allows(action):
                decision, ended_by, handed_over = (
                    handover("its next move would leave the safe envelope"),
                    "policy",
                    True,
                )
                break
            observation, reward, terminated, truncated, info = env.step(action)
            change_m = info.get("change_m")
            guard.moved(change_m if isinstance(change_m, dict) else guard.change_of(action))
            path.append(float(info["strehl"]))
            variances.append(float(info.get("phase_variance_rad2", math.nan)))
            path_acquisitions.append(spent()[0])
            if on_step is not None:
                on_step(action, float(reward), bool(terminated), bool(truncated), info)
            if terminated or truncated:
                ended_by = "env"
                break
            if budget_spent():
                break
            try:
                policy.ingest(action, observation, float(reward), info)
            except AcquisitionBudgetError:  # the policy's own measurement ran out of frames
                break
            if reports:
                guard.record(policy.measurement_report())  # type: ignore[attr-defined]
            if envelope and guard.failing:
                decision, ended_by, handed_over = (
                    handover(f"{guard.refused_in_a_row} measurements refused in a row"),
                    "policy",
                    True,
                )
                break
    finally:
        if counter is not None:
            counter.limit = previous_limit
    final = None if handed_over else policy.final_action()
    if final is not None and np.any(final != 0):
        if envelope and not guard.allows(final):
            decision, ended_by, handed_over = (
                handover("its final move would leave the safe envelope"),
                "policy",
                True,
            )
        else:
            settle(final)
    if handed_over:
        for move in guard.return_actions():
            settle(move)
    acquisitions, dose = spent()
    final_strehl = env.true_strehl() if score else None
    final_strehl = math.nan if final_strehl is None else float(final_strehl)
    final_variance = env.true_phase_variance() if score else None
    final_variance = math.nan if final_variance is None else float(final_variance)
    threshold = float(env.config.success_strehl)
    reached = [n for n, s in zip(path_acquisitions, path, strict=True) if s >= threshold]
    return EpisodeResult(
        success=final_strehl >= threshold,
        acquisitions=acquisitions,
        final_strehl=final_strehl,
        best_strehl=max(path),
        dose_e=dose,
        wall_s=time.perf_counter() - started,
        ended_by=ended_by,
        declared_aligned=decision is not None and decision.aligned,
        needs_operator=decision is not None and decision.needs_operator,
        max_excursion_m=guard.excursion_by_knob(),
        confidence=None if decision is None else float(decision.confidence),
        first_reached_at=reached[0] if reached else None,
        final_phase_variance=final_variance,
        strehl_path=path,
        phase_variance_path=variances,
        acquisitions_path=path_acquisitions,
    )
