"""`emauto bench probe-tuning`: every method on the same episodes, the same success rule.

Each episode starts from `ProbeTuningConfig.start` (random aberrations, region, dose) with
seed ``seed * 100_000 + i``; every method sees the same episodes. Success: the twin's
ground-truth Strehl ratio >= 0.8 over the aperture at any acquisition (the episode ends
there). Acquisitions count every Ronchigram, the reset frame included. Figures per method:

- ``success_rate``: fraction of episodes that succeed within ``budget_acquisitions``.
- ``median_acquisitions`` / ``p90_acquisitions``: Ronchigrams to success; a failed episode
  counts as ``budget_acquisitions + 1`` (censored), so a rate below 50% (10%) shows there.
- ``median_final_strehl``: ground-truth Strehl at the end of the episode.
- ``median_dose``: electrons delivered to the specimen in the episode.
- ``wall_s_per_episode``: median wall time per episode, policy and twin together.

The policies see only images (and the knob changes they made); ground truth is used for
scoring alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from emauto.config import ProbeTuningConfig
from emauto.envs.probe_tuning import ProbeTuningEnv
from emauto.errors import ConfigError
from emauto.policies.base import CountingMicroscope, EpisodeResult, TuningPolicy, run_episode

METHODS = ("shift", "cnn", "bo", "simplex", "rl", "random")
#: The Ronchigrams each method may take after the reset frame.
DEFAULT_BUDGET_STEPS = 30


def make_policy(
    method: str, env: ProbeTuningEnv, seed: int = 0, policy_path: str | None = None
) -> TuningPolicy:
    """A policy for ``env`` by method name (see `METHODS`)."""
    if method == "shift":
        from emauto.policies.shift_correct import ProbeShiftPolicy

        return ProbeShiftPolicy(env.knobs, env.step_limits, env.microscope)
    if method == "random":
        from emauto.policies.random_policy import RandomPolicy

        return RandomPolicy(len(env.knobs), seed)
    if method == "rl":
        from emauto.policies.rl import load_policy

        return load_policy(policy_path)
    from emauto.policies.estimator import load_default_estimator

    estimator = load_default_estimator()
    if method == "cnn":
        from emauto.policies.measure_correct import MeasureCorrectPolicy

        return MeasureCorrectPolicy(env.knobs, env.step_limits, estimator)
    from emauto.policies.objective import RonchigramObjective

    objective = RonchigramObjective(estimator, env.config.convergence_rad)
    if method == "bo":
        from emauto.policies.bayesopt import BayesOptPolicy

        return BayesOptPolicy(env.knobs, objective, seed=seed)
    if method == "simplex":
        from emauto.policies.baselines import NelderMeadPolicy

        return NelderMeadPolicy(env.knobs, objective)
    raise ConfigError(f"unknown method {method!r}; expected one of {METHODS} or 'all'")


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarise(results: Sequence[EpisodeResult], budget_steps: int) -> dict[str, Any]:
    """The benchmark's figures for one method's episodes."""
    censored = [
        r.acquisitions_to_success if r.acquisitions_to_success is not None else budget_steps + 2
        for r in results
    ]
    return {
        "episodes": len(results),
        "success_rate": sum(r.success for r in results) / len(results),
        "median_acquisitions": _percentile(censored, 50),
        "p90_acquisitions": _percentile(censored, 90),
        "median_final_strehl": statistics.median(r.final_strehl for r in results),
        "median_dose": statistics.median(r.dose_e for r in results),
        "wall_s_per_episode": round(statistics.median(r.wall_s for r in results), 4),
        "budget_acquisitions": budget_steps + 1,
    }


def run_probe_tuning_benchmark(
    methods: Sequence[str],
    episodes: int,
    seed: int = 0,
    microscope: str = "sim://",
    budget_steps: int = DEFAULT_BUDGET_STEPS,
    policy_path: str | None = None,
    progress: bool = False,
    config: ProbeTuningConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """Run each method on the same ``episodes`` seeded episodes; figures keyed by method.

    ``config`` changes the episodes (e.g. a lower dose); its ``max_steps`` is replaced by
    ``budget_steps``.
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    config = (config or ProbeTuningConfig()).model_copy(update={"max_steps": budget_steps})
    seeds = [seed * 100_000 + i for i in range(episodes)]
    figures: dict[str, dict[str, Any]] = {}
    from emauto.drivers import connect

    for method in methods:
        counter = CountingMicroscope(connect(microscope))
        env = ProbeTuningEnv(counter, config)
        try:
            policy = make_policy(method, env, seed, policy_path)
            results = []
            for index, episode_seed in enumerate(seeds):
                results.append(
                    run_episode(
                        env, policy, episode_seed, counter, max_acquisitions=budget_steps + 1
                    )
                )
                if progress:
                    last = results[-1]
                    print(
                        f"{method:8s} episode {index + 1}/{episodes}: success={last.success} "
                        f"acquisitions={last.acquisitions} strehl={last.final_strehl:.3f}",
                        flush=True,
                    )
            close = getattr(policy, "close", None)
            if callable(close):
                close()
        finally:
            env.close()
            counter.close()
        figures[method] = summarise(results, budget_steps)
    return figures
