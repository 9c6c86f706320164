"""`emauto bench probe-tuning`: every method on the same episodes, the same success rule.

Each episode starts from `ProbeTuningConfig.start` (random aberrations, region, dose) with
seed ``seed * 100_000 + i``; every method sees the same episodes. An episode ends at the
policy's own stop, at the budget, or at the env's step limit; no ground truth ends it.
Success: the twin's true Strehl ratio of the state the episode leaves (settled) >= 0.8.
Acquisitions count every Ronchigram, the reset frame and the policy's own frames included.
Figures per method (`summarise`): rates with Wilson 95 % intervals, medians with bootstrap
95 % intervals, false dones, dose, and ``curve``: the median true Strehl ratio and phase
variance of the probe against the Ronchigrams taken (`curve`). The policies see only
images (and the knob changes they made); ground truth is used for scoring alone.
Every policy keeps the safe envelope (`policies.envelope`; ``envelope=False`` measures a
policy without it): ``needs_operator`` is the rate of episodes that ended handing the probe
to the operator, ``plain_failure`` the rate of the other failures, and ``max_excursion_m``
the largest |change| of each knob from the episode's start (median and max over episodes).
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
        "curve": curve(results, budget),
        "needs_operator": stats.rate(sum(r.needs_operator for r in results), n),
        "plain_failure": stats.rate(
            sum(not r.success and not r.needs_operator for r in results), n
        ),
        "max_excursion_m": excursions(results),
    }


def excursions(results: Sequence[EpisodeResult]) -> dict[str, dict[str, float]]:
    """Per knob, the median and the largest over episodes of each episode's largest
    |change| from its start (m)."""
    knobs = list(dict.fromkeys(k for r in results for k in r.max_excursion_m))
    figures = {}
    for knob in knobs:
        values = [r.max_excursion_m[knob] for r in results if knob in r.max_excursion_m]
        figures[knob] = {"median": float(np.median(values)), "max": float(np.max(values))}
    return figures


def _median_or_none(values: Sequence[float]) -> float | None:
    """The median of the finite values (4 decimals), None without any."""
    finite = [v for v in values if np.isfinite(v)]
    return round(float(np.median(finite)), 4) if finite else None


def curve(results: Sequence[EpisodeResult], budget: int) -> dict[str, list[Any]]:
    """Median over episodes of the true Strehl ratio and phase variance (rad^2) of the probe
    after ``n`` Ronchigrams, n = 1..``budget``: the probe at the last env frame taken by then
    (a measuring policy's over-focused probe included), and from the episode's end on the
    state it leaves (settled)."""
    strehl: list[float | None] = []
    variance: list[float | None] = []
    for n in range(1, budget + 1):
        at_n: list[tuple[float, float]] = []
        for r in results:
            if n >= r.acquisitions:
                at_n.append((r.final_strehl, r.final_phase_variance))
                continue
            taken = [i for i, a in enumerate(r.acquisitions_path) if a <= n]
            if taken:
                at_n.append((r.strehl_path[taken[-1]], r.phase_variance_path[taken[-1]]))
        strehl.append(_median_or_none([a for a, _ in at_n]))
        variance.append(_median_or_none([b for _, b in at_n]))
    return {
        "acquisitions": list(range(1, budget + 1)),
        "median_strehl": strehl,
        "median_phase_variance_rad2": variance,
    }


def save_curves_png(figures: dict[str, dict[str, Any]], path: str | Path, title: str) -> Path:
    """Each method's `curve` (Strehl ratio and phase variance against Ronchigrams) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), dpi=120, sharex=True)
    for method, result in figures.items():
        c = result["curve"]
        strehl = np.array(c["median_strehl"], dtype=float)  # None -> nan: not drawn
        variance = np.array(c["median_phase_variance_rad2"], dtype=float)
        top.plot(c["acquisitions"], strehl, label=method)
        bottom.semilogy(c["acquisitions"], np.maximum(variance, 1e-3))
    top.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    top.set_ylabel("median true Strehl ratio")
    top.set_ylim(0, 1)
    top.legend(fontsize=7, ncol=2)
    top.set_title(title, fontsize=8)
    bottom.set_ylabel("median true phase variance (rad²)")
    bottom.set_xlabel("Ronchigrams taken (reset frame included)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


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
    envelope: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run each method on the same ``episodes`` seeded episodes; figures keyed by method.

    ``config`` changes the episodes (e.g. a lower dose); its ``max_steps`` is replaced by
    ``budget_steps``. ``record`` records each method's episodes into ``record/METHOD``.
    ``envelope``: keep every policy within the safe envelope (`run_episode`).
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
                        env,
                        policy,
                        episode_seed,
                        counter,
                        max_acquisitions=budget_steps + 1,
                        envelope=envelope,
                    )
                )
                if progress:
                    last = results[-1]
                    print(
                        f"{method:8s} episode {index + 1}/{episodes}: success={last.success} "
                        f"acquisitions={last.acquisitions} strehl={last.final_strehl:.3f} "
                        f"ended by {last.ended_by}"
                        + (" (needs the operator)" if last.needs_operator else ""),
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
