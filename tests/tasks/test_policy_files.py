"""Policies load without unpickling, on every path that loads one (issue 17).

Each test plants crafted files whose unpickling would create a marker file (a ``policy.pt``
with a pickled object in it, and an SB3 ``policy.zip`` whose serialized fields do the same)
where a loading path looks, and checks that the path answers with a typed error and the
marker never appears. `test_the_crafted_files_do_run_code_when_unpickled` shows the files are
real exploits: unpickled the old way, they create the marker.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

from emauto.errors import ConfigError, EmautoError, ModelFileError, PolicySourceError
from emauto.models.sb3_policy import (
    POLICY_FORMAT,
    learn_until_interrupted,
    load_policy_file,
    read_policy_spec,
    save_policy_file,
)
from emauto.models.weights import shipped_path

ROOT = Path(__file__).resolve().parents[2]


class _RunsCode:
    """Unpickling this creates ``path`` (in place of anything worse)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({self.path!r}, 'w').close()",))


def _crafted_pt(path: Path, marker: Path) -> None:
    import torch

    spec = read_policy_spec(shipped_path("probe_tuning_ppo") / "policy.pt")[0]
    blob = {
        "format": POLICY_FORMAT,
        "metadata": spec.model_dump_json(),
        "state_dict": {"mlp_extractor.policy_net.0.weight": _RunsCode(marker)},
    }
    torch.save(blob, path)


def _crafted_zip(path: Path, marker: Path) -> None:
    from stable_baselines3.common.save_util import save_to_zip_file

    save_to_zip_file(path, data={"policy_class": _RunsCode(marker), "policy_kwargs": {}})


def _crafted_folder(folder: Path, shipped: str, marker: Path) -> Path:
    """A copy of a shipped policy folder with crafted ``policy.pt`` and ``policy.zip``."""
    shutil.copytree(shipped_path(shipped), folder)
    _crafted_pt(folder / "policy.pt", marker)
    _crafted_zip(folder / "policy.zip", marker)
    return folder


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


def test_the_crafted_files_do_run_code_when_unpickled(tmp_path: Path) -> None:
    import torch
    from stable_baselines3.common.save_util import load_from_zip_file

    pt_marker, zip_marker = tmp_path / "pt-ran", tmp_path / "zip-ran"
    _crafted_pt(tmp_path / "policy.pt", pt_marker)
    _crafted_zip(tmp_path / "policy.zip", zip_marker)
    torch.load(tmp_path / "policy.pt", weights_only=False)  # the unsafe way: code runs
    load_from_zip_file(tmp_path / "policy.zip")  # what PPO.load did
    assert pt_marker.exists() and zip_marker.exists()


@pytest.mark.parametrize(
    ("shipped", "loader"),
    [
        ("probe_tuning_ppo", "emauto.tasks.probe_tuning.policies.rl:load_policy"),
        ("region_search_ppo", "emauto.tasks.region_search.policies.rl:load_region_policy"),
        ("sparse_scan_ppo", "emauto.tasks.sparse_scan.policies.rl:load_scan_policy"),
    ],
)
def test_load_policy_of_each_task_runs_no_code(
    tmp_path: Path, marker: Path, shipped: str, loader: str
) -> None:
    import importlib

    module, name = loader.split(":")
    load = getattr(importlib.import_module(module), name)
    folder = _crafted_folder(tmp_path / "evil", shipped, marker)
    with pytest.raises(ModelFileError, match="not a readable torch file"):
        load(folder)
    (folder / "policy.pt").unlink()  # only the zip left: never opened
    with pytest.raises(ModelFileError, match=r"policy\.pt"):
        load(folder)
    assert not marker.exists()
    assert load(shipped_path(shipped)) is not None  # the shipped one loads


@pytest.mark.slow  # about 8 s: the command builds the twin before it loads the policy
def test_evaluate_with_a_crafted_policy_path_runs_no_code(
    tmp_path: Path, marker: Path, tiny_sim_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from emauto.cli import main

    folder = _crafted_folder(tmp_path / "evil", "probe_tuning_ppo", marker)
    argv = ["evaluate", "--policy", str(folder), "--episodes", "1", "--microscope", tiny_sim_uri]
    assert main(argv) == 2
    assert "not a readable torch file" in capsys.readouterr().err
    assert not marker.exists()


# ------------------------------------------------------------------------------- sessions


@pytest.fixture(scope="module")
def shift_session(tmp_path_factory: pytest.TempPathFactory, tiny_sim_uri: str) -> Path:
    """A short daemon run (probe shift, 5 frames) on the tiny twin, recorded."""
    from emauto.agent.daemon import Daemon
    from emauto.agent.plans import AlignProbeTask, DaemonConfig

    task = AlignProbeTask(detune=True, seed=5, max_acquisitions=5)
    config = DaemonConfig(microscope=tiny_sim_uri, plan=(task,), heartbeat_s=None)
    session = tmp_path_factory.mktemp("policy-files") / "session"
    result = Daemon(config, session=session, progress=False).run()
    assert result.exit_status == "success", result.error
    return session


def _tampered(session: Path, out: Path, **step: Any) -> Path:
    """A copy of ``session`` whose recorded align_probe step says ``step`` (as someone who
    sends a crafted session would write it)."""
    shutil.copytree(session, out)
    documents = out / "documents.jsonl"
    lines = documents.read_text().splitlines()
    name, start = json.loads(lines[0])
    assert name == "start"
    start["plan"] = [{**s, **step} if s["kind"] == "align_probe" else s for s in start["plan"]]
    documents.write_text("\n".join([json.dumps([name, start]), *lines[1:]]) + "\n")
    return out


@pytest.mark.parametrize(
    "recorded", [{"policy_path": "FOLDER"}, {"policy_folder": "mine"}], ids=["path", "name"]
)
def test_replaying_a_session_never_loads_the_policy_it_names(
    shift_session: Path,
    tmp_path: Path,
    marker: Path,
    recorded: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from emauto.cli import main
    from emauto.tasks.probe_tuning.rerun import rerun_policy

    folder = _crafted_folder(tmp_path / "evil", "probe_tuning_ppo", marker)
    step = {k: str(folder) if v == "FOLDER" else v for k, v in recorded.items()}
    session = _tampered(shift_session, tmp_path / "sent", policy="rl", **step)
    with pytest.raises(PolicySourceError, match="--policy-path"):
        rerun_policy(session)
    assert main(["replay", str(session)]) == 2
    assert "never loads a folder a session names" in capsys.readouterr().err
    # the user's own --policy-path is loaded (and refused: it is the crafted folder)
    assert main(["replay", str(session), "--policy-path", str(folder)]) == 2
    assert "not a readable torch file" in capsys.readouterr().err
    assert not marker.exists()


def test_replay_with_a_crafted_policy_path_runs_no_code(
    shift_session: Path, tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emauto.cli import main

    folder = _crafted_folder(tmp_path / "evil", "probe_tuning_ppo", marker)
    argv = ["replay", str(shift_session), "--policy", "rl", "--policy-path", str(folder)]
    assert main(argv) == 2
    assert "not a readable torch file" in capsys.readouterr().err
    assert not marker.exists()


def test_replay_with_the_shipped_policy_is_explicit(shift_session: Path, tmp_path: Path) -> None:
    """``--policy rl`` without ``--policy-path`` runs the shipped policy even when the
    session named another folder: the user chose it."""
    from emauto.tasks.probe_tuning.rerun import rerun_policy

    session = _tampered(shift_session, tmp_path / "sent", policy="rl", policy_folder="mine")
    report = rerun_policy(session, policy="rl")["align_probe"]
    assert report["policy"] == "rl" and report["frames_served"] >= 1


# ---------------------------------------------------------------------------------- daemon


def test_a_plan_step_never_names_a_path(tmp_path: Path) -> None:
    from emauto.agent.plans import AlignProbeTask, DaemonConfig
    from emauto.units import load_yaml

    wire = {"kind": "align_probe", "policy": "rl", "policy_path": str(tmp_path)}
    with pytest.raises(ValueError, match="never names a folder to load"):
        AlignProbeTask.model_validate(wire)
    with pytest.raises(ValueError, match="pattern"):
        AlignProbeTask.model_validate({"policy": "rl", "policy_folder": str(tmp_path)})
    with pytest.raises(ValueError, match="policy_folder is for 'rl'"):
        AlignProbeTask.model_validate({"policy": "shift", "policy_folder": "mine"})
    config = tmp_path / "daemon.yaml"
    config.write_text(yaml.safe_dump({"plan": [wire]}))
    with pytest.raises(ConfigError, match="policy_path is no longer accepted"):
        load_yaml(config, DaemonConfig)
    config.write_text(yaml.safe_dump({"plan": [{**wire, "policy_path": None}]}))
    assert load_yaml(config, DaemonConfig).plan[0].policy_folder is None  # old files: null
    config.write_text(
        yaml.safe_dump({"plan": [{**wire, "policy_path": None, "policy_folder": "mine"}]})
    )
    with pytest.raises(ConfigError, match="does not list"):
        load_yaml(config, DaemonConfig)


def test_the_daemon_loads_only_folders_its_own_config_lists(
    tmp_path: Path, marker: Path, tiny_sim_uri: str
) -> None:
    from emauto.agent.daemon import Daemon
    from emauto.agent.plans import AlignProbeTask, DaemonConfig

    folder = _crafted_folder(tmp_path / "evil", "probe_tuning_ppo", marker)
    task = AlignProbeTask(policy="rl", policy_folder="mine", max_acquisitions=3)
    config = DaemonConfig(
        microscope=tiny_sim_uri, plan=(task,), heartbeat_s=None, policy_folders={"mine": folder}
    )
    provenance = config.provenance()[0]
    assert provenance["policy_folder"] == "mine" and "weights_sha256" in provenance
    result = Daemon(config, session=tmp_path / "session", progress=False).run()
    assert result.exit_status == "fail" and result.safe
    assert "ModelFileError" in result.error and "not a readable torch file" in result.error
    assert not marker.exists()


# --------------------------------------------------------------------------- the format


class _Tiny(gym.Env[np.ndarray, np.ndarray]):
    """Reward for matching the observation's first two entries."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        super().reset(seed=seed)
        self._obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self._obs, {}

    def step(self, action: np.ndarray) -> Any:
        reward = -float(np.sum((action - self._obs[:2]) ** 2))
        return self.reset()[0], reward, False, False, {}


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_ctrl_c_keeps_the_policy_and_it_loads_back_equal(
    tmp_path: Path, algo: str, one_thread: None
) -> None:
    """A real SIGINT during ``learn`` (sent by a callback at step 40) ends training; the
    policy reached is saved, noted as interrupted, and predicts as the live one did."""
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class CtrlC(BaseCallback):  # type: ignore[misc]
        def _on_step(self) -> bool:
            if self.num_timesteps == 40:
                os.kill(os.getpid(), signal.SIGINT)
            return True

    small = {"seed": 0, "device": "cpu", "policy_kwargs": {"net_arch": [16]}}
    if algo == "ppo":
        model: Any = PPO("MlpPolicy", _Tiny(), n_steps=16, batch_size=16, **small)
    else:
        model = SAC("MlpPolicy", _Tiny(), learning_starts=32, batch_size=8, **small)
    notes = learn_until_interrupted(model, 10_000, callback=CtrlC())
    assert notes["interrupted"] is True and notes["timesteps_done"] == 40
    path = save_policy_file(model, tmp_path / "policy.pt", training=notes)
    policy, spec = load_policy_file(path, algo=algo)
    assert spec.training["note"] == "training was interrupted at 40 steps"
    observations = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    for observation in observations:
        old, _ = model.predict(observation, deterministic=True)
        new, _ = policy.predict(observation, deterministic=True)
        assert np.array_equal(old, new)
    other = "sac" if algo == "ppo" else "ppo"
    with pytest.raises(ModelFileError, match=f"a {algo} policy, expected {other}"):
        load_policy_file(path, algo=other)


def test_bad_policy_files_are_typed_errors(tmp_path: Path) -> None:
    import torch

    spec, state = read_policy_spec(shipped_path("region_search_ppo") / "policy.pt")
    cases: dict[str, Any] = {
        "not a dict": [1, 2],
        "wrong format": {"format": "other", "metadata": "{}", "state_dict": {}},
        "bad metadata": {"format": POLICY_FORMAT, "metadata": "{", "state_dict": state},
        "unknown extractor": {
            "format": POLICY_FORMAT,
            "metadata": spec.model_copy(update={"features_extractor": "evil"}).model_dump_json(),
            "state_dict": state,
        },
        "huge space": {
            "format": POLICY_FORMAT,
            "metadata": json.dumps(
                {
                    **spec.model_dump(mode="json"),
                    "observation_space": {
                        "kind": "box",
                        "shape": [3, 10_000, 10_000],
                        "dtype": "uint8",
                        "low": 0,
                        "high": 255,
                    },
                }
            ),
            "state_dict": state,
        },
        "network larger than its tensors": {
            "format": POLICY_FORMAT,
            "metadata": spec.model_copy(update={"net_arch": (2048, 2048)}).model_dump_json(),
            "state_dict": state,
        },
        "tensors do not fit": {
            "format": POLICY_FORMAT,
            "metadata": spec.model_dump_json(),
            "state_dict": {k: v for k, v in list(state.items())[1:]},
        },
    }
    for name, blob in cases.items():
        torch.save(blob, tmp_path / f"{name}.pt")
        with pytest.raises(ModelFileError):
            load_policy_file(tmp_path / f"{name}.pt")
    with pytest.raises(ModelFileError, match="needs at least"):
        load_policy_file(tmp_path / "network larger than its tensors.pt")


@pytest.mark.parametrize("shipped", ["probe_tuning_ppo", "region_search_ppo", "sparse_scan_ppo"])
def test_the_size_bound_holds_for_the_shipped_policies(shipped: str) -> None:
    """`minimum_parameters` is a lower bound: at most the weights each shipped policy has
    (shared extractors counted once)."""
    from emauto.models.sb3_policy import minimum_parameters
    from emauto.tasks.sparse_scan.policies.rl import SCAN_EXTRACTORS

    extractors = SCAN_EXTRACTORS if shipped == "sparse_scan_ppo" else {}
    policy, spec = load_policy_file(shipped_path(shipped) / "policy.pt", extractors=extractors)
    assert 0 < minimum_parameters(spec) <= sum(p.numel() for p in policy.parameters())


def test_no_module_unpickles_a_model() -> None:
    """No SB3 ``.load``, no zip reader, no ``torch.load`` without ``weights_only=True``
    and no pickle anywhere in the package."""
    offenders = []
    for path in (ROOT / "emauto").rglob("*.py"):
        text = path.read_text()
        for needle in (
            "PPO.load",
            "SAC.load",
            "load_from_zip_file",
            "import pickle",
            "cloudpickle",
        ):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
        for line in text.splitlines():
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders
    shipped = [p.name for p in (ROOT / "emauto" / "models" / "weights").rglob("*")]
    assert "policy.zip" not in shipped


@pytest.mark.slow
def test_ctrl_c_in_emauto_train_saves_the_policy_without_a_traceback(
    tmp_path: Path, tiny_carbon: Path, specimen_cache: Path
) -> None:
    """``emauto train`` (probe tuning, the real command in a process of its own) gets a
    SIGINT at its 30th env step: it exits 0 without a traceback and leaves a loadable policy
    folder that notes the interruption."""
    from emauto.tasks.probe_tuning.policies.rl import load_policy

    config = tmp_path / "rl.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "total_timesteps": 10_000,
                "n_envs": 2,
                "n_steps": 12,
                "batch_size": 12,
                "eval_freq": 1000,
                "eval_episodes": 1,
                "checkpoint_freq": 1000,
                "microscope": f"sim://?specimen={tiny_carbon}",
                "env": {"max_steps": 3},
                "net_arch": [16],
            }
        )
    )
    script = (
        "import os, signal, sys\n"
        "from emauto.tasks.probe_tuning.env import ProbeTuningEnv\n"
        "step, calls = ProbeTuningEnv.step, [0]\n"
        "def counted(self, action):\n"
        "    calls[0] += 1\n"
        "    if calls[0] == 30:\n"
        "        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as a terminal sends it\n"
        "    return step(self, action)\n"
        "ProbeTuningEnv.step = counted\n"
        "from emauto.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "policy"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EMAUTO_CACHE_DIR": str(specimen_cache)}
    result = subprocess.run(
        [sys.executable, "-c", script, "train", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "training interrupted at" in result.stderr
    policy = load_policy(out)
    notes = read_policy_spec(out / "policy.pt")[0].training
    assert notes["interrupted"] is True and 0 < int(str(notes["timesteps_done"])) < 10_000
    assert policy.config.total_timesteps == 10_000


def test_errors_are_emauto_errors() -> None:
    assert issubclass(PolicySourceError, EmautoError) and issubclass(ModelFileError, EmautoError)


@pytest.mark.slow  # about 10 s
def test_ctrl_c_in_region_search_train_saves_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``emauto region-search train`` gets a real SIGINT at its 20th env step: it returns 0
    and leaves a loadable policy whose notes say it was interrupted."""
    from emauto.cli import main
    from emauto.tasks.region_search.env import RegionSearchEnv
    from emauto.tasks.region_search.policies.rl import load_region_policy

    step, calls = RegionSearchEnv.step, [0]

    def counted(self: RegionSearchEnv, action: np.ndarray) -> Any:
        calls[0] += 1
        if calls[0] == 20:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
        return step(self, action)

    monkeypatch.setattr(RegionSearchEnv, "step", counted)
    out = tmp_path / "region"
    assert main(["region-search", "train", "--out", str(out), "--timesteps", "4096"]) == 0
    assert "training interrupted at" in capsys.readouterr().err
    load_region_policy(out)
    notes = read_policy_spec(out / "policy.pt")[0].training
    assert notes["interrupted"] is True and 0 < int(str(notes["timesteps_done"])) <= 20
    assert json.loads((out / "config.json").read_text())["interrupted"] is True


class _Spaces(gym.Env[Any, Any]):
    """An env that only has spaces (for building SB3 models; never stepped)."""

    def __init__(self, observation_space: spaces.Space[Any], action_space: spaces.Space[Any]):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> Any:
        return self.observation_space.sample(), 0.0, True, False, {}


_IMAGE = spaces.Box(0, 255, (2, 64, 64), dtype=np.uint8)
_ROUND_TRIPS = {
    "ppo-mlp": ("ppo", "MlpPolicy", spaces.Box(-np.inf, np.inf, (46,), np.float32), "box"),
    "ppo-dict": (
        "ppo",
        "MultiInputPolicy",
        spaces.Dict({"ronchigram": _IMAGE, "history": spaces.Box(-1.0, 1.0, (28,), np.float32)}),
        "box",
    ),
    "ppo-cnn-discrete": ("ppo", "CnnPolicy", spaces.Box(0, 255, (3, 64, 64), np.uint8), "n"),
    "sac-mlp": ("sac", "MlpPolicy", spaces.Box(-1.0, 1.0, (5,), np.float32), "box"),
}


@pytest.mark.parametrize("case", list(_ROUND_TRIPS))
def test_each_kind_of_policy_round_trips(tmp_path: Path, case: str, one_thread: None) -> None:
    """PPO (vector, dict with images: features ``cnn``, images with discrete actions) and SAC:
    saved and loaded back, the same actions and the same parameters."""
    import torch
    from stable_baselines3 import PPO, SAC

    algo, network, observation_space, kind = _ROUND_TRIPS[case]
    action_space = spaces.Discrete(64) if kind == "n" else spaces.Box(-1, 1, (7,), np.float32)
    cls: Any = PPO if algo == "ppo" else SAC
    small = {"net_arch": [32]}
    model = cls(network, _Spaces(observation_space, action_space), seed=0, policy_kwargs=small)
    path = save_policy_file(model, tmp_path / "policy.pt", training={"note": case})
    policy, spec = load_policy_file(path, algo=algo)
    assert spec.training == {"note": case}
    before, after = model.policy.state_dict(), policy.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    observation_space.seed(1)
    for _ in range(8):
        observation = observation_space.sample()
        old, _ = model.predict(observation, deterministic=True)
        new, _ = policy.predict(observation, deterministic=True)
        assert np.array_equal(old, new)
