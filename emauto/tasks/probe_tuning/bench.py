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
from pathlib import Path
from typing import Any

import numpy as np

from emauto import stats
from emauto.errors import ConfigError
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.tasks.probe_tuning.policies.base import EpisodeResult, run_episode
from emauto.tasks.probe_tuning.policies.registry import METHODS, make_policy
from emauto.wrappers.counting import CountingMicroscope

__all__ = ["METHODS", "make_policy", "run_probe_tuning_benchmark", "summarise"]

#: The Ronchigrams each method may take after the reset frame.
DEFAULT_BUDGET_STEPS = 30


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarise(results: Sequence[EpisodeResult], budget_steps: int) -> dict[str, Any]:
    """The benchmark's figures for one method's episodes (rates with Wilson 95 % intervals,
    medians with bootstrap 95 % intervals).

    Success is the true Strehl ratio of the state each episode leaves, at the policy's own
    stop or at the budget. ``oracle_*``: the old rule, kept for comparison only: the true
    Strehl ratio reached the threshold at some frame within the budget.
    """
    n = len(results)
    budget = budget_steps + 1
    successes = sum(r.success for r in results)
    reached = [r.first_reached_at for r in results]
    oracle = [a for a in reached if a is not None and a <= budget]
    censored = [a if a is not None and a <= budget else budget + 1 for a in reached]
    successful = [r.acquisitions for r in results if r.success]
    return {
        "episodes": n,
        "success_rate": successes / n,
        "success": stats.rate(successes, n),
        "acquisitions": stats.median([r.acquisitions for r in results]),
        "acquisitions_when_successful": stats.median(successful) if successful else None,
        "p90_acquisitions": _percentile([r.acquisitions for r in results], 90),
        "stopped_by_policy": stats.rate(sum(r.ended_by == "policy" for r in results), n),
        "false_done": stats.rate(sum(r.false_done for r in results), n),
        "final_strehl": stats.median([r.final_strehl for r in results]),
        "dose_e": stats.median([r.dose_e for r in results]),
        "oracle_success": stats.rate(len(oracle), n),
        "oracle_median_acquisitions": _percentile(censored, 50),
        "wall_s_per_episode": round(statistics.median(r.wall_s for r in results), 4),
        "budget_acquisitions": budget,
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
    record: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Run each method on the same ``episodes`` seeded episodes; figures keyed by method.

    ``config`` changes the episodes (e.g. a lower dose); its ``max_steps`` is replaced by
    ``budget_steps``. ``record`` records each method's episodes into ``record/METHOD``.
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    config = (config or ProbeTuningConfig()).model_copy(update={"max_steps": budget_steps})
    seeds = [seed * 100_000 + i for i in range(episodes)]
    figures: dict[str, dict[str, Any]] = {}
    from emauto.drivers import connect

    for method in methods:
        counter = CountingMicroscope(connect(microscope))
        folder = Path(record) / method if record is not None else None
        env = ProbeTuningEnv(counter, config, record=folder)
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
                        f"acquisitions={last.acquisitions} strehl={last.final_strehl:.3f} "
                        f"ended by {last.ended_by}",
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
