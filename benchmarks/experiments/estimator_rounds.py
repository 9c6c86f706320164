"""Experiment: how well the CNN estimator measures in the `cnn` policy's own rounds.

Each episode starts from the benchmark's start distribution; each round adds a known
over-focus step (+60 nm in the first round, +40 nm after), asks the estimator for the
aberrations at that frame, compares them with the twin's ground truth, and cancels the
estimate (probe included), as `measure_correct` does. Prints the RMS and
median absolute error per aberration and round, in nm, as JSON.

    .venv/bin/python benchmarks/experiments/estimator_rounds.py --episodes 30 --rounds 4
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import emauto
from emauto.models.estimator import DEFAULT_WEIGHTS, RonchigramEstimator
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="first episode seed")
    parser.add_argument("--estimator", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--microscope", default="sim://")
    args = parser.parse_args()

    estimator = RonchigramEstimator.load(args.estimator)
    scope = emauto.connect(args.microscope)
    env = ProbeTuningEnv(scope, ProbeTuningConfig(max_steps=2 * args.rounds + 2))
    errors: list[list[np.ndarray]] = [[] for _ in range(args.rounds)]

    def step(change_m: dict[str, float]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        action = np.array([change_m.get(k, 0.0) for k in env.knobs]) / env.step_limits
        observation, _, _, _, info = env.step(np.clip(action, -1, 1).astype(np.float32))
        return observation, info

    for episode in range(args.episodes):
        env.reset(seed=args.seed + episode)
        for round_index in range(args.rounds):
            probe = 60e-9 if round_index == 0 else 40e-9
            observation, info = step({"C10": probe})
            estimate = estimator.estimate(observation["ronchigram"], info["change_m"])
            truth = scope.true_aberrations().to_dict()  # type: ignore[attr-defined]
            errors[round_index].append(
                np.array(
                    [estimate.mean_m[k] - (truth[k] - env.reference[k]) for k in estimator.knobs]
                )
            )
            step({k: -estimate.mean_m[k] for k in env.knobs})
    env.close()
    figures = {}
    for round_index, rows in enumerate(errors):
        table = np.array(rows) * 1e9
        figures[f"round_{round_index + 1}"] = {
            knob: {
                "rms_nm": round(float(np.sqrt(np.mean(table[:, j] ** 2))), 2),
                "median_abs_nm": round(float(np.median(np.abs(table[:, j]))), 2),
            }
            for j, knob in enumerate(estimator.knobs)
        }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
