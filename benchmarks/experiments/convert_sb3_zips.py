"""One-off: convert the shipped SB3 ``policy.zip`` files to emauto's ``policy.pt`` format.

Run once (issue 17, "policies load without unpickling"); kept for the record. It unpickles
OUR OWN shipped zips, the only place emauto ever does so; no loader of zips ships. For each
shipped policy folder it writes ``policy.pt`` (`emauto.models.sb3_policy`), loads it back,
and checks that the converted policy's deterministic actions (and, for the scan policy,
action probabilities) equal the zip's on observations sampled from the observation space::

    python benchmarks/experiments/convert_sb3_zips.py [--delete-zips]

Prints one JSON object: per policy, the number of observations compared and the largest
difference of actions (0 means equal).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emauto.models.sb3_policy import POLICY_FILE, load_policy_file, save_policy_file
from emauto.models.weights import shipped_path
from emauto.units import load_yaml

OBSERVATIONS = 64


def _training_notes(name: str, folder: Path) -> dict[str, Any]:
    if name == "probe_tuning_ppo":
        from emauto.tasks.probe_tuning.config import RLTrainingConfig

        config = load_yaml(folder / "config.yaml", RLTrainingConfig)
        return {"total_timesteps": config.total_timesteps, "converted_from": "policy.zip"}
    if name == "sparse_scan_ppo":
        from emauto.tasks.sparse_scan.config import ScanRLConfig

        scan = load_yaml(folder / "config.yaml", ScanRLConfig)
        return {"total_timesteps": scan.total_timesteps, "converted_from": "policy.zip"}
    meta = json.loads((folder / "config.json").read_text())
    return {"total_timesteps": meta["timesteps"], "converted_from": "policy.zip"}


def convert(name: str, delete_zip: bool) -> dict[str, Any]:
    """Convert one shipped folder; compare actions; the figures as a dict."""
    from stable_baselines3 import PPO

    from emauto.tasks.sparse_scan.policies.rl import POLICY_KWARGS, SCAN_EXTRACTORS

    folder = shipped_path(name)
    extractors = SCAN_EXTRACTORS if name == "sparse_scan_ppo" else {}
    custom = {"policy_kwargs": POLICY_KWARGS} if name == "sparse_scan_ppo" else {}
    model = PPO.load(folder / "policy.zip", device="cpu", custom_objects=custom)  # trusted: ours
    out = save_policy_file(
        model, folder / POLICY_FILE, extractors=extractors, training=_training_notes(name, folder)
    )
    policy, spec = load_policy_file(out, extractors=extractors, algo="ppo")
    space = model.observation_space
    space.seed(0)
    observations = [space.sample() for _ in range(OBSERVATIONS)]
    largest, probs_largest = 0.0, 0.0
    for observation in observations:
        old, _ = model.predict(observation, deterministic=True)
        new, _ = policy.predict(observation, deterministic=True)
        largest = max(
            largest, float(np.max(np.abs(np.asarray(old, float) - np.asarray(new, float))))
        )
        if name == "sparse_scan_ppo":
            with torch.no_grad():
                a = model.policy.get_distribution(model.policy.obs_to_tensor(observation)[0])
                b = policy.get_distribution(policy.obs_to_tensor(observation)[0])
            diff = (a.distribution.probs - b.distribution.probs).abs().max()  # type: ignore[union-attr]
            probs_largest = max(probs_largest, float(diff))
    if largest != 0.0 or probs_largest != 0.0:
        raise SystemExit(f"{name}: converted actions differ (largest {largest}, {probs_largest})")
    if delete_zip:
        (folder / "policy.zip").unlink()
    return {
        "observations": OBSERVATIONS,
        "largest_action_difference": largest,
        "largest_probability_difference": probs_largest,
        "policy_pt_bytes": out.stat().st_size,
        "spec": spec.model_dump(mode="json", exclude={"observation_space", "action_space"}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delete-zips", action="store_true", help="remove each policy.zip")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = ("probe_tuning_ppo", "region_search_ppo", "sparse_scan_ppo")
    print(json.dumps({name: convert(name, args.delete_zips) for name in names}, indent=2))


if __name__ == "__main__":
    main()
