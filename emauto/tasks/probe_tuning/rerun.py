"""`emauto replay SESSION --policy P`: re-run a policy on a recorded session.

Each recorded probe-alignment task is replayed (`emauto.drivers.replay`) through the same
environment, seed and start as when it was recorded, with policy ``P`` choosing the actions.
Every command it sends is compared with the recorded one; the report lists where they
differ. While they agree, the replay serves exactly the recorded frames, so the recorded
policy reproduces its run with no divergence. After the first divergence the recorded frames
no longer answer the new commands: the re-run goes on only while the recording holds a frame
for each request (acquisitions are matched by request) and the figures after it are those
of the recording, not of the new policy.

A replay never loads a policy folder the session names (opening a session someone sent must
not run code from a path it chose): ``rl`` runs the shipped policy or the folder given as
``--policy-path``. Re-running a recorded ``rl`` task that used another folder, without
``--policy-path``, is a `PolicySourceError` saying so.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from emauto.errors import PolicySourceError, ReplayExhaustedError
from emauto.sessions.reader import Session
from emauto.tasks.probe_tuning.plan import alignment_tasks, recorded_policy_source


def rerun_policy(
    session_path: str | Path, policy: str | None = None, policy_path: str | None = None
) -> dict[str, Any]:
    """Re-run ``policy`` (default: the recorded one) on each alignment task; one report each.

    ``policy_path``: the policy folder for ``rl``, as the user gave it (default: the shipped
    policy); never taken from the session."""
    from emauto.drivers.replay import open_replay
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv
    from emauto.tasks.probe_tuning.policies.base import run_episode
    from emauto.tasks.probe_tuning.policies.factories import reads_policy_folder
    from emauto.tasks.probe_tuning.policies.registry import make_policy
    from emauto.wrappers.counting import CountingMicroscope

    session = Session(session_path)
    reports: dict[str, Any] = {}
    for task in alignment_tasks(session):
        recorded = recorded_policy_source(session, task.name)
        named = policy is None and policy_path is None and recorded is not None
        if named and reads_policy_folder(task.policy):
            raise PolicySourceError(
                f"{session.path}: task {task.name!r} ran the policy folder {recorded!r}; "
                "a replay never loads a folder a session names. Pass --policy-path FOLDER "
                "(that folder, if you trust it) or --policy rl for the shipped policy"
            )
        replay = open_replay(session.path, task.name)
        counter = CountingMicroscope(replay)
        config = task.env.model_copy(update={"max_steps": task.max_acquisitions})
        env = ProbeTuningEnv(counter, config)
        name = policy or task.policy
        agent = make_policy(name, env, seed=task.seed, policy_path=policy_path)
        options = None if task.detune else {"offsets": dict.fromkeys(env.reference, 0.0)}
        ended = "complete"
        try:
            run_episode(
                env,
                agent,
                seed=task.seed,
                counter=counter,
                max_acquisitions=task.max_acquisitions,
                options=options,
            )
        except ReplayExhaustedError as exc:
            ended = f"the recording has no frame for a request of the new policy: {exc}"
        recorded_sets = sum(1 for s in session.steps if s.task == task.name and s.kind == "set")
        divergences = replay.divergences
        reports[task.name] = {
            "recorded_policy": task.policy,
            "policy": name,
            "identical": not divergences and ended == "complete",
            "recorded_commands": recorded_sets,
            "frames_served": replay.served,
            "divergences": len(divergences),
            "first_divergences": [asdict(d) for d in divergences[:5]],
            "ended": ended,
        }
    return reports
