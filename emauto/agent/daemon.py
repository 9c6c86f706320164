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
from pathlib import Path
from typing import Any

from emauto.agent.plans import DaemonConfig, Task
from emauto.agent.state import State, StateMachine
from emauto.errors import AbortedError
from emauto.microscope import (
    Microscope,
)
from emauto.sessions.recorder import ExitStatus, SessionRecorder
from emauto.tasks.steps import StepContext
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
        return {
            "uri": self.config.microscope,
            "plan": self.config.model_dump(mode="json")["plan"],  # with each task's seed
            "policies": self.config.provenance(),
        }

    # ------------------------------------------------------------------ tasks

    def _run_task(self, task: Task, scope: Microscope) -> dict[str, Any]:
        recorder = self._recorder
        assert recorder is not None

        def report(done: int, total: int) -> None:
            self._done = (done, total)

        context = StepContext(recorder, self.progress, report, self.config.policy_folders)
        return task.run(scope, context)


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
