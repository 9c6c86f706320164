"""`emauto daemon`: run a plan of tasks on any microscope, recorded, controllable, safe.

The daemon connects to ``config.microscope``, records every call into a new session folder
(`emauto.sessions`), and runs the plan's tasks in a worker thread while the control socket
(`emauto.agent.control`) answers ``status``, ``pause``, ``resume``, ``abort`` and ``reset``.
Every microscope command passes a checkpoint first (`CheckpointedMicroscope`): a pause blanks
the beam and waits there, an abort ends the task at once. Whatever ends the run (the plan
done, an abort, an exception in a task or policy, a lost link) the ``finally`` path makes
the microscope safe (beam blanked, motion stopped) and writes the session's stop document;
a run that ends in an error leaves the daemon ``tripped`` until an operator resets it. A
lost link cannot be made safe from this side: the server's watchdog does that when the
daemon's heartbeats stop (`emauto.wrappers.safety`).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from emauto.agent.plans import AlignProbeTask, DaemonConfig, SurveyTask
from emauto.agent.state import State, StateMachine
from emauto.errors import AbortedError
from emauto.microscope import (
    ImageRequest,
    Microscope,
    RasterScan,
)
from emauto.models.weights import file_digest
from emauto.sessions.recorder import ExitStatus, SessionRecorder
from emauto.version import __version__
from emauto.wrappers.checkpointed import CheckpointedMicroscope
from emauto.wrappers.recording import RecordingMicroscope


@dataclass
class RunResult:
    """What one run of the plan did."""

    exit_status: ExitStatus
    session: Path
    tasks: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    safe: bool = False


def _sha256(path: Path) -> str:
    return file_digest(path)[:16]


def policy_version(task: AlignProbeTask) -> dict[str, str]:
    """The policy's name, emauto's version and a digest of its weights, for the record."""
    weights = resources.files("emauto.policies") / "weights"
    version = {"policy": task.policy, "emauto": __version__}
    estimator = Path(str(weights / "ronchigram_estimator.pt"))
    if task.policy == "rl":
        folder = (
            Path(task.policy_path) if task.policy_path else Path(str(weights / "probe_tuning_ppo"))
        )
        version["weights_sha256"] = _sha256(folder / "policy.zip")
        version["estimator_sha256"] = _sha256(estimator)
    elif task.policy in ("cnn", "cnn_shift", "bo", "simplex"):
        version["weights_sha256"] = _sha256(estimator)
    return version


class Daemon:
    """Run ``config.plan`` once; `handle` takes the control socket's commands meanwhile."""

    def __init__(
        self, config: DaemonConfig, *, session: str | Path | None = None, progress: bool = True
    ) -> None:
        self.config = config
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.session = Path(session) if session else config.sessions / f"session-{stamp}"
        self.machine = StateMachine()
        self.progress = progress
        self.result: RunResult | None = None
        self._task: tuple[int, str] = (-1, "")
        self._done = (0, 0)
        self._recorder: SessionRecorder | None = None

    # ------------------------------------------------------------------ control

    def status(self) -> dict[str, Any]:
        """The state, the task, its progress and the session folder."""
        index, name = self._task
        status: dict[str, Any] = {
            "state": self.machine.state.value,
            "task_index": index,
            "task": name,
            "tasks": len(self.config.plan),
            "progress": {"done": self._done[0], "total": self._done[1]},
            "session": str(self.session),
        }
        if self.result is not None:
            status["exit_status"] = self.result.exit_status
            status["error"] = self.result.error
        return status

    def handle(self, command: str) -> dict[str, Any]:
        """Apply a control command (``status``, ``pause``, ``resume``, ``abort``, ``reset``)."""
        if command == "pause":
            self.machine.to(State.PAUSED, "pause", only_from=(State.RUNNING,))
        elif command == "resume":
            self.machine.to(State.RUNNING, "resume", only_from=(State.PAUSED,))
        elif command == "abort":
            self.machine.to(State.ABORTING, "abort", only_from=(State.RUNNING, State.PAUSED))
        elif command == "reset":
            self.machine.to(State.IDLE, "reset", only_from=(State.TRIPPED,))
        return self.status()

    # ------------------------------------------------------------------ the run

    def run(self) -> RunResult:
        """Connect, record, run every task, and end safe whatever happens."""
        from emauto.drivers import connect

        self.machine.to(State.RUNNING, "start")
        kwargs: dict[str, Any] = {}
        if self.config.microscope.startswith(("tcp://", "ipc://")) and self.config.heartbeat_s:
            kwargs["heartbeat_s"] = self.config.heartbeat_s
        try:
            backend = connect(self.config.microscope, **kwargs)
        except BaseException as exc:
            self.machine.to(State.TRIPPED, f"connect failed: {exc}")
            raise
        result = RunResult("fail", self.session)
        recording: RecordingMicroscope | None = None
        try:
            recording = RecordingMicroscope.open(backend, self.session, self._metadata())
            self._recorder = recording.recorder
            scope = CheckpointedMicroscope(
                recording, self.machine.checkpoint, lambda: self.machine.state == State.PAUSED
            )
            for index, task in enumerate(self.config.plan):
                self._task = (index, task.name)
                recording.recorder.task = task.name
                result.tasks.append(self._run_task(task, scope))
            result.exit_status = "success"
        except AbortedError as exc:
            result.exit_status, result.error = "abort", str(exc)
        except BaseException as exc:  # a task, a policy or the link failed
            result.exit_status = "fail"
            result.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        finally:
            result.safe = self._make_safe(recording or backend)
            if recording is not None:
                recording.recorder.close(result.exit_status, result.error)
            try:
                backend.close()
            except Exception as exc:  # the link may be gone; the server's watchdog acts
                print(f"emauto daemon: closing the backend failed: {exc}", file=sys.stderr)
            self.result = result
            self._finish(result)
        return result

    def _finish(self, result: RunResult) -> None:
        if result.exit_status == "fail" or not result.safe:
            self.machine.to(State.TRIPPED, result.error or "could not make the microscope safe")
        elif self.machine.state == State.PAUSED:  # paused after the last command
            self.machine.to(State.ABORTING, "plan ended while paused")
            self.machine.to(State.IDLE, "done")
        else:
            self.machine.to(State.IDLE, result.exit_status)

    @staticmethod
    def _make_safe(microscope: Microscope) -> bool:
        try:
            microscope.safe()
            return True
        except Exception as exc:
            print(f"emauto daemon: making the microscope safe failed: {exc}", file=sys.stderr)
            return False

    def _metadata(self) -> dict[str, Any]:
        policies = [
            policy_version(task) for task in self.config.plan if isinstance(task, AlignProbeTask)
        ]
        return {
            "uri": self.config.microscope,
            "plan": self.config.model_dump(mode="json")["plan"],  # with each task's seed
            "policies": policies,
        }

    # ------------------------------------------------------------------ tasks

    def _run_task(self, task: AlignProbeTask | SurveyTask, scope: Microscope) -> dict[str, Any]:
        if isinstance(task, AlignProbeTask):
            return self._align(task, scope)
        return self._survey(task, scope)

    def _align(self, task: AlignProbeTask, scope: Microscope) -> dict[str, Any]:
        from emauto.tasks.probe_tuning.env import ProbeTuningEnv
        from emauto.tasks.probe_tuning.policies.base import CountingMicroscope, run_episode
        from emauto.tasks.probe_tuning.policies.registry import make_policy

        counter = CountingMicroscope(scope)
        config = task.env.model_copy(update={"max_steps": task.max_acquisitions})
        env = ProbeTuningEnv(counter, config)
        policy = make_policy(task.policy, env, seed=task.seed, policy_path=task.policy_path)
        recorder = self._recorder
        assert recorder is not None
        options = None if task.detune else {"offsets": dict.fromkeys(env.reference, 0.0)}
        self._done = (0, task.max_acquisitions)
        bar = tqdm(
            total=task.max_acquisitions,
            desc=f"{task.name} ({task.policy})",
            unit="frame",
            file=sys.stderr,
            disable=not self.progress,
        )

        def on_step(
            action: np.ndarray, reward: float, terminated: bool, truncated: bool, info: Any
        ) -> None:
            recorder.record_episode_step(action, reward, terminated, truncated, info["strehl"])
            self._done = (counter.acquisitions, task.max_acquisitions)
            bar.update(counter.acquisitions - bar.n)
            bar.set_postfix(strehl=f"{info['strehl']:.2f}")

        try:
            result = run_episode(
                env,
                policy,
                seed=task.seed,
                counter=counter,
                max_acquisitions=task.max_acquisitions,
                on_step=on_step,
                options=options,
            )
        finally:
            bar.close()
            close = getattr(policy, "close", None)  # e.g. the simplex's ask/tell thread
            if callable(close):
                close()
        return {
            "task": task.name,
            "kind": task.kind,
            "policy": task.policy,
            "success": result.success,
            "acquisitions": result.acquisitions,
            "acquisitions_to_success": result.acquisitions_to_success,
            "start_strehl": result.strehl_path[0],
            "final_strehl": result.final_strehl,
            "dose_e": result.dose_e,
            "wall_s": round(result.wall_s, 3),
        }

    def _survey(self, task: SurveyTask, scope: Microscope) -> dict[str, Any]:
        self._done = (0, 1)
        scope.set({"scan_fov": task.fov_m, "scan_dwell": task.dwell_s})
        frame = scope.acquire(
            ImageRequest(detector=task.detector, scan=RasterScan(shape=task.shape))
        )
        self._done = (1, 1)
        return {
            "task": task.name,
            "kind": task.kind,
            "shape": list(frame.data.shape),
            "dose_e": frame.dose_e,
            "duration_s": frame.duration_s,
        }


def run_daemon(config: DaemonConfig, *, session: str | Path | None = None) -> RunResult:
    """Run the daemon with its control socket until the plan ends."""
    from emauto.agent.control import ControlServer

    daemon = Daemon(config, session=session)
    control = ControlServer(config.control, daemon.handle)
    worker_result: list[RunResult] = []
    worker_error: list[BaseException] = []

    finished = threading.Event()

    def work() -> None:
        try:
            worker_result.append(daemon.run())
        except BaseException as exc:  # connect failed: nothing was touched
            worker_error.append(exc)
        finally:
            finished.set()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)  # a service stop: abort, end safe
    worker = threading.Thread(target=work, name="emauto-daemon")
    worker.start()
    try:
        # an Event, not Thread.join: an interrupted join can mark a live thread as ended
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: abort, and let the worker end safe
        if daemon.machine.state in (State.RUNNING, State.PAUSED):
            daemon.handle("abort")
        while not finished.wait(0.2):
            pass
    finally:
        control.close()
    worker.join()
    if worker_error:
        raise worker_error[0]
    return worker_result[0]
