"""RL training (tiny, for the plumbing) and the policy folder format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emauto.errors import ModelFileError
from emauto.models.estimator import DEFAULT_WEIGHTS
from emauto.models.weights import file_digest
from emauto.tasks.probe_tuning.config import ProbeTuningConfig, RLTrainingConfig
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.tasks.probe_tuning.policies.base import TuningPolicy, run_episode
from emauto.tasks.probe_tuning.policies.rl import load_policy, train_policy


def _tiny(algo: str, uri: str) -> RLTrainingConfig:
    return RLTrainingConfig(
        algo=algo,  # type: ignore[arg-type]
        total_timesteps=48,
        n_envs=2,
        n_steps=12,
        batch_size=12,
        eval_freq=24,
        eval_episodes=1,
        checkpoint_freq=24,
        microscope=uri,
        env=ProbeTuningConfig(max_steps=3),
        net_arch=(16,),
    )


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_tiny_training_writes_a_loadable_policy(
    algo: str,
    tiny_carbon: Path,
    specimen_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    uri = f"sim://?specimen={tiny_carbon}"
    out = train_policy(_tiny(algo, uri), tmp_path / algo, progress=False)
    assert {"policy.pt", "config.yaml", "normalization.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.rglob("*.zip")), "training writes no pickled SB3 zip"
    assert load_policy(out / "best").config.algo == algo  # best and checkpoints: policy folders
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert checkpoints and load_policy(checkpoints[0]).config.algo == algo
    assert "reward_return_var" in json.loads((out / "normalization.json").read_text())
    policy = load_policy(out)
    assert isinstance(policy, TuningPolicy) and policy.config.algo == algo
    env = ProbeTuningEnv(uri, ProbeTuningConfig(max_steps=2))
    result = run_episode(env, policy, seed=0)
    assert result.acquisitions >= 2 or result.success
    env.close()
    # the policy is bound to the estimator it was trained with, by digest
    record = json.loads((out / "estimator.json").read_text())
    assert record["sha256"] == file_digest(DEFAULT_WEIGHTS)
    (out / "estimator.json").write_text(json.dumps({**record, "sha256": "0" * 64}))
    with pytest.raises(ModelFileError, match="trained with the estimator"):
        load_policy(out)


def test_bad_policy_folders_raise(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="policy folder"):
        load_policy(tmp_path)
    (tmp_path / "policy.pt").write_bytes(b"junk")
    (tmp_path / "config.yaml").write_text("algo: ppo\n")
    with pytest.raises(ModelFileError, match="not a readable torch file"):
        load_policy(tmp_path)
    (tmp_path / "config.yaml").write_text("algo: dqn\n")
    with pytest.raises(Exception, match="algo"):
        load_policy(tmp_path)


def test_shipped_policy_beats_random(carbon_uri: str, specimen_cache: Path) -> None:
    """Over 6 fixed episodes the shipped policy leaves a better wavefront (lower true phase
    variance over the aperture) than random actions. A weak bar, honestly chosen: the
    shipped policy does not reach Strehl 0.8 (README, Benchmarks)."""
    import emauto
    from emauto import optics
    from emauto.tasks.probe_tuning.bench import make_policy

    scope = emauto.connect(carbon_uri, cache_dir=specimen_cache)
    env = ProbeTuningEnv(scope, ProbeTuningConfig(max_steps=8))
    wavelength = optics.wavelength(scope.describe().energy_eV)

    def final_variance(policy: TuningPolicy, seed: int) -> float:
        run_episode(env, policy, seed)
        values = scope.true_aberrations().to_dict()  # type: ignore[attr-defined]
        names = list(values)
        coefficients = np.array([[values[k] for k in names]])
        return float(optics.phase_variance_batch(coefficients, names, wavelength, 0.03)[0])

    rl, random = load_policy(), make_policy("random", env)
    rl_log = np.mean([np.log(final_variance(rl, seed)) for seed in range(6)])
    random_log = np.mean([np.log(final_variance(random, seed)) for seed in range(6)])
    assert rl_log < random_log
