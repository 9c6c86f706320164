"""Probe-tuning policies by method name, for the benchmark, the evaluation and the daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emauto.errors import ConfigError
from emauto.tasks.probe_tuning.policies.base import TuningPolicy

if TYPE_CHECKING:
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv

#: Every method, in the benchmark's order.
METHODS = ("shift", "cnn", "cnn_shift", "bo", "simplex", "rl", "random")


def make_policy(
    method: str, env: ProbeTuningEnv, seed: int = 0, policy_path: str | None = None
) -> TuningPolicy:
    """A policy for ``env`` by method name (see `METHODS`)."""
    if method == "shift":
        return _probe_shift_policy(env)
    if method == "random":
        from emauto.tasks.probe_tuning.policies.random_policy import RandomPolicy

        return RandomPolicy(len(env.knobs), seed)
    if method == "rl":
        from emauto.tasks.probe_tuning.policies.rl import load_policy

        return load_policy(policy_path)
    from emauto.models.estimator import load_default_estimator

    estimator = load_default_estimator()
    if method in ("cnn", "cnn_shift"):
        from emauto.tasks.probe_tuning.policies.measure_correct import MeasureCorrectPolicy

        cnn = MeasureCorrectPolicy(env.knobs, env.step_limits, estimator)
        if method == "cnn":
            return cnn
        from emauto.tasks.probe_tuning.policies.coarse_fine import (
            CNN_SHIFT_COARSE_STEPS,
            CoarseFinePolicy,
        )

        return CoarseFinePolicy(method, cnn, _probe_shift_policy(env), CNN_SHIFT_COARSE_STEPS)
    from emauto.tasks.probe_tuning.policies.objective import RonchigramObjective

    objective = RonchigramObjective(estimator, env.config.convergence_rad)
    if method == "bo":
        from emauto.tasks.probe_tuning.policies.bayesopt import BayesOptPolicy

        return BayesOptPolicy(env.knobs, objective, seed=seed)
    if method == "simplex":
        from emauto.tasks.probe_tuning.policies.simplex import NelderMeadPolicy

        return NelderMeadPolicy(env.knobs, objective)
    raise ConfigError(f"unknown method {method!r}; expected one of {METHODS} or 'all'")


def _probe_shift_policy(env: ProbeTuningEnv) -> TuningPolicy:
    """`shift` on ``env``: its microscope for the policy's own frames, its latest frame as
    the reference."""
    from emauto.tasks.probe_tuning.policies.shift_correct import ProbeShiftPolicy

    return ProbeShiftPolicy(
        env.knobs, env.step_limits, env.microscope, last_frame=lambda: env.last_frame
    )
