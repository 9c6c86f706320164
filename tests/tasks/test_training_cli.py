"""`emauto train`, `emauto region-search train` and `emauto train-scan` as users expect:
``--seed`` / ``--n-envs`` / ``--device`` / ``--hyperparams`` checked before anything trains,
rewards printed on stderr, TensorBoard on by default, Ctrl-C saves what was trained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emauto.cli import main
from emauto.tasks.probe_tuning.belief_training import CHUNK, save_episodes
from emauto.tasks.probe_tuning.policies.belief_stop import FEATURE_SIZE, StopActor

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["train", "--hyperparams", "nope=1"], "'nope'"),
        (["train", "--hyperparams", "env.max_steps=0"], "env.max_steps"),
        (["train", "--task", "probe-tuning-decider", "--n-envs", "0"], "n_envs"),
        (["train", "--task", "probe-tuning-belief", "--hyperparams", "timesteps=-1"], "timesteps"),
        (["train", "--task", "ronchigram-estimator", "--data", "x.npz", "--n-envs", "2"],
         "--n-envs"),
        (["region-search", "train", "--hyperparams", "env.grid=1"], "env.grid"),
        (["region-search", "train", "--hyperparams", "learning_rate=fast"], "learning_rate"),
        (["train-scan", "rl", "--hyperparams", "n_stepz=64"], "'n_stepz'"),
        (["train-scan", "completion", "--device", "cuda"], "--device"),
        (["train-scan", "completion", "--tensorboard"], "--tensorboard"),
        (["train", "--task", "ronchigram-estimator", "--data", "x.npz", "--tensorboard"],
         "does not log to TensorBoard"),
    ],
)  # fmt: skip
def test_a_bad_override_fails_before_anything_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    out = tmp_path / "out"
    started = time.perf_counter()
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emauto: error: ") and named in err, err
    assert not out.exists() and not (tmp_path / "tensorboard").exists()
    assert time.perf_counter() - started < 5.0  # nothing was built, nothing trained


def _episodes_folder(folder: Path, count: int) -> Path:
    """Recorded ``rl_belief`` episodes (synthetic: zero features, a Strehl ratio rising to
    0.9), in the chunk files `record_episodes` reads instead of recording."""
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(count):
        n = int(rng.integers(3, 7))
        strehl = np.linspace(0.2, 0.9, n)
        episodes.append({
            "features": rng.normal(0, 0.1, (n, FEATURE_SIZE)).astype(np.float32),
            "can_measure": np.array([True] * (n - 1) + [False]),
            "frames": np.arange(n) * 3 + 4,
            "strehl": strehl,
            "extra_frame": np.array([True] + [False] * (n - 1)),
            "final_strehl": np.array(strehl[-1]),
            "final_predicted": np.array(strehl[-1]),
        })  # fmt: skip
    for first in range(0, count, CHUNK):
        save_episodes(episodes[first : first + CHUNK], folder / f"chunk-{first:07d}.npz")
    return folder


def _belief_argv(tmp_path: Path, out: Path, timesteps: int) -> list[str]:
    folder = _episodes_folder(tmp_path / "episodes", 5)
    return [
        "train", "--task", "probe-tuning-belief", "--data", str(folder), "--out", str(out),
        "--seed", "3", "--n-envs", "2", "--device", "cpu",
        "--hyperparams", "episodes=3", "--hyperparams", "validation=2",
        "--hyperparams", f"timesteps={timesteps}", "--hyperparams", "n_steps=32",
        "--hyperparams", "batch_size=32", "--hyperparams", "bc_epochs=5",
        "--hyperparams", "hidden=[16]",
    ]  # fmt: skip


def test_belief_training_takes_the_overrides_prints_rewards_and_logs_to_tensorboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    out = tmp_path / "belief"
    assert main(_belief_argv(tmp_path, out, 256)) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout: the JSON report only
    assert report["interrupted"] is False and report["ppo_timesteps"] == 256
    saved = json.loads((out / "training.json").read_text())
    config = saved["config"]
    assert (config["seed"], config["n_envs"], config["device"], config["hidden"]) == (
        3, 2, "cpu", [16])  # fmt: skip
    lines = [line for line in captured.err.splitlines() if line.startswith("[train] ")]
    assert len(lines) == 4, captured.err  # one per rollout of 2 x 32 steps
    assert lines[0].startswith("[train] 64 steps: mean episode reward ")
    assert "success rate n/a" not in lines[0]  # the replay env reports is_success
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))  # on by default
    StopActor.load(out / "actor.pt")

    quiet = tmp_path / "quiet"
    argv = _belief_argv(tmp_path, quiet, 64)
    assert main([*argv, "--no-tensorboard"]) == 0
    assert (quiet / "actor.pt").is_file() and not (quiet / "tensorboard").exists()


def _interrupt_when_training(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``emauto ARGV`` in a process of its own; send it SIGINT (Ctrl-C) once it has
    printed its first ``[train]`` line; its exit status and output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "emauto", *argv],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while "[train] " not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=120)
        finally:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, log.read_text())


@pytest.mark.slow  # about 7 s: a process of its own that imports torch and SB3
def test_ctrl_c_in_belief_training_saves_the_actor_marked_interrupted(
    tmp_path: Path,
) -> None:
    """A real SIGINT, from outside, while PPO runs: exit 0, a clear message, an actor that
    loads and a training.json that says it was interrupted."""
    out = tmp_path / "belief"
    result = _interrupt_when_training(_belief_argv(tmp_path, out, 10_000_000), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "training interrupted at" in result.stderr
    assert "saving the policy reached so far" in result.stderr
    saved = json.loads((out / "training.json").read_text())
    assert saved["interrupted"] is True and 0 < saved["ppo_timesteps"] < 10_000_000
    assert json.loads(result.stdout)["interrupted"] is True
    StopActor.load(out / "actor.pt")


@pytest.mark.slow  # about 15 s: the region-search env's fields are slow to draw
def test_ctrl_c_in_region_search_train_saves_the_policy_marked_interrupted(
    tmp_path: Path,
) -> None:
    from emauto.models.sb3_policy import read_policy_spec
    from emauto.tasks.region_search.policies.rl import load_region_policy

    out = tmp_path / "region"
    argv = [
        "region-search", "train", "--out", str(out), "--timesteps", "1000000", "--seed", "2",
        "--n-envs", "2", "--device", "cpu", "--hyperparams", "n_steps=16",
        "--hyperparams", "batch_size=32", "--hyperparams", "n_epochs=1",
        "--hyperparams", "env.max_steps=8",
    ]  # fmt: skip
    result = _interrupt_when_training(argv, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "training interrupted at" in result.stderr
    meta = json.loads((out / "config.json").read_text())
    assert meta["interrupted"] is True and 0 < meta["timesteps"] < 1_000_000
    assert meta["training"]["n_envs"] == 2 and meta["seed"] == 2
    assert meta["training"]["env"]["max_steps"] == 8
    notes = read_policy_spec(out / "policy.pt")[0].training
    assert notes["interrupted"] is True
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    load_region_policy(out)


@pytest.mark.slow  # about 20 s: tiny PPO on the twin, with evaluations
def test_emauto_train_prints_evaluations_and_logs_to_tensorboard(
    tmp_path: Path,
    tiny_carbon: Path,
    specimen_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`emauto train` (probe tuning): the overrides land in the policy's config.yaml, one
    ``[eval]`` line per evaluation on stderr, TensorBoard events in OUT/tensorboard."""
    import yaml

    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    config = tmp_path / "rl.yaml"
    config.write_text(yaml.safe_dump({
        "total_timesteps": 48, "n_steps": 12, "batch_size": 12, "eval_freq": 24,
        "eval_episodes": 1, "checkpoint_freq": 1000,
        "microscope": f"sim://?specimen={tiny_carbon}", "net_arch": [16],
    }))  # fmt: skip
    out = tmp_path / "policy"
    argv = [
        "train", "--config", str(config), "--out", str(out), "--seed", "4", "--n-envs", "1",
        "--device", "cpu", "--hyperparams", "env.max_steps=3", "--hyperparams", "gamma=0.9",
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    evaluations = [line for line in err.splitlines() if line.startswith("[eval] ")]
    assert [line.split(":")[0] for line in evaluations] == ["[eval] 24 steps", "[eval] 48 steps"]
    assert "mean reward" in evaluations[0] and "success rate" in evaluations[0]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["seed"], saved["n_envs"], saved["device"], saved["gamma"]) == (4, 1, "cpu", 0.9)
    assert saved["env"]["max_steps"] == 3 and saved["tensorboard"] is True
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.slow  # about 30 s: the twin images of the scan env are slow to draw
def test_train_scan_rl_takes_the_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    out = tmp_path / "scan"
    argv = [
        "train-scan", "rl", "--out", str(out), "--timesteps", "64", "--seed", "2",
        "--n-envs", "1", "--device", "cpu", "--hyperparams", "images_per_specimen=1",
        "--hyperparams", "n_steps=32", "--no-tensorboard",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "[train] 64 steps: mean episode reward" in capsys.readouterr().err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["seed"], saved["n_envs"], saved["n_steps"], saved["device"]) == (2, 1, 32, "cpu")
    assert saved["images_per_specimen"] == 1 and not (out / "tensorboard").exists()
