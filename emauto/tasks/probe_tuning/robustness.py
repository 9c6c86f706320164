"""`emauto bench robustness`: every probe-tuning method under one perturbation at a time.

Each perturbation (`emauto.drivers.sim.perturbations.PERTURBATIONS`: a rotated or
miscalibrated camera, an off-centre aperture, lost contrast, detector noise, a gain map,
another specimen, a flipped corrector axis, slower lenses, faster drift; ``none`` is the
reference) is laid over the default twin, and each method runs on it the episodes of
`emauto bench probe-tuning` (seeds ``seed * 100_000 + i``, the same start, region and dose
for every method and perturbation), scored by the same rule (`bench.summarise`).

Figures per perturbation and method: the bench's (success with its Wilson 95 % interval,
median Ronchigrams, false dones, ...) without the per-Ronchigram curve, and
``knob_excursion_m``: per tuned knob, the median and the largest over the episodes of the
largest distance (m) a setpoint went from the episode's start (the knobs at its first
Ronchigram), every command counted (a measuring policy's own probe moves and the final move
included). It is measured here, below the counting wrapper, by `ExcursionTracker`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.perturbations import PERTURBATIONS, perturbed_config
from emauto.errors import ConfigError
from emauto.microscope import (
    Frame,
    ImageRequest,
    Microscope,
    MicroscopeState,
    RonchigramRequest,
)
from emauto.tasks.probe_tuning.bench import DEFAULT_BUDGET_STEPS, summarise
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.policies.registry import METHODS
from emauto.wrappers.base import MicroscopeWrapper
from emauto.wrappers.calibrated import CalibratedMicroscope, InstrumentCalibration

__all__ = ["ExcursionTracker", "run_robustness_suite"]

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ExcursionTracker(MicroscopeWrapper):
    """Follows how far each knob's setpoint goes from an episode's start.

    `start_episode` forgets the last episode; the start is the knob setpoints at the next
    Ronchigram or image (an episode's reset frame, after the env has set its start); from
    then on every `set` updates, per knob, the largest ``|setpoint - start|`` (SI units).
    """

    def __init__(self, microscope: Microscope) -> None:
        super().__init__(microscope)
        self._start: dict[str, float] | None = None
        self._largest: dict[str, float] = {}

    def start_episode(self) -> None:
        """Forget the last episode: the next frame fixes the new start."""
        self._start = None
        self._largest = {}

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """Take a frame; the first of an episode fixes its start."""
        if self._start is None:
            self._start = dict(self.microscope.read().knobs)
        return self.microscope.acquire(request)

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Apply setpoints; count how far they are from the start."""
        state = self.microscope.set(setpoints)
        if self._start is not None:
            for name in setpoints:
                if name in self._start:
                    distance = abs(state.knobs[name] - self._start[name])
                    self._largest[name] = max(self._largest.get(name, 0.0), distance)
        return state

    def largest(self, knobs: Sequence[str]) -> dict[str, float]:
        """Per knob, the largest distance (SI units) from the start this episode (0: never
        moved)."""
        return {name: self._largest.get(name, 0.0) for name in knobs}


def _excursion_figures(per_episode: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per knob: the median and the largest over the episodes (m, 4 significant digits)."""
    figures: dict[str, dict[str, float]] = {}
    for name in per_episode[0] if per_episode else []:
        values = np.array([episode[name] for episode in per_episode], dtype=np.float64)
        figures[name] = {
            "median": float(f"{np.median(values):.4g}"),
            "max": float(f"{values.max():.4g}"),
        }
    return figures


def run_method(
    method: str,
    sim_config: SimConfig,
    seeds: Sequence[int],
    *,
    seed: int = 0,
    budget_steps: int = DEFAULT_BUDGET_STEPS,
    policy_path: str | None = None,
    config: ProbeTuningConfig | None = None,
    progress: Progress | None = None,
    label: str = "",
    calibration: InstrumentCalibration | None = None,
) -> dict[str, Any]:
    """One method on the twin of ``sim_config``, episodes ``seeds``: the bench's figures
    (`bench.summarise`, without the curve) and ``knob_excursion_m``. ``calibration``: the
    method sees the twin through `CalibratedMicroscope` (what a calibration session of
    that twin measured)."""
    from emauto.drivers import connect
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv
    from emauto.tasks.probe_tuning.policies.base import run_episode
    from emauto.tasks.probe_tuning.policies.registry import make_policy
    from emauto.wrappers.counting import CountingMicroscope

    tuning = (config or ProbeTuningConfig()).model_copy(update={"max_steps": budget_steps})
    twin = connect("sim://", config=sim_config)
    if calibration is not None:
        twin = CalibratedMicroscope(twin, calibration)
    tracker = ExcursionTracker(twin)
    counter = CountingMicroscope(tracker)
    env = ProbeTuningEnv(counter, tuning)
    results = []
    excursions: list[dict[str, float]] = []
    try:
        policy = make_policy(method, env, seed, policy_path)
        for index, episode_seed in enumerate(seeds):
            tracker.start_episode()
            result = run_episode(
                env, policy, episode_seed, counter, max_acquisitions=budget_steps + 1
            )
            results.append(result)
            excursions.append(tracker.largest(env.knobs))
            if progress is not None:
                progress(
                    f"{label}{method} episode {index + 1}/{len(seeds)}: "
                    f"success={result.success} acquisitions={result.acquisitions} "
                    f"strehl={result.final_strehl:.3f} ended by {result.ended_by}"
                )
        close = getattr(policy, "close", None)
        if callable(close):
            close()
    finally:
        env.close()
        counter.close()
    figures = summarise(results, budget_steps)
    figures.pop("curve", None)
    figures["knob_excursion_m"] = _excursion_figures(excursions)
    return figures


def run_robustness_suite(
    methods: Sequence[str],
    perturbations: Sequence[str],
    episodes: int,
    seed: int = 0,
    *,
    budget_steps: int = DEFAULT_BUDGET_STEPS,
    policy_path: str | None = None,
    config: ProbeTuningConfig | None = None,
    base: SimConfig | None = None,
    directory: str | Path | None = None,
    progress: Progress | None = _stderr,
    calibrations: Mapping[str, InstrumentCalibration] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{perturbation: {method: figures}}``: each method on each perturbed twin (over
    ``base``, default `SimConfig()`), the same ``episodes`` seeded episodes everywhere
    (``seed * 100_000 + i``, as `emauto bench probe-tuning`). ``progress`` is told one line
    per episode (default: stderr; None: silent). ``calibrations``: perturbation name ->
    the calibration its twin is seen through (`run_method`); others are seen bare."""
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if budget_steps < 1:
        raise ConfigError(f"budget_steps must be >= 1, got {budget_steps}")
    for method in methods:
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    for name in perturbations:
        if name not in PERTURBATIONS:
            raise ConfigError(
                f"unknown perturbation {name!r}; expected one of {list(PERTURBATIONS)}"
            )
    seeds = [seed * 100_000 + i for i in range(episodes)]
    suite: dict[str, dict[str, dict[str, Any]]] = {}
    for name in perturbations:
        sim_config = perturbed_config(name, base, directory)
        suite[name] = {}
        for method in methods:
            suite[name][method] = run_method(
                method,
                sim_config,
                seeds,
                seed=seed,
                budget_steps=budget_steps,
                policy_path=policy_path,
                config=config,
                progress=progress,
                label=f"{name}: ",
                calibration=(calibrations or {}).get(name),
            )
    return suite
