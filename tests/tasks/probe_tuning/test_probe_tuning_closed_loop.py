"""Closed loop: every probe-tuning policy, on fixed episodes of the twin, against the true
objective; and the focused tests that keep the scoring and the probe-shift measurement honest.

**The true objective** is the twin's true Strehl ratio of the state an episode leaves, read
once the lenses have settled (`settled_strehl`: the twin's optics one second after the last
command; its lenses settle with a 20 ms time constant), read by these tests from the twin
themselves; `EpisodeResult.final_strehl` must agree with it (bug 1 below, fixed).

**Episodes**: the benchmark's setting (the default start distribution, budget 31
Ronchigrams, `max_steps` 30) on the default amorphous carbon film (twin seed 7), episode
seeds `SEEDS` = 1000-1011, used neither by the benchmark (seed 0: 0-29) nor for choosing
any policy parameter (7000-7099). The twin and the policies are seeded and run on one
thread (`one_thread`): every real policy's figure below came out identical in every run
(about ten processes, BLAS on one or two threads). A broken policy's episodes can be chaotic
enough to differ between processes (with (d), `shift` aligned 2 of 12 in most runs, 3 in
some), so a margin is only counted as catching a mutation where it fails every time. The
margins leave room for another platform's floating point, and for the probe-shift stop
threshold (see `test_shift_aligns`). Each margin was chosen by measuring the real policy
and a broken one on the same episodes (figures in each test's docstring, measured
2026-12-02 on this commit). `run_policy` also checks, on every episode, that
`EpisodeResult.success` is its final Strehl ratio against 0.8.

**Mutations**, each checked by hand (edit, run the four closed-loop modules, see the
failure, revert):

- (a) `shift_correct._correction`: the sign of the B2 (C21a, C21b) correction flipped:
  `test_shift_aligns`, `test_cnn_shift_aligns`.
- (b) `shift_correct._correction`: the whole correction halved: `test_shift_aligns`,
  `test_cnn_shift_aligns`.
- (c) `probe_shift.shift_jacobians`: the drift added instead of subtracted:
  `test_the_drift_frame_cancels_specimen_drift`.
- (d) `probe_shift.MAX_MISFIT_M` x 1000: `test_refused_fits_are_the_wrong_ones` (and
  `test_shift_aligns` in most runs: at its margin, see above).
- (g) success counted past the budget, `base.run_episode`: the budget check removed
  (``budget_spent`` always False) or one step more allowed (``>`` for ``>=``):
  `test_the_episode_is_scored_at_the_budget`, `test_success_is_the_configs_threshold`,
  `test_nothing_is_asked_of_the_policy_once_the_budget_is_spent`;
  the policy asked to ingest the step that spent the budget (the ``if budget_spent():
  break`` before ``ingest`` removed):
  `test_nothing_is_asked_of_the_policy_once_the_budget_is_spent`.
- (h) success at Strehl 0.5: in the env's ``is_success``:
  `test_success_is_the_configs_threshold`; in `run_episode`'s threshold: that test and
  `run_policy`'s check (`test_shift_aligns`, `test_cnn_shift_aligns`,
  `test_cnn_improves_the_probe`).

- (i) `bayesopt.BayesOptPolicy._update`: the sign of the correction flipped (the aligned
  point ``+median`` of the start aberrations instead of ``-median``): `test_bo_aligns`
  (median gain -0.001, measured), `test_handoff_aligns_and_hands_over` (`bo`'s evaluations are
  its belief too), `test_the_learned_stop_aligns_with_fewer_frames`
  (gain -0.001, 0/12).
- (k) `rl_belief`'s actor replaced by one that always measures, or one that declares at its
  first decision: `test_the_learned_stop_aligns_with_fewer_frames` (31 Ronchigrams; 0/12
  with 12 false dones).
- (j) `simplex.NelderMeadPolicy._corrected`: the correction's sign flipped (``at + g r``):
  `test_simplex_aligns` (median gain -0.00004, measured).

(e) the atom finder's threshold and (f) the uncertainty score: in
``tests/analysis/test_analysis_closed_loop.py`` and
``tests/tasks/sparse_scan/test_sparse_scan_closed_loop.py``.

**Bugs these tests found**, all fixed: 1 (the twin's ground truth is read once the lenses
settle, `SettlingGroundTruth`), 2 (the shift policy clears its probe offset when it
corrects), 3 (`run_episode` sets the budget at the `CountingMicroscope`, which refuses a
frame past it; a measurement cut short ends the episode at the budget):

1. `run_episode` scores the state left before the lenses follow the final, frameless knob
   move (`env.settle` takes no time; the twin's `strehl_ratio` is the optics *now*): an
   episode the policy stops reads Strehl ~0 (`shift` 0/12 successes on `SEEDS`, where the
   settled state gives 5/12). `test_the_final_move_is_scored_once_the_lenses_settle`.
2. `ProbeShiftPolicy.final_action` at the budget right after a correction step: the
   correction already took the probe defocus off, but the offset is only cleared in
   `ingest`, which `run_episode` skips at the budget, so the final move defocuses the probe
   by -40 nm (settled Strehl ~0). `cnn_shift` ends every budget-limited episode there
   (7 + 4k = 31). `test_shift_leaves_the_corrected_state_at_the_budget`.
3. The shift policy's own measurement frames are taken in `ingest` without regard to the
   budget: episodes take up to 36 of 31 Ronchigrams. `test_policy_frames_keep_the_budget`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import emauto
from emauto import optics
from emauto.drivers.sim.config import EffectsConfig, SimConfig
from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.microscope import RonchigramRequest
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv, draw_start
from emauto.tasks.probe_tuning.policies.base import (
    EpisodeResult,
    Observation,
    RunsToTheBudget,
    StopDecision,
    run_episode,
)
from emauto.tasks.probe_tuning.policies.probe_shift import measure
from emauto.tasks.probe_tuning.policies.registry import make_policy
from emauto.wrappers.counting import CountingMicroscope

#: Episode seeds (see the module docstring).
SEEDS = tuple(range(1000, 1012))
#: Ronchigrams per episode, the reset frame included: the benchmark's budget.
BUDGET = 31
SUCCESS = 0.8
NAMES = ("C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def settled_strehl(twin: SimulatedMicroscope) -> float:
    """The true Strehl ratio of the state the twin is left in, once its lenses have settled
    (the optics one second after the last command; lens time constant 20 ms)."""
    settled = twin.true_probe(twin.read().time_s + 1.0)
    wavelength = optics.wavelength(twin.describe().energy_eV)
    return float(optics.strehl_ratio(settled.aberrations(), wavelength, settled.convergence_rad))


@dataclass(frozen=True)
class Episode:
    """One episode: the true Strehl ratio it started from and the one it left (settled)."""

    start: float
    final: float
    result: EpisodeResult

    @property
    def gain(self) -> float:
        return self.final - self.start


def run_policy(
    name: str, twin: SimulatedMicroscope, seeds: tuple[int, ...] = SEEDS
) -> list[Episode]:
    """``name`` on ``seeds`` as the benchmark runs it (budget `BUDGET`), scored on the twin."""
    counter = CountingMicroscope(twin)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    policy = make_policy(name, env, seed=0)
    episodes = []
    try:
        for seed in seeds:
            result = run_episode(env, policy, seed, counter, max_acquisitions=BUDGET)
            # the result's own success is its final Strehl ratio against the config's 0.8
            assert result.success == (result.final_strehl >= SUCCESS)
            episodes.append(Episode(result.strehl_path[0], settled_strehl(twin), result))
    finally:
        close = getattr(policy, "close", None)
        if callable(close):
            close()
    return episodes


def _median_gain(episodes: list[Episode]) -> float:
    return statistics.median(e.gain for e in episodes)


def _successes(episodes: list[Episode]) -> int:
    return sum(e.final >= SUCCESS for e in episodes)


# ---------------------------------------------------------------- the policies, closed loop


def test_shift_aligns(carbon: SimulatedMicroscope) -> None:
    """`shift` takes the probe from Strehl ~0 to a usable one and aligns it in several of 12.

    Measured (start median 0.002), with the stop rule re-chosen after the budget fixes
    (`STOP_STREHL` 0.95, no correction at the stop): median gain 0.83, 7/12 >= 0.8, every
    episode improved. Under earlier stop rules (thresholds 0.6 / 0.7 / 0.9 / 0.95 with the
    correction, before those fixes): gain 0.82 / 0.79 / 0.73 / 0.73, successes 7 / 6 / 5 /
    5: the margins hold for any of them. Broken (measured under the 0.7 rule): (a) coma
    sign flipped 0.007 and 0/12; (b) correction halved -0.002 and 0/12; (d) misfit
    threshold x1000 0.69 and 2/12 (3/12 in some runs: at the margin; (d) is caught by
    `test_refused_fits_are_the_wrong_ones`). Margins: gain >= 0.4, >= 3 of 12.
    """
    episodes = run_policy("shift", carbon)
    assert _median_gain(episodes) >= 0.4
    assert _successes(episodes) >= 3


def test_cnn_shift_aligns(carbon: SimulatedMicroscope) -> None:
    """`cnn_shift`: CNN rounds, then probe shift.

    Measured with `STOP_STREHL` 0.95 and no correction at the stop, bugs 2 and 3 fixed:
    median gain 0.78, 5/12 >= 0.8, every episode improved. Before (0.7 with the correction,
    bug 2 open): 0.80 and 6/12, its budget-limited episodes leaving Strehl 0.0; at 0.9 / 0.95
    it then failed this test (bug 2), as it should have. Broken (measured under the 0.7
    rule): (a) 0.018 and 0/12; (b) 0.58 and 1/12. Margins: gain >= 0.4, >= 3 of 12.
    """
    episodes = run_policy("cnn_shift", carbon)
    assert _median_gain(episodes) >= 0.4
    assert _successes(episodes) >= 3


def test_cnn_improves_the_probe(carbon: SimulatedMicroscope) -> None:
    """`cnn` (the CNN estimator measures, the policy corrects) improves the probe but rarely
    aligns it: measured median gain 0.34, 11/12 improved, 1/12 >= 0.8. Margins: gain >=
    0.15, >= 9 of 12 improved."""
    episodes = run_policy("cnn", carbon)
    assert _median_gain(episodes) >= 0.15
    assert sum(e.gain > 0 for e in episodes) >= 9


def test_random_is_a_floor(carbon: SimulatedMicroscope) -> None:
    """Random actions make the probe worse: measured median start 0.002, median final
    0.0003, best final 0.001, none improved. The floor the other tests are read against."""
    episodes = run_policy("random", carbon)
    assert max(e.final for e in episodes) < 0.05
    assert _median_gain(episodes) <= 0.0


def test_rl_does_not_improve_the_probe(carbon: SimulatedMicroscope) -> None:
    """The honest figure: the shipped `rl` policy does NOT improve the true objective
    (measured: median final 0.0022, median gain -0.001, 3/12 improved; the best final
    0.14 on one machine and below 0.1 on another: its episodes are chaotic across
    platforms): no episode aligns, none gets halfway to it, and the median change is nil.
    When it starts working this test fails, and should be replaced by a margin like
    `test_shift_aligns`'s. (`simplex`
    and `bo` were here until they optimised the probe-shift measurement: see
    `test_bo_aligns`, `test_simplex_aligns`.)"""
    episodes = run_policy("rl", carbon)
    assert _successes(episodes) == 0
    assert max(e.final for e in episodes) < 0.4
    assert abs(_median_gain(episodes)) < 0.01


# ---------------------------------------------------------------- scoring: budget, threshold


class _Scripted(RunsToTheBudget):
    """Zero actions, except at step ``at``: ``c1_action`` on C1. Never stops."""

    name = "scripted"

    def __init__(self, at: int = 0, c1_action: float = 0.0) -> None:
        self.at, self.c1_action, self.taken = at, c1_action, 0

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.taken = 0

    def suggest(self) -> np.ndarray:
        self.taken += 1
        action = np.zeros(len(NAMES), dtype=np.float32)
        if self.taken == self.at:
            action[0] = self.c1_action
        return action

    def ingest(self, *args: Any) -> None:
        pass


def _defocused(env: ProbeTuningEnv, c1_m: float) -> dict[str, Any]:
    """reset options: the aligned state but for ``c1_m`` of defocus."""
    return {"offsets": {**dict.fromkeys(env._all_knobs, 0.0), "C10": c1_m}}


def test_the_episode_is_scored_at_the_budget(carbon: SimulatedMicroscope) -> None:
    """A scripted policy cancels a known 30 nm underfocus with its fourth step. With a
    budget of 4 Ronchigrams (the reset and three steps) that step is never taken: the
    episode ends at 4, unaligned, scored on the state at the budget. With 5 it aligns. The
    env's own step limit (50) is far away, so only `run_episode`'s budget ends it."""
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=50))
    options = _defocused(env, -30e-9)
    cancel = 30e-9 / float(env.step_limits[0])
    for budget, aligned in ((4, False), (5, True)):
        policy = _Scripted(at=4, c1_action=cancel)
        result = run_episode(env, policy, 3, counter, budget, options=options)
        assert result.ended_by == "budget"
        assert result.acquisitions == counter.acquisitions == budget
        assert len(result.strehl_path) == budget
        assert result.success is aligned
        assert (result.final_strehl >= 0.8) is aligned and (
            settled_strehl(carbon) >= 0.8
        ) is aligned


class _MeasuresInIngest(_Scripted):
    """Zero actions; takes one Ronchigram of its own in every `ingest` (as `shift` does)."""

    def __init__(self, microscope: CountingMicroscope) -> None:
        super().__init__()
        self.microscope = microscope

    def ingest(self, *args: Any) -> None:
        self.microscope.acquire(RonchigramRequest(exposure_s=1e-3))


def test_nothing_is_asked_of_the_policy_once_the_budget_is_spent(
    carbon: SimulatedMicroscope,
) -> None:
    """Frames alternate env step / the policy's own: reset 1, step 2, own 3, step 4. The
    step that spends a budget of 4 is not ingested, so no fifth frame is taken."""
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=50))
    result = run_episode(env, _MeasuresInIngest(counter), 3, counter, max_acquisitions=4)
    assert result.ended_by == "budget"
    assert result.acquisitions == counter.acquisitions == 4
    assert len(result.strehl_path) == 3  # the reset and two env steps


def test_success_is_the_configs_threshold(carbon_uri: str, specimen_cache: Path) -> None:
    """2 nm of defocus alone: true Strehl 0.67, between 0.5 and the config's 0.8. It is no
    success, for the env's ``is_success`` and for `run_episode`; with ``success_strehl`` 0.6
    in the config it is one for both."""
    for threshold, success in ((0.8, False), (0.6, True)):
        # a fresh twin each time: an env takes the knobs it finds as the aligned state
        twin = emauto.connect(f"{carbon_uri}?seed=7", cache_dir=specimen_cache)
        assert isinstance(twin, SimulatedMicroscope)
        counter = CountingMicroscope(twin)
        env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=50, success_strehl=threshold))
        options = _defocused(env, 2e-9)
        _, info = env.reset(seed=3, options=options)
        assert 0.55 < info["strehl"] < 0.75
        assert info["is_success"] is success
        infos: list[dict[str, Any]] = []

        def record(*step: Any, infos: list[dict[str, Any]] = infos) -> None:
            infos.append(step[4])

        result = run_episode(env, _Scripted(), 3, counter, 3, options=options, on_step=record)
        assert 0.55 < result.final_strehl < 0.75
        assert result.success is success
        assert [info["is_success"] for info in infos] == [success, success]
        twin.close()


# ---------------------------------------------------------------- the probe-shift measurement


def test_the_drift_frame_cancels_specimen_drift(carbon_uri: str, specimen_cache: Path) -> None:
    """Specimen drift of 5 nm/s (1000x the twin's default; every other effect on) moves the
    pattern by about 0.1 nm between frames, a third of the 0.3 nm probe shift. Without the
    drift frame the measurement reads C1 and A1 up to 9.5 nm off (measured); with it, within
    1.3 nm on three twins (seeds 3-5). Margin 2.5 nm; with the drift's sign flipped the
    readings are 8-39 nm off on each twin."""
    effects = EffectsConfig(drift_speed_m_per_s=5e-9).model_dump()
    worst_without = 0.0
    for seed in (3, 4, 5):
        scope = emauto.connect(
            f"{carbon_uri}?seed={seed}", cache_dir=specimen_cache, effects=effects
        )
        assert isinstance(scope, SimulatedMicroscope)
        setpoints = dict.fromkeys(NAMES, 0.0)
        setpoints.update(C10=40e-9, C12a=3e-9, C21a=60e-9, C23b=-40e-9)
        scope.set(setpoints)
        scope.acquire(RonchigramRequest(exposure_s=1e-3, wait_s=0.2))  # lenses settle
        errors = {}
        for drift_frame in (True, False):
            fit, _ = measure(scope, (10e-9, -20e-9), drift_frame=drift_frame)
            truth = scope.true_aberrations().to_dict()
            errors[drift_frame] = max(abs(fit[k] - truth[k]) for k in ("C10", "C12a", "C12b"))
        assert errors[True] < 2.5e-9, seed
        worst_without = max(worst_without, errors[False])
        scope.close()
    assert worst_without > 5e-9  # the drift is large enough to matter


def test_refused_fits_are_the_wrong_ones(carbon: SimulatedMicroscope) -> None:
    """Random starts (the benchmark's distribution) at +40 nm: where the pattern folds the
    fit misfits (23-150 nm on these) and reads C1 8-19 nm and B2/A2 by hundreds of nm to
    microns off: `measure` refuses it. The fits it accepts read C1 within 1.3 nm and every
    coefficient within 130 nm (measured on starts 0-7: 3 refused, 5 accepted). Margins:
    C1 within 4 nm, B2/A2 within 250 nm, at least 2 refused and 3 accepted. With the misfit
    threshold x1000 every fit is accepted and C1 reads 14-19 nm off."""
    reference = carbon.read().knobs
    accepted = refused = 0
    for seed in range(8):
        offsets = draw_start(ProbeTuningConfig(), np.random.default_rng(seed))
        setpoints = {k: reference[k] + v for k, v in offsets.items()}
        setpoints["C10"] += 40e-9
        carbon.set(setpoints)
        carbon.acquire(RonchigramRequest(exposure_s=1e-3, wait_s=0.2))  # lenses settle
        try:
            fit, _ = measure(carbon, (0.0, 0.0))
        except ValueError as error:
            assert "patches disagree" in str(error)
            refused += 1
            continue
        accepted += 1
        truth = carbon.true_aberrations().to_dict()
        assert abs(fit["C10"] - truth["C10"]) < 4e-9, seed
        assert max(abs(fit[k] - truth[k]) for k in NAMES) < 250e-9, seed
    assert refused >= 2 and accepted >= 3


# ---------------------------------------------------------------- bugs found


class _StopsAndCorrects(_Scripted):
    """One zero step, then stops; its final (frameless) move is ``c1_action`` on C1."""

    def stop(self) -> StopDecision | None:
        return StopDecision(True, 0.9, "test") if self.taken >= 1 else None

    def final_action(self) -> np.ndarray | None:
        action = np.zeros(len(NAMES), dtype=np.float32)
        action[0] = self.c1_action
        return action


def test_the_final_move_is_scored_once_the_lenses_settle(carbon: SimulatedMicroscope) -> None:
    """A policy that stops and cancels a known 30 nm underfocus with its final move leaves
    the probe aligned (settled Strehl >= 0.8); the episode must be scored so."""
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=50))
    policy = _StopsAndCorrects(c1_action=30e-9 / float(env.step_limits[0]))
    result = run_episode(env, policy, 3, counter, BUDGET, options=_defocused(env, -30e-9))
    assert result.ended_by == "policy"
    assert settled_strehl(carbon) >= 0.8  # what the episode left
    assert result.final_strehl == pytest.approx(settled_strehl(carbon), abs=0.02)
    assert result.success


def test_a_slow_lens_is_scored_settled(carbon_uri: str, specimen_cache: Path) -> None:
    """With a 0.2 s lens time constant (the robustness suite's slow lens) the frames' 0.1 s
    wait leaves the final move 60 % undone; the state the episode leaves is the settled
    one, and it is aligned."""
    twin = SimulatedMicroscope(
        SimConfig(seed=7, cache_dir=specimen_cache, effects=EffectsConfig(lens_tau_s=0.2))
    )
    counter = CountingMicroscope(twin)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=50))
    policy = _StopsAndCorrects(c1_action=30e-9 / float(env.step_limits[0]))
    result = run_episode(env, policy, 3, counter, BUDGET, options=_defocused(env, -30e-9))
    assert twin.strehl_ratio_after(ProbeTuningConfig().lens_wait_s) < 0.1  # mid-transition
    assert result.final_strehl == pytest.approx(twin.strehl_ratio_after(1.0), abs=1e-6)
    assert twin.strehl_ratio_after(1.0) == pytest.approx(twin.strehl_ratio_after(10.0), abs=0.02)
    assert result.success


def test_shift_leaves_the_corrected_state_at_the_budget(carbon: SimulatedMicroscope) -> None:
    """Episode 1000 with a budget of 5: reset, +40 nm probe, two frames of its own, the
    correction (true Strehl 0.54), budget spent. Its final move must not make that worse."""
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    policy = make_policy("shift", env)
    result = run_episode(env, policy, 1000, counter, max_acquisitions=5)
    assert result.ended_by == "budget"
    assert policy.measurement is not None  # type: ignore[attr-defined]  # a correction last
    corrected = result.strehl_path[-1]
    assert corrected > 0.3
    assert settled_strehl(carbon) >= corrected - 0.05


def test_policy_frames_keep_the_budget(carbon: SimulatedMicroscope) -> None:
    """A budget of 3: the reset, the +40 nm probe step, and no room for the two frames of a
    measurement. The episode must not take more than 3 Ronchigrams."""
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    result = run_episode(env, make_policy("shift", env), 2, counter, max_acquisitions=3)
    assert result.acquisitions <= 3


# ---------------------------------------------------------------- measurement as an action


def test_shift_decisions_align(carbon: SimulatedMicroscope) -> None:
    """`shift_decide`, the `shift` rules as decisions (the expert the learned policy imitates).

    Measured: median gain 0.79, 6/12 aligned, 10/12 improved. Broken: (i)
    `DecisionCore._correction` with the sign of the B2 correction flipped: gain 0.00, 0/12.
    Margins as `test_shift_aligns`'s: median gain >= 0.4, >= 3 of 12 aligned.
    """
    episodes = run_policy("shift_decide", carbon)
    assert _median_gain(episodes) >= 0.4
    assert _successes(episodes) >= 3


def test_the_learned_decision_policy_aligns(carbon: SimulatedMicroscope) -> None:
    """`rl_decide`, the shipped decision actor. Measured: median gain 0.79, 6/12 aligned,
    10/12 improved (the same episodes as its expert's). Broken: (i) gain 0.00, 0/12 (its
    corrections are the measurement's, signs and all). Margins as `test_shift_aligns`'s."""
    episodes = run_policy("rl_decide", carbon)
    assert _median_gain(episodes) >= 0.4
    assert _successes(episodes) >= 3


# ---------------------------------------------------------------- bo, simplex, handoff


def _always_hands_over(policy_class: Any) -> Any:
    """A builder of ``policy_class`` (`HandoffPolicy` or `BeliefStopPolicy`) whose actor
    hands over at every decision."""
    from emauto.tasks.probe_tuning.policies.belief_stop import Choice
    from emauto.tasks.probe_tuning.policies.objective import AberrationMeter

    def build(env: ProbeTuningEnv) -> Any:
        meter = AberrationMeter(
            env.knobs,
            env.microscope,
            last_frame=lambda: env.last_frame,
            aperture_rad=env.config.convergence_rad,
        )
        return policy_class(env.knobs, env.step_limits, meter, lambda f, c: Choice.OPERATOR)

    return build


def run_built(
    build: Any, twin: SimulatedMicroscope, seeds: tuple[int, ...] = SEEDS
) -> list[Episode]:
    """Like `run_policy`, for a policy built by ``build(env)``."""
    counter = CountingMicroscope(twin)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    policy = build(env)
    episodes = []
    for seed in seeds:
        result = run_episode(env, policy, seed, counter, max_acquisitions=BUDGET)
        assert result.success == (result.final_strehl >= SUCCESS)
        assert result.acquisitions <= BUDGET
        episodes.append(Episode(result.strehl_path[0], settled_strehl(twin), result))
    return episodes


def test_bo_aligns(carbon: SimulatedMicroscope) -> None:
    """`bo` (the multi-output surrogate of the probe-shift measurement) aligns most episodes.

    Measured (start median 0.002): median gain 0.93, 12/12 >= 0.8; frames at most 31.
    Broken: (i) the sign of its correction flipped: median gain -0.001. Margins: gain >=
    0.6, >= 9 of 12."""
    episodes = run_policy("bo", carbon)
    assert _median_gain(episodes) >= 0.6
    assert _successes(episodes) >= 9


def test_the_learned_stop_aligns_with_fewer_frames(carbon: SimulatedMicroscope) -> None:
    """`rl_belief` (`bo`'s evaluations, the shipped learned stop): aligns most episodes and
    stops itself well before the budget.

    Measured (start median 0.002): median gain 0.93, 12/12 >= 0.8, median 25 Ronchigrams,
    no false done. Broken: (i) `bo`'s sign flipped: gain -0.001, 0/12; (k) an actor that
    always measures: 12/12 but 31 Ronchigrams; one that declares at its first decision:
    gain 0.26, 0/12, 12 false dones. Margins: gain >= 0.6, >= 9 of 12 aligned, median
    acquisitions <= 28 (`bo`, which never stops itself, takes all 31), at most one false
    done."""
    episodes = run_policy("rl_belief", carbon)
    assert _median_gain(episodes) >= 0.6
    assert _successes(episodes) >= 9
    assert statistics.median(e.result.acquisitions for e in episodes) <= 28
    assert sum(e.result.false_done for e in episodes) <= 1


def test_simplex_aligns(carbon: SimulatedMicroscope) -> None:
    """`simplex` (Nelder-Mead over correction gains, scored by the measurement) improves
    every episode and aligns most. Measured: median gain 0.83, 9/12 >= 0.8. Broken: (j)
    the correction's sign flipped: median gain -0.00004. Margins: gain >= 0.5, >= 6 of
    12."""
    episodes = run_policy("simplex", carbon)
    assert _median_gain(episodes) >= 0.5
    assert _successes(episodes) >= 6


def test_handoff_aligns_and_hands_over(carbon: SimulatedMicroscope) -> None:
    """`handoff` (the shipped learned stop, then `bo`'s own rule) aligns like `rl_belief`;
    and when its actor hands over at once, `bo` finishes the episodes: they still align,
    where `rl_belief` with the same actor stops unaligned.

    Measured (start median 0.002): shipped, median gain 0.92, 12/12 >= 0.8, none handed to
    the operator; the hand-over actor: handoff 12/12 (gain 0.93, every episode finished by
    `bo`), `rl_belief` 1 of the first 4 (it stops at `bo`'s point after one measurement).
    A hand-over that ends the episode is that `rl_belief`. Margins: >= 9 of 12, gain
    >= 0.6; the hand-over actor's `rl_belief` <= 2 of 4."""
    from emauto.tasks.probe_tuning.policies.belief_stop import BeliefStopPolicy
    from emauto.tasks.probe_tuning.policies.handoff import HandoffPolicy

    episodes = run_policy("handoff", carbon)
    assert _median_gain(episodes) >= 0.6
    assert _successes(episodes) >= 9
    handed = run_built(_always_hands_over(HandoffPolicy), carbon)
    assert _successes(handed) >= 9
    assert all(not e.result.false_done for e in handed)
    alone = run_built(_always_hands_over(BeliefStopPolicy), carbon, SEEDS[:4])
    assert _successes(alone) <= 2


def test_handoff_says_it_needs_the_operator(carbon: SimulatedMicroscope) -> None:
    """B2 and A2 of 3 um (ten times the start spread): every measurement folds and is
    refused; at the budget the policy stops, not aligned, and says the probe needs the
    operator (no frame past the budget)."""
    from emauto.tasks.probe_tuning.policies.handoff import NEEDS_OPERATOR

    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    policy = make_policy("handoff", env)
    offsets = {"C21a": 3e-6, "C23b": -3e-6}
    decisions: list[StopDecision | None] = []
    original = policy.stop

    def stop() -> StopDecision | None:
        decisions.append(original())
        return decisions[-1]

    policy.stop = stop  # type: ignore[method-assign]
    result = run_episode(env, policy, 5, counter, BUDGET, options={"offsets": offsets})
    assert not result.declared_aligned and not result.success
    final = decisions[-1]
    assert final is not None and final.reason.startswith(NEEDS_OPERATOR)
    assert final.needs_operator
    assert result.acquisitions <= BUDGET


def test_bo_frames_are_counted_at_the_microscope(carbon: SimulatedMicroscope) -> None:
    """Each `bo` evaluation is three Ronchigrams (its step's frame and two of its own), all
    counted by the env's `CountingMicroscope`. A budget of 7 is the reset and two
    evaluations, spent exactly; with 8 the one frame left cannot hold a third, so the policy
    stops there, not declaring the probe aligned."""
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    policy = make_policy("bo", env)
    for budget, ended_by in ((7, "budget"), (8, "policy")):
        result = run_episode(env, policy, 1000, counter, max_acquisitions=budget)
        assert result.acquisitions == counter.acquisitions == 7
        assert policy.evaluations == 2  # type: ignore[attr-defined]
        assert result.ended_by == ended_by and not result.declared_aligned
