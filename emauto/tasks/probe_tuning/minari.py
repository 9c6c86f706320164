"""Offline RL data from recorded sessions: a Minari dataset per session.

One episode per probe-alignment task: the recorded environment actions are replayed through
`ProbeTuning-v0` on a `replay://` of the session, which reproduces the observations and
rewards (checked against the recorded rewards, so a session that does not replay is refused).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from emauto.errors import SessionError
from emauto.sessions.reader import Session


@contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def export_minari(session: Session, out: Path, dataset_id: str = "emauto/probe-tuning-v0") -> Path:
    """Replay each recorded alignment task through the env into one Minari dataset under
    ``out`` (made absolute first: minari joins a relative root onto itself)."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from emauto.drivers.replay import ReplayTwin
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv
    from emauto.tasks.probe_tuning.plan import alignment_tasks

    tasks = alignment_tasks(session)
    episodes: list[EpisodeBuffer] = []
    env: ProbeTuningEnv | None = None
    for index, task in enumerate(tasks):
        steps = [s for s in session.episode if s.task == task.name]
        if not steps:
            continue
        replay = ReplayTwin(session, task.name)
        config = task.env.model_copy(update={"max_steps": task.max_acquisitions})
        env = ProbeTuningEnv(replay, config)
        options = None if task.detune else {"offsets": dict.fromkeys(env.reference, 0.0)}
        observation, _ = env.reset(seed=task.seed, options=options)
        observations = {key: [value] for key, value in observation.items()}
        actions, rewards, terminations, truncations = [], [], [], []
        for step in steps:
            observation, reward, terminated, truncated, _ = env.step(step.action)
            if not np.isclose(reward, step.reward, rtol=1e-6, atol=1e-9):
                raise SessionError(
                    f"{session.path}: replaying task {task.name!r} gave reward {reward:.6g} "
                    f"where {step.reward:.6g} was recorded; the session does not replay"
                )
            for key, value in observation.items():
                observations[key].append(value)
            actions.append(step.action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
        buffer = EpisodeBuffer(  # built whole: minari's step-by-step builder needs jax
            id=index,
            seed=task.seed,
            observations={key: np.stack(values) for key, values in observations.items()},
            actions=np.stack(actions),
            rewards=rewards,
            terminations=terminations,
            truncations=truncations,
            infos={},
        )
        episodes.append(buffer)
    if env is None:
        raise SessionError(f"{session.path}: the alignment tasks recorded no environment steps")
    out = Path(os.path.abspath(out))
    out.mkdir(parents=True, exist_ok=True)
    import gymnasium as gym

    spec = gym.spec("emauto/ProbeTuning-v0")
    with _minari_root(out), warnings.catch_warnings():
        # minari asks for a code permalink and an e-mail address that a session has not got
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")
        minari.create_dataset_from_buffers(
            dataset_id,
            episodes,
            env=spec,
            eval_env=spec,
            observation_space=env.observation_space,
            action_space=env.action_space,
            algorithm_name="emauto " + ",".join(t.policy for t in tasks),
            author="emauto",
            description=f"Probe tuning episodes replayed from {session.path.name}",
            jpeg_encoding=False,
        )
    return out / dataset_id


def export_minari_files(session: Session, out: Path) -> list[Path]:
    """`export_minari` as an ``emauto export`` format: the written paths."""
    return [export_minari(session, out)]
