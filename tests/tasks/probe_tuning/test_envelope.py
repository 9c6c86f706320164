"""The safe envelope every probe-tuning policy keeps (issue 21, item 2).

Reproduced first: on a twin whose probe-shift measurements are always refused (a nearly
blank specimen: ten carbon atoms in a 3 nm x 3 nm cell), `shift` probed 40 nm further out
after every refusal and walked C10 +317 nm and +385 nm from the start in the first two
episodes (issue 21: +421 nm median on usim). With the envelope it hands over to the
operator after three refused rounds, C10 back at the start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import emauto
from emauto.tasks.probe_tuning.bench import summarise
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.tasks.probe_tuning.policies.base import (
    EpisodeResult,
    Observation,
    RunsToTheBudget,
    StopDecision,
    run_episode,
)
from emauto.tasks.probe_tuning.policies.envelope import (
    MAX_REFUSED_ROUNDS,
    NEEDS_OPERATOR,
    Envelope,
    MeasurementReport,
    envelope_bounds,
)
from emauto.tasks.probe_tuning.policies.registry import make_policy
from emauto.wrappers.counting import CountingMicroscope

BUDGET = 31
KNOBS = ("C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BLANK = """\
# nearly blank: ten carbon atoms in a 3 nm x 3 nm x 0.2 nm cell; nothing to measure
recipe:
  kind: amorphous_carbon
  extent_m: [3.0e-9, 3.0e-9]
  thickness_m: 2.0e-10
  density_g_cm3: 0.11
  seed: 1
"""


# ---------------------------------------------------------------- the envelope itself


def test_bounds_are_the_start_spread_plus_two_steps() -> None:
    bounds = dict(zip(KNOBS, envelope_bounds(ProbeTuningConfig()), strict=True))
    assert bounds["C10"] == pytest.approx(50e-9 + 2 * 60e-9)
    assert bounds["C12a"] == pytest.approx(20e-9 + 2 * 25e-9)
    assert bounds["C21b"] == bounds["C23a"] == pytest.approx(300e-9 + 2 * 350e-9)


def _envelope() -> Envelope:
    config = ProbeTuningConfig()
    return Envelope(config.knobs(), config.step_limits(), envelope_bounds(config))


def test_excursion_is_bounded_and_the_way_back_is_in_steps() -> None:
    envelope = _envelope()
    probe = np.zeros(7, dtype=np.float32)
    probe[0] = 40e-9 / 60e-9
    for _ in range(4):  # +160 nm: inside 170 nm
        assert envelope.allows(probe)
        envelope.moved(envelope.change_of(probe))
    assert not envelope.allows(probe)  # +200 nm: outside
    assert envelope.allows(-probe)
    assert envelope.excursion_by_knob()["C10"] == pytest.approx(160e-9)
    moves = envelope.return_actions()  # back to the start, at most one step limit a move
    assert len(moves) == 3 and all(np.all(np.abs(m) <= 1) for m in moves)
    for move in moves:
        envelope.moved(envelope.change_of(move))
    assert np.allclose(envelope.excursion_m, 0.0, atol=1e-13)
    assert envelope.return_actions() == []


def test_the_best_evidenced_state_and_refusals_in_a_row() -> None:
    envelope = _envelope()
    envelope.moved({"C10": 40e-9, "C12a": 10e-9})
    # measured at +40 nm probe defocus: the state is the knobs less that defocus
    envelope.record(MeasurementReport(1, 0, 0.3, {"C10": -40e-9}))
    envelope.moved({"C10": -40e-9, "C21a": 200e-9})
    envelope.record(MeasurementReport(1, 0))  # a correction: nothing new
    envelope.moved({"C10": 40e-9})
    envelope.record(MeasurementReport(2, 0, 0.2, {"C10": -40e-9}))  # worse: not kept
    assert envelope.best_strehl == pytest.approx(0.3)
    assert np.allclose(envelope.best_m, [0, 10e-9, 0, 0, 0, 0, 0])
    for refused in range(1, MAX_REFUSED_ROUNDS + 1):
        assert not envelope.failing
        envelope.record(MeasurementReport(2, refused))
    assert envelope.failing
    for move in envelope.return_actions():
        envelope.moved(envelope.change_of(move))
    assert np.allclose(envelope.excursion_m, envelope.best_m, atol=1e-13)
    envelope.record(MeasurementReport(3, MAX_REFUSED_ROUNDS))  # accepted: the run is over
    assert not envelope.failing


def test_a_stop_is_aligned_or_needs_the_operator_not_both() -> None:
    with pytest.raises(ValueError, match="operator"):
        StopDecision(True, 0.9, "", needs_operator=True)


# ---------------------------------------------------------------- on the twin


class _Wanders(RunsToTheBudget):
    """Over-focuses 40 nm every step and never measures: a policy lost."""

    name = "wanders"

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        pass

    def suggest(self) -> np.ndarray:
        action = np.zeros(7, dtype=np.float32)
        action[0] = 40e-9 / 60e-9
        return action

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        pass


def _c10_from_reference(env: ProbeTuningEnv) -> float:
    return float(env.microscope.read().knobs["C10"] - env.reference["C10"])


@pytest.fixture(scope="module")
def blank_uri(
    tmp_path_factory: pytest.TempPathFactory, carbon_uri: str, specimen_cache: Path
) -> str:
    """The nearly blank specimen, built once (after the session's carbon film, which pays
    for the twin's one-time set-up)."""
    folder = tmp_path_factory.mktemp("blank")
    (folder / "blank.yaml").write_text(BLANK)
    uri = f"sim://?specimen={folder / 'blank.yaml'}&seed=7"
    emauto.connect(uri, cache_dir=specimen_cache).close()
    return uri


def test_a_policy_that_walks_off_is_stopped_and_brought_back(
    blank_uri: str, specimen_cache: Path
) -> None:
    """A policy that never measures is kept within the bound all the same: its fifth
    +40 nm step would leave it, so the episode hands over and C10 goes back."""
    counter = CountingMicroscope(emauto.connect(blank_uri, cache_dir=specimen_cache))
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    start = {"C10": 20e-9}
    free = run_episode(
        env, _Wanders(), 3, counter, BUDGET, options={"offsets": start}, envelope=False
    )
    assert free.max_excursion_m["C10"] == pytest.approx(30 * 40e-9)
    assert not free.needs_operator and free.ended_by == "env"
    result = run_episode(env, _Wanders(), 3, counter, BUDGET, options={"offsets": start})
    assert result.needs_operator and result.ended_by == "policy" and not result.declared_aligned
    assert result.acquisitions == 1 + 4  # +160 nm; the fifth step would be +200 nm
    assert result.max_excursion_m["C10"] == pytest.approx(160e-9)
    assert _c10_from_reference(env) == pytest.approx(20e-9, abs=1e-12)  # back at the start
    env.close()


@pytest.mark.parametrize("method", ["shift", "cnn_shift"])
def test_measuring_policies_hand_over_when_measurements_keep_failing(
    blank_uri: str, specimen_cache: Path, method: str
) -> None:
    """Issue 21's walk, reproduced: every probe-shift measurement refused. Without the
    envelope `shift` walked C10 +317 nm (seed 0) and +385 nm (seed 1) by the budget, and
    `cnn_shift` +290 nm and +412 nm; now `shift` stops after three refused rounds (ten
    Ronchigrams), `cnn_shift` after three of its probe-shift rounds or at the bound, both
    say they need the operator and leave C10 where the episode started (no measurement
    was accepted: the start is the best state they have evidence for)."""
    counter = CountingMicroscope(emauto.connect(blank_uri, cache_dir=specimen_cache))
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    policy = make_policy(method, env)
    bounds = dict(zip(env.knobs, envelope_bounds(env.config), strict=True))
    for seed in (0, 1):
        env.reset(seed=seed)
        start = env.microscope.read().knobs
        result = run_episode(env, policy, seed, counter, BUDGET)
        assert result.needs_operator and not result.declared_aligned, result
        assert all(result.max_excursion_m[k] <= bounds[k] * (1 + 1e-9) for k in bounds)
        if method == "shift":
            assert result.acquisitions == 1 + MAX_REFUSED_ROUNDS * 3
        end = env.microscope.read().knobs
        for knob in env.knobs:
            assert end[knob] == pytest.approx(start[knob], abs=1e-12), knob
    env.close()


@pytest.mark.slow
def test_the_envelope_does_not_make_shift_worse(carbon: emauto.microscope.Microscope) -> None:
    """`shift` on sim:// episodes (the closed-loop seeds) with and without the envelope: it
    succeeds at least as often with it, and stays within the bound."""
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=BUDGET - 1))
    policy = make_policy("shift", env)
    bounds = dict(zip(env.knobs, envelope_bounds(env.config), strict=True))
    outcomes: dict[bool, list[EpisodeResult]] = {True: [], False: []}
    for seed in (1000, 1001, 1002, 1003, 1004, 1005):
        for guarded in (False, True):
            result = run_episode(env, policy, seed, counter, BUDGET, envelope=guarded)
            outcomes[guarded].append(result)
    with_it = sum(r.success for r in outcomes[True])
    without = sum(r.success for r in outcomes[False])
    assert with_it >= without and without >= 1
    for result in outcomes[True]:
        assert all(result.max_excursion_m[k] <= bounds[k] * (1 + 1e-9) for k in bounds)
    env.close()


# ---------------------------------------------------------------- the benchmark's figures


def _result(success: bool, needs_operator: bool, c10: float) -> EpisodeResult:
    return EpisodeResult(
        success=success,
        acquisitions=10,
        final_strehl=0.9 if success else 0.1,
        best_strehl=0.9,
        dose_e=1.0,
        wall_s=0.1,
        ended_by="policy" if needs_operator else "budget",
        needs_operator=needs_operator,
        max_excursion_m={"C10": c10, "C12a": c10 / 10},
        strehl_path=[0.1],
        phase_variance_path=[1.0],
        acquisitions_path=[1],
    )


def test_the_benchmark_reports_hand_overs_apart_and_the_excursion() -> None:
    results = [
        _result(True, False, 40e-9),
        _result(False, True, 120e-9),
        _result(False, False, 80e-9),
        _result(False, True, 160e-9),
    ]
    figures = summarise(results, budget_steps=30)
    assert figures["needs_operator"]["count"] == 2 and figures["needs_operator"]["of"] == 4
    assert figures["plain_failure"]["count"] == 1
    assert figures["success"]["count"] == 1  # the existing keys stay
    assert figures["max_excursion_m"]["C10"] == {
        "median": pytest.approx(100e-9),
        "max": pytest.approx(160e-9),
    }
    assert figures["max_excursion_m"]["C12a"]["max"] == pytest.approx(16e-9)
    assert NEEDS_OPERATOR == "needs the operator"
