"""Probe-tuning policies by name: the one list the benchmark, the CLI, the daemon's plans and
the evaluation derive their choices from. Each entry is a factory
``(env, seed, policy_path) -> TuningPolicy`` in `factories`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emauto.registry import Registry

if TYPE_CHECKING:
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv
    from emauto.tasks.probe_tuning.policies.base import TuningPolicy

_FACTORIES = "emauto.tasks.probe_tuning.policies.factories"

#: Every probe-tuning policy, in the benchmark's order.
POLICIES = Registry(
    "probe-tuning policy",
    {
        "shift": f"{_FACTORIES}:probe_shift",
        "cnn": f"{_FACTORIES}:cnn",
        "cnn_shift": f"{_FACTORIES}:cnn_then_shift",
        "bo": f"{_FACTORIES}:bayesian_optimisation",
        "simplex": f"{_FACTORIES}:simplex",
        "rl": f"{_FACTORIES}:reinforcement_learning",
        "rl_belief": f"{_FACTORIES}:belief_stop",
        "rl_decide": f"{_FACTORIES}:decision_rl",
        "shift_decide": f"{_FACTORIES}:expert_decisions",
        "handoff": f"{_FACTORIES}:handoff",
        "random": f"{_FACTORIES}:random_actions",
    },
)
#: The names, in the benchmark's order.
METHODS = POLICIES.names()


def make_policy(
    method: str, env: ProbeTuningEnv, seed: int = 0, policy_path: str | None = None
) -> TuningPolicy:
    """A policy for ``env`` by name (see `POLICIES`)."""
    factory = POLICIES.load(method)
    policy: TuningPolicy = factory(env, seed, policy_path)
    return policy
