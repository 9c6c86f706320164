"""The tuning policies share one interface; each runs episodes on the twin."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import emauto
from emauto.cli import main
from emauto.microscope import Frame, ImageRequest, RonchigramRequest
from emauto.tasks.probe_tuning.bench import (
    curve,
    make_policy,
    run_probe_tuning_benchmark,
    summarise,
)
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.tasks.probe_tuning.policies.base import EpisodeResult, TuningPolicy, run_episode
from emauto.wrappers.base import MicroscopeWrapper
from emauto.wrappers.counting import CountingMicroscope


@pytest.fixture
def env(carbon: emauto.microscope.Microscope) -> ProbeTuningEnv:
    return ProbeTuningEnv(carbon, ProbeTuningConfig(max_steps=6))


@pytest.mark.parametrize("method", ["shift", "cnn", "cnn_shift", "bo", "simplex", "random"])
def test_every_method_is_a_tuning_policy(env: ProbeTuningEnv, method: str) -> None:
    policy = make_policy(method, env, seed=0)
    assert isinstance(policy, TuningPolicy) and policy.name == method
    observation, info = env.reset(seed=3)
    policy.reset(observation, info)
    for _ in range(3):
        action = policy.suggest()
        assert action.shape == (7,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1)
        observation, reward, *_, info = env.step(action)
        policy.ingest(action, observation, reward, info)
    close = getattr(policy, "close", None)
    if callable(close):
        close()


def test_measure_and_correct_probes_then_cancels(env: ProbeTuningEnv) -> None:
    """Round one: a +60 nm defocus probe measured by the CNN, then one step that cancels the
    estimate. From a pure 10 nm underfocus the probe frame sits at +50 nm, where the
    estimator is at its best (README), and the correction lands within 4 nm of focus."""
    policy = make_policy("cnn", env)
    zero = dict.fromkeys(env._all_knobs, 0.0)
    observation, info = env.reset(seed=4, options={"offsets": {**zero, "C10": -10e-9}})
    policy.reset(observation, info)
    probe = policy.suggest()
    assert probe[0] == 1.0 and not probe[1:].any()
    observation, reward, *_, info = env.step(probe)
    policy.ingest(probe, observation, reward, info)
    estimate = policy.estimate  # type: ignore[attr-defined]
    assert abs(estimate.mean_m["C10"] - 50e-9) < 4e-9
    correction = policy.suggest()
    observation, reward, *_, info = env.step(correction)
    truth = env.microscope.true_aberrations()  # type: ignore[attr-defined]
    assert abs(truth.C10) < 4e-9


def test_policy_frames_are_counted_and_the_budget_holds(
    carbon: emauto.microscope.Microscope,
) -> None:
    """The shift policy takes 2 frames of its own per measurement (the env's probe frame is
    its reference); a CountingMicroscope counts them with the env's, and the episode stops
    at the acquisition budget."""
    counter = CountingMicroscope(carbon)
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=30))
    policy = make_policy("shift", env)
    result = run_episode(env, policy, seed=2, counter=counter, max_acquisitions=4)
    # reset 1 + probe 1 + measure 2 = 4
    assert result.acquisitions == 4 and counter.acquisitions == 4
    assert result.dose_e == pytest.approx(counter.dose_e) and result.dose_e > 0
    assert len(result.strehl_path) == 1 + 1  # the reset and one env step


def test_shift_policy_frames_take_the_episodes_dose(
    carbon: emauto.microscope.Microscope,
) -> None:
    """Matched dose: at a tenth of the benchmark's exposure (0.2 ms) the policy's own frames
    take 0.2 ms too (not its 10 ms default), and the env's probe frame is the reference."""
    exposures: list[float] = []

    class Exposures(MicroscopeWrapper):
        def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
            exposures.append(float(getattr(request, "exposure_s", math.nan)))
            return super().acquire(request)

    counter = CountingMicroscope(Exposures(carbon))
    env = ProbeTuningEnv(counter, ProbeTuningConfig(max_steps=30, exposure_s=(2e-4, 2e-4)))
    policy = make_policy("shift", env)
    result = run_episode(env, policy, seed=2, counter=counter, max_acquisitions=4)
    # reset 1 + probe 1 + measure 2 = 4, every one at the episode's exposure
    assert result.acquisitions == 4 and exposures == pytest.approx([2e-4] * 4)


def test_shift_policy_moves_the_probe_after_a_refused_measurement(
    carbon: emauto.microscope.Microscope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A measurement the fit refuses is not applied. Before any was accepted the next step
    probes again (more defocus); after one was, the policy measures again at once 5 nm away
    with its own reference, and keeps the new position for later rounds."""
    from emauto.tasks.probe_tuning.policies import shift_correct

    calls: list[tuple[tuple[float, float], bool]] = []
    refuse = {1, 3}  # the first measurement, and the second round's first attempt

    def fake_measure(microscope, position, knobs, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((position, kwargs["reference"] is not None))
        if len(calls) in refuse:
            raise ValueError("the patches disagree")
        return dict.fromkeys(knobs, 0.0), []

    monkeypatch.setattr(shift_correct, "measure", fake_measure)
    env = ProbeTuningEnv(carbon, ProbeTuningConfig(max_steps=30))
    policy = make_policy("shift", env)
    observation, info = env.reset(seed=3)
    policy.reset(observation, info)
    suggestions = []
    for _ in range(6):  # probe (refused), probe, correct, probe (refused, moved), correct, probe
        action = policy.suggest()
        suggestions.append(action)
        observation, reward, *_, info = env.step(action)
        policy.ingest(action, observation, reward, info)
    probe = np.zeros(len(env.knobs), dtype=np.float32)
    probe[0] = 40e-9 / env.step_limits[0]
    assert np.allclose(suggestions[1], probe)  # refused before any accepted: probe again
    parked = info["probe_position_m"]
    assert [position for position, _ in calls[:3]] == [parked] * 3
    assert all(with_env_frame for _, with_env_frame in calls[:3])
    (moved, with_reference), (kept, again) = calls[3:]
    assert np.hypot(moved[0] - parked[0], moved[1] - parked[1]) == pytest.approx(5e-9)
    assert not with_reference and kept == moved and not again


def test_simplex_thread_stops_on_reset_and_close(env: ProbeTuningEnv) -> None:
    policy = make_policy("simplex", env)
    for seed in (0, 1):
        observation, info = env.reset(seed=seed)
        policy.reset(observation, info)
        action = policy.suggest()
        observation, reward, *_, info = env.step(action)
        policy.ingest(action, observation, reward, info)
    thread = policy._thread  # type: ignore[attr-defined]
    policy.close()  # type: ignore[attr-defined]
    assert thread is not None and not thread.is_alive()


def test_summary_scores_the_state_left_and_counts_false_dones() -> None:
    def result(
        success: bool, acquisitions: int, declared: bool, reached: int | None
    ) -> EpisodeResult:
        return EpisodeResult(
            success=success,
            acquisitions=acquisitions,
            final_strehl=0.9 if success else 0.1,
            best_strehl=0.9,
            dose_e=1e6,
            wall_s=0.1,
            ended_by="policy" if declared else "budget",
            declared_aligned=declared,
            confidence=0.85 if declared else None,
            first_reached_at=reached,
        )

    runs = [result(True, 3, True, 3), result(False, 5, True, 4), result(False, 11, False, None)]
    figures = summarise(runs, budget_steps=10)
    assert figures["success"]["rate"] == pytest.approx(1 / 3)
    low, high = figures["success"]["ci95"]
    assert 0 < low < 1 / 3 < high < 1
    assert figures["false_done"]["count"] == 1  # declared aligned at Strehl 0.1
    assert figures["stopped_by_policy"]["count"] == 2
    assert figures["acquisitions"]["median"] == 5
    assert figures["oracle_success"]["count"] == 2  # reached 0.8 at some frame: the old rule
    assert figures["oracle_median_acquisitions"] == 4
    assert figures["budget_acquisitions"] == 11


def test_the_curve_follows_each_episode_then_holds_its_final_state() -> None:
    def episode(acquisitions: int, path: list[tuple[int, float]], final: float) -> EpisodeResult:
        return EpisodeResult(
            success=final >= 0.8,
            acquisitions=acquisitions,
            final_strehl=final,
            best_strehl=max(s for _, s in path),
            dose_e=1.0,
            wall_s=0.1,
            final_phase_variance=1 - final,
            strehl_path=[s for _, s in path],
            phase_variance_path=[1 - s for _, s in path],
            acquisitions_path=[a for a, _ in path],
        )

    # a policy measuring in threes: frames 1 (reset), 4, 7; it ends at 7 and corrects to 0.9
    measuring = episode(7, [(1, 0.0), (4, 0.2), (7, 0.5)], 0.9)
    idle = episode(9, [(1, 0.1), (9, 0.1)], 0.1)
    c = curve([measuring, idle], budget=9)
    assert c["acquisitions"] == list(range(1, 10))
    assert c["median_strehl"][:3] == [0.05, 0.05, 0.05]  # (0.0 + 0.1) / 2
    assert c["median_strehl"][3] == pytest.approx(0.15)  # frame 4: 0.2 and 0.1
    assert c["median_strehl"][6] == pytest.approx(0.5)  # frame 7: ended at 0.9, idle 0.1
    assert c["median_phase_variance_rad2"][6] == pytest.approx(0.5)


def test_bench_same_episodes_for_every_method(
    carbon_uri: str, specimen_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    figures = run_probe_tuning_benchmark(
        ["random", "cnn"], episodes=2, seed=1, microscope=carbon_uri, budget_steps=4
    )
    assert set(figures) == {"random", "cnn"}
    keys = {
        "success",
        "acquisitions",
        "p90_acquisitions",
        "final_strehl",
        "dose_e",
        "false_done",
        "stopped_by_policy",
        "oracle_success",
        "wall_s_per_episode",
    }
    assert all(keys <= set(f) for f in figures.values())
    assert figures["random"]["dose_e"]["median"] > 0
    assert figures["random"]["stopped_by_policy"]["count"] == 0  # random never stops


def test_bench_command_prints_json(
    specimen_cache: Path,
    carbon_uri: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    code = main(
        ["bench", "probe-tuning", "--method", "cnn", "--episodes", "1", "--budget", "2", "--json"]
    )
    assert code == 0
    figures = json.loads(capsys.readouterr().out)["cnn"]  # one shape, one method or all
    assert 0 <= figures["success_rate"] <= 1 and figures["budget_acquisitions"] == 3
    assert figures["curve"]["acquisitions"] == [1, 2, 3]
    with pytest.raises(SystemExit):
        main(["bench", "probe-tuning", "--method", "nope"])


def test_coarse_fine_hands_over_after_its_coarse_steps(env: ProbeTuningEnv) -> None:
    """`cnn_shift` runs the CNN rounds first (a pure +60 nm probe, then a correction), and
    the probe-shift policy from step 7 (its own +40 nm probe)."""
    from emauto.tasks.probe_tuning.policies.coarse_fine import (
        CNN_SHIFT_COARSE_STEPS,
        CoarseFinePolicy,
    )

    policy = make_policy("cnn_shift", env)
    assert isinstance(policy, CoarseFinePolicy) and CNN_SHIFT_COARSE_STEPS == 6
    observation, info = env.reset(seed=5)
    policy.reset(observation, info)
    actions = []
    for _ in range(CNN_SHIFT_COARSE_STEPS + 1):
        action = policy.suggest()
        actions.append(action)
        observation, reward, *_, info = env.step(action)
        policy.ingest(action, observation, reward, info)
    assert actions[0][0] == 1.0 and not actions[0][1:].any()  # the CNN's +60 nm probe
    assert np.isclose(actions[-1][0], 40e-9 / env.step_limits[0])  # the shift policy's probe
    assert policy.fine.measurement is not None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="coarse_steps"):
        CoarseFinePolicy("x", policy.coarse, policy.fine, 0)
