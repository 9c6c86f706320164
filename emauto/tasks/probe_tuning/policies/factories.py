"""How each registered probe-tuning policy is built for an env (see `registry.POLICIES`).

Every factory takes ``(env, seed, policy_path)`` and imports its policy's module only when
called, so listing the registry stays cheap. `weights_used` says which shipped weight files
a policy reads, for the session's record.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv
    from emauto.tasks.probe_tuning.policies.base import TuningPolicy
    from emauto.tasks.probe_tuning.policies.belief_stop import Decide
    from emauto.tasks.probe_tuning.policies.objective import AberrationMeter


def probe_shift(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``shift``: probe-shift measurement and correction, on the env's microscope (for the
    policy's own frames) with the env's latest frame as the reference."""
    from emauto.tasks.probe_tuning.policies.shift_correct import ProbeShiftPolicy

    return ProbeShiftPolicy(
        env.knobs,
        env.step_limits,
        env.microscope,
        last_frame=lambda: env.last_frame,
        aperture_rad=env.config.convergence_rad,
        max_exposure_s=env.config.max_measurement_exposure_s,
    )


def cnn(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``cnn``: the shipped Ronchigram estimator measures, the policy corrects."""
    from emauto.models.estimator import load_default_estimator
    from emauto.tasks.probe_tuning.policies.measure_correct import MeasureCorrectPolicy

    return MeasureCorrectPolicy(env.knobs, env.step_limits, load_default_estimator())


def cnn_then_shift(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``cnn_shift``: a few CNN rounds, then probe shift."""
    from emauto.tasks.probe_tuning.policies.coarse_fine import (
        CNN_SHIFT_COARSE_STEPS,
        CoarseFinePolicy,
    )

    coarse, fine = cnn(env, seed, policy_path), probe_shift(env, seed, policy_path)
    return CoarseFinePolicy("cnn_shift", coarse, fine, CNN_SHIFT_COARSE_STEPS)


def bayesian_optimisation(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``bo``: Bayesian optimisation on the probe-shift measurement's aberration vector
    (a multi-output linear surrogate), its frames taken through the env's microscope."""
    from emauto.tasks.probe_tuning.policies.bayesopt import BayesOptPolicy

    return BayesOptPolicy(env.knobs, env.step_limits, _meter(env), seed=seed)


def simplex(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``simplex``: Nelder-Mead over the correction gain of each aberration group, scored by
    the probe-shift measurement's phase variance, its frames taken through the env's
    microscope."""
    from emauto.tasks.probe_tuning.policies.simplex import NelderMeadPolicy

    return NelderMeadPolicy(env.knobs, env.step_limits, _meter(env))


def reinforcement_learning(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``rl``: the shipped PPO policy, or the one in the folder ``policy_path``."""
    from emauto.tasks.probe_tuning.policies.rl import load_policy

    return load_policy(policy_path)


def decision_rl(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``rl_decide``: the learned decision policy (measurement as an action), the shipped
    actor or the ``actor.pt`` in the folder ``policy_path``; its budget is the env's
    (``max_steps`` + the reset frame)."""
    from emauto.tasks.probe_tuning.decisions import DecisionCore
    from emauto.tasks.probe_tuning.policies.decider import (
        DEFAULT_ACTOR,
        DecisionActor,
        DecisionPolicy,
        actor_decider,
    )

    path = Path(policy_path) / "actor.pt" if policy_path else DEFAULT_ACTOR
    core = DecisionCore(env, env.config.max_steps + 1)
    return DecisionPolicy("rl_decide", core, actor_decider(DecisionActor.load(path)))


def expert_decisions(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``shift_decide``: the `shift` rules as decisions (`decisions.expert_decision`), the
    expert the learned decision policy imitates."""
    from emauto.tasks.probe_tuning.decisions import DecisionCore, expert_decision
    from emauto.tasks.probe_tuning.policies.decider import DecisionPolicy

    core = DecisionCore(env, env.config.max_steps + 1)
    return DecisionPolicy("shift_decide", core, expert_decision)


def belief_stop(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``rl_belief``: `bo`'s evaluations with the learned stop (measure again, declare
    aligned, or hand over to the operator), the shipped actor or the ``actor.pt`` in the
    folder ``policy_path``."""
    from emauto.tasks.probe_tuning.policies.belief_stop import BeliefStopPolicy

    decide = _stop_actor_decide(policy_path)
    return BeliefStopPolicy(env.knobs, env.step_limits, _meter(env), decide, seed=seed)


def random_actions(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``random``: uniform random actions (a floor for the benchmark)."""
    from emauto.tasks.probe_tuning.policies.random_policy import RandomPolicy

    return RandomPolicy(len(env.knobs), seed)


def _meter(env: ProbeTuningEnv) -> AberrationMeter:
    """Probe-shift measurements on the env's microscope, the env's frame as the reference."""
    from emauto.tasks.probe_tuning.policies.objective import AberrationMeter

    return AberrationMeter(
        env.knobs,
        env.microscope,
        last_frame=lambda: env.last_frame,
        aperture_rad=env.config.convergence_rad,
        max_exposure_s=env.config.max_measurement_exposure_s,
    )


#: Factories whose policy reads the shipped Ronchigram estimator (and no other weights).
_READS_ESTIMATOR = (cnn, cnn_then_shift)


def reads_policy_folder(name: str) -> bool:
    """Whether policy ``name`` loads a trained policy folder (``rl``, ``rl_decide``,
    ``rl_belief``, ``handoff``)."""
    from emauto.tasks.probe_tuning.policies.registry import POLICIES

    return POLICIES.load(name) in (reinforcement_learning, decision_rl, belief_stop, handoff)


def weights_used(name: str, policy_path: str | None = None) -> dict[str, Path]:
    """The weight files policy ``name`` reads, by role (``weights``, ``estimator``);
    ``policy_path``: the policy folder the caller chose (default: the shipped one)."""
    from emauto.models.sb3_policy import POLICY_FILE
    from emauto.models.weights import shipped_path
    from emauto.tasks.probe_tuning.policies.registry import POLICIES

    factory = POLICIES.load(name)
    estimator = shipped_path("ronchigram_estimator.pt")
    if factory is reinforcement_learning:
        folder = Path(policy_path) if policy_path else shipped_path("probe_tuning_ppo")
        return {"weights": folder / POLICY_FILE, "estimator": estimator}
    if factory is decision_rl:
        folder = Path(policy_path) if policy_path else shipped_path("probe_tuning_decider")
        return {"weights": folder / "actor.pt"}
    if factory is belief_stop or factory is handoff:
        folder = Path(policy_path) if policy_path else shipped_path("probe_tuning_belief")
        return {"weights": folder / "actor.pt"}
    if factory in _READS_ESTIMATOR:
        return {"weights": estimator}
    return {}


def handoff(env: ProbeTuningEnv, seed: int, policy_path: str | None) -> TuningPolicy:
    """``handoff``: ``rl_belief`` (the shipped actor or the ``actor.pt`` in the folder
    ``policy_path``) while it is sure, then `bo`'s own stop rule; the operator when neither
    is."""
    from emauto.tasks.probe_tuning.policies.handoff import HandoffPolicy

    decide = _stop_actor_decide(policy_path)
    return HandoffPolicy(env.knobs, env.step_limits, _meter(env), decide, seed=seed)


def _stop_actor_decide(policy_path: str | None) -> Decide:
    """The learned stop's choices: the shipped actor, or the ``actor.pt`` in the folder
    ``policy_path``."""
    from emauto.tasks.probe_tuning.policies.belief_stop import (
        DEFAULT_STOP_ACTOR,
        StopActor,
        actor_decide,
    )

    path = Path(policy_path) / "actor.pt" if policy_path else DEFAULT_STOP_ACTOR
    return actor_decide(StopActor.load(path))
