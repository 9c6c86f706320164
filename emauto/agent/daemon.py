"""`emauto daemon`: plans of tasks on any microscope, recorded, controllable, safe.

The daemon lives beside the microscope (`serve_daemon`): plans are queued (the config's plan
at start, `emauto ctl submit FILE`, the web console) and run one at a time, each into its own
session folder (`emauto.sessions`). ``--once`` (`run_daemon`) runs the config's plan and
exits. The control socket (`emauto.agent.control`) and the console (`emauto.agent.console`)
answer ``status``, ``pause``, ``resume``, ``abort``, ``reset``, ``submit`` and ``answer``.

Every microscope command passes a checkpoint first (`CheckpointedMicroscope`): a pause
blanks the beam and waits there, an abort ends the plan at once. Whatever ends a plan (done,
aborted, an exception in a task or policy, a lost link) the ``finally`` path makes the
microscope safe (beam blanked, motion stopped) and writes the session's stop document; a
plan that ends in an error leaves the daemon ``tripped``, and no queued plan starts until an
operator resets it.

On ``tcp://`` and ``ipc://`` a `LinkMonitor` sends the heartbeats and trips the daemon within
``link_timeout_s`` (<= 2 s) of a lost link; the command in flight then ends at its own
deadline. A lost link cannot be made safe from this side: the server's watchdog does that
when the heartbeats stop (`emauto.wrappers.safety`).

Hand-off (`needs_operator`): when a task ends in a way the agent cannot judge (a policy's
stop that says it needs the operator, a stop not declared aligned, two refused measurements)
the daemon blanks the beam, pauses and asks the operator (approve, take over, abort); the
question and the answer are events of the session's ``operator`` stream.

Operator labels (`Daemon.label`, ``handle("label", ...)``, sent by ``emauto ctl label``
and by a click on the console's picture): a labelled patch joins the support set of the
running few-shot classifier at once (`emauto.models.labels.OnlineLabels`, kept in
``sessions/labels.npz``) and is written into the running plan's session (the next plan's
when none runs) as an ``operator`` event of kind ``label``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emauto.agent.live import LiveMicroscope, LiveState
from emauto.agent.plans import DaemonConfig, PlanRequest, Task
from emauto.agent.state import CHOICES, State, StateMachine
from emauto.errors import AbortedError, AgentStateError, ConfigError, LabelError
from emauto.microscope import Microscope
from emauto.models.labels import OnlineLabels, frame_label_payload
from emauto.sessions.recorder import ExitStatus, SessionRecorder
from emauto.tasks.steps import StepContext
from emauto.units import validate_model
from emauto.wrappers.checkpointed import CheckpointedMicroscope
from emauto.wrappers.recording import RecordingMicroscope

log = logging.getLogger("emauto.agent")

#: Refused measurements (in a row) after which a task needs the operator.
REFUSALS_FOR_OPERATOR = 2
#: Plans kept in ``status()["history"]``; plans that may wait in the queue.
HISTORY = 50
MAX_QUEUE = 100


@dataclass
class RunResult:
    """What one plan did."""

    exit_status: ExitStatus
    session: Path
    tasks: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    safe: bool = False
    plan_id: int = 0
    name: str = "plan"


@dataclass
class QueuedPlan:
    """A plan waiting in (or taken from) the daemon's queue."""

    id: int
    name: str
    tasks: tuple[Task, ...]
    source: str
    session: Path
    submitted: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        """JSON for ``status``."""
        return {
            "id": self.id,
            "name": self.name,
            "tasks": [f"{t.name} ({t.kind})" for t in self.tasks],
            "source": self.source,
            "session": str(self.session),
            "submitted": self.submitted,
        }


class TakenOverError(AbortedError):
    """The operator took the microscope over at a hand-off: the plan ends here."""


def needs_operator(outcome: Mapping[str, Any]) -> str | None:
    """Why a finished task needs the operator, or None.

    A task's outcome may say so itself (``needs_operator``: True or a reason, from the
    policy's stop decision). Until every policy says it, a probe alignment that the policy
    stopped without declaring the probe aligned, or that had `REFUSALS_FOR_OPERATOR`
    measurements refused, needs the operator.
    """
    flag = outcome.get("needs_operator")
    if isinstance(flag, str) and flag:
        return flag
    if flag is True:
        return str(outcome.get("reason") or "the policy asks for the operator")
    if outcome.get("kind") != "align_probe":
        return None
    refused = outcome.get("refused")
    if isinstance(refused, int) and refused >= REFUSALS_FOR_OPERATOR:
        return f"{refused} measurements refused"
    if outcome.get("ended_by") == "policy" and not outcome.get("declared_aligned"):
        return "the policy stopped without declaring the probe aligned"
    return None


class Daemon:
    """Run plans one at a time; `handle` takes control commands meanwhile (any thread)."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        session: str | Path | None = None,
        progress: bool = True,
        live: LiveState | None = None,
    ) -> None:
        self.config = config
        self.session = Path(session) if session else self._session_path(0)
        self.machine = StateMachine()
        self.progress = progress
        self.live = live or LiveState()
        self.result: RunResult | None = None
        self.console_url: str | None = None
        self._task: tuple[int, str] = (-1, "")
        self._done = (0, 0)
        self._recorder: SessionRecorder | None = None
        self._lock = threading.Condition()
        self._queue: deque[QueuedPlan] = deque()
        self._next_id = 1
        self.current: QueuedPlan | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.link: dict[str, Any] = {"state": "none"}
        self.question: dict[str, Any] | None = None
        self._answer: str | None = None
        self._questions = 0
        self._shutdown = threading.Event()
        self.labels = OnlineLabels(self.config.sessions / "labels.npz")
        self._label_lock = threading.Lock()
        self._unrecorded_labels: deque[dict[str, Any]] = deque()

    def _session_path(self, plan_id: int) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        suffix = f"-p{plan_id}" if plan_id else ""
        return self.config.sessions / f"session-{stamp}{suffix}"

    # ------------------------------------------------------------------ control

    def status(self) -> dict[str, Any]:
        """The state, the plan and task, progress, queue, link, question and session."""
        index, name = self._task
        current = self.current
        tasks = len(current.tasks) if current is not None else len(self.config.plan)
        status: dict[str, Any] = {
            "state": self.machine.state.value,
            "reason": self.machine.history[-1][2] if self.machine.history else "",
            "task_index": index,
            "task": name,
            "tasks": tasks,
            "progress": {"done": self._done[0], "total": self._done[1]},
            "session": str(current.session if current is not None else self.session),
            "plan": current.summary() if current is not None else None,
            "queue": [p.summary() for p in list(self._queue)],
            "history": list(self.history)[-10:],
            "link": dict(self.link),
            "question": dict(self.question) if self.question else None,
            "console": self.console_url,
        }
        if self.result is not None:
            status["exit_status"] = self.result.exit_status
            status["error"] = self.result.error
        return status

    def handle(self, command: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply a control command; the status after it.

        ``status``, ``pause``, ``resume``, ``abort``, ``reset``; ``submit`` with
        ``{"plan": [...], "name": ...}``; ``answer`` with ``{"choice": ...}``; ``shutdown``
        (abort what runs, then stop serving).
        """
        payload = payload or {}
        if command == "pause":
            if self.question is not None:
                raise AgentStateError("the daemon is already paused, asking its operator")
            self.machine.to(State.PAUSED, "pause", only_from=(State.RUNNING,))
            log.info("paused by the operator")
        elif command == "resume":
            if self.question is not None:
                raise AgentStateError(
                    "the daemon waits for an answer to its question (approve, take_over, abort)"
                )
            self.machine.to(State.RUNNING, "resume", only_from=(State.PAUSED,))
            log.info("resumed by the operator")
        elif command == "abort":
            self.machine.to(State.ABORTING, "abort", only_from=(State.RUNNING, State.PAUSED))
            log.info("abort asked by the operator")
        elif command == "reset":
            if self.current is not None and self.machine.state == State.TRIPPED:
                raise AgentStateError(
                    "cannot reset while the tripped plan is still ending (its command in "
                    "flight waits for its deadline); try again in a moment"
                )
            self.machine.to(State.IDLE, "reset", only_from=(State.TRIPPED,))
            self.link = {"state": "none"}
            log.info("reset by the operator")
        elif command == "submit":
            plan = self.submit(payload, source=str(payload.get("source", "ctl")))
            log.info("plan %d (%s) queued", plan.id, plan.name)
        elif command == "answer":
            self.answer(str(payload.get("choice", "")))
        elif command == "label":
            return {**self.status(), "label": self.label(payload)}
        elif command == "shutdown":
            self._shutdown.set()
            if self.machine.state in (State.RUNNING, State.PAUSED):
                self.machine.to(State.ABORTING, "shutdown")
            with self._lock:
                self._lock.notify_all()
        elif command != "status":
            raise AgentStateError(f"unknown command {command!r}")
        return self.status()

    def submit(self, request: Mapping[str, Any], source: str = "ctl") -> QueuedPlan:
        """Validate and queue a plan ``{"name": ..., "plan": [task, ...]}``; `ConfigError`
        names the bad field."""
        body = {k: v for k, v in request.items() if k in ("name", "plan")}
        parsed = validate_model(body, PlanRequest, source="the submitted plan")
        # the daemon's own rules: unique task names, policy folders it lists
        validate_model(
            {**self.config.model_dump(mode="json"), "plan": body.get("plan")},
            DaemonConfig,
            source="the submitted plan",
        )
        with self._lock:
            if len(self._queue) >= MAX_QUEUE:
                raise AgentStateError(f"the queue is full ({MAX_QUEUE} plans)")
            plan_id = self._next_id
            self._next_id += 1
            plan = QueuedPlan(
                plan_id, parsed.name, parsed.plan, source[:32], self._session_path(plan_id)
            )
            self._queue.append(plan)
            self._lock.notify_all()
        return plan

    def answer(self, choice: str) -> None:
        """The operator's answer to the pending question."""
        if choice not in CHOICES:
            raise AgentStateError(f"expected an answer in {list(CHOICES)}, got {choice!r}")
        with self._lock:
            if self.question is None or self._answer is not None:
                raise AgentStateError("no question is waiting for an answer")
            self._answer = choice
            self._lock.notify_all()

    def label(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """An operator's label: ``{"counts": 32x32 raw counts, "electrons_per_pixel",
        "label", "x_m", "y_m"}``, or ``{"label", "x_px", "y_px"}`` for the patch of the latest
        image centred on that pixel (column, row). The few-shot classifier updates now; the
        session records it from the plan's thread (the recorder is not shared between
        threads)."""
        if "counts" not in payload and ("x_px" in payload or "y_px" in payload):
            latest = self.live.latest()
            if latest is None:
                raise LabelError("no image to label yet: acquire one first")
            payload = frame_label_payload(
                latest.frame, payload.get("x_px"), payload.get("y_px"), payload.get("label")
            )
        with self._label_lock:
            entry = self.labels.add_payload(payload)
            self._unrecorded_labels.append(entry)
        log.info("operator label %r (%s)", entry["label"], entry["counts"])
        return entry

    def _record_labels(self) -> None:
        """Write the labels given since the last call into the running session."""
        recorder = self._recorder
        if recorder is None:
            return
        with self._label_lock:
            entries = list(self._unrecorded_labels)
            self._unrecorded_labels.clear()
        for entry in entries:
            where = {k: entry[k] for k in ("x_m", "y_m", "electrons_per_pixel")}
            recorder.record_operator("label", 0, json.dumps(where), entry["label"])

    # ------------------------------------------------------------------ running plans

    def run(self) -> RunResult:
        """Run the config's plan once into ``self.session``; end safe whatever happens."""
        plan = QueuedPlan(0, "plan", tuple(self.config.plan), "config", self.session)
        return self.run_plan(plan)

    def serve(self, *, queue_config_plan: bool = True) -> None:
        """Run queued plans one at a time until `handle('shutdown')` (or `stop`)."""
        if queue_config_plan:
            self.submit(
                {"name": "config", "plan": self.config.model_dump(mode="json")["plan"]},
                source="config",
            )
        while not self._shutdown.is_set():
            with self._lock:
                ready = self._queue and self.machine.state == State.IDLE
                if not ready:
                    self._lock.wait(0.2)
                    continue
                plan = self._queue.popleft()
            try:
                self.run_plan(plan)
            except Exception as exc:  # connect failed: the daemon is tripped, it stays up
                log.error("plan %d could not start: %s", plan.id, exc)

    def stop(self) -> None:
        """Ask `serve` to return (what runs is aborted and ends safe)."""
        self.handle("shutdown")

    def run_plan(self, plan: QueuedPlan) -> RunResult:
        """Connect, record, run every task of ``plan``, and end safe whatever happens."""
        from emauto.drivers import connect

        self.current = plan
        self._task, self._done = (-1, ""), (0, 0)
        self.machine.to(State.RUNNING, f"start plan {plan.id}")
        log.info("plan %d (%s) starts: %s", plan.id, plan.name, plan.session)
        try:
            backend = connect(self.config.microscope)
        except BaseException as exc:
            self.machine.to(State.TRIPPED, f"connect failed: {exc}")
            self.history.append(
                {"id": plan.id, "name": plan.name, "exit_status": "fail", "error": str(exc)}
            )
            self.current = None
            raise
        result = RunResult("fail", plan.session, plan_id=plan.id, name=plan.name)
        recording: RecordingMicroscope | None = None
        monitor = None
        try:
            recording = RecordingMicroscope.open(backend, plan.session, self._metadata(plan))
            self._recorder = recording.recorder
            self.live.new_plan({k: v.unit for k, v in backend.describe().knobs.items()})
            recording.recorder.listeners.append(self.live.episode_listener)
            live = LiveMicroscope(recording, self.live)
            monitor = self._watch_link(backend, live)
            scope = CheckpointedMicroscope(
                live, self.machine.checkpoint, lambda: self.machine.state == State.PAUSED
            )
            for index, task in enumerate(plan.tasks):
                self._task = (index, task.name)
                recording.recorder.task = task.name
                self._record_labels()
                outcome = self._run_task(task, scope)
                result.tasks.append(outcome)
                reason = needs_operator(outcome)
                if reason is not None:
                    outcome["operator"] = self._ask(recording.recorder, scope, task.name, reason)
            result.exit_status = "success"
        except AbortedError as exc:
            tripped = self.machine.state == State.TRIPPED
            result.exit_status = "fail" if tripped else "abort"
            result.error = self.machine.history[-1][2] if tripped else str(exc)
        except BaseException as exc:  # a task, a policy or the link failed
            result.exit_status = "fail"
            result.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        finally:
            if monitor is not None:
                monitor.close()
            result.safe = self._make_safe(recording or backend)
            if recording is not None:
                with contextlib.suppress(Exception):  # the stop document matters more
                    self._record_labels()
                recording.recorder.close(result.exit_status, result.error)
            try:
                backend.close()
            except Exception as exc:  # the link may be gone; the server's watchdog acts
                log.warning("closing the backend failed: %s", exc)
            self.result = result
            self._finish(result)
        return result

    def _finish(self, result: RunResult) -> None:
        state = self.machine.state
        if state == State.TRIPPED:  # the link monitor tripped it already
            pass
        elif result.exit_status == "fail" or not result.safe:
            self.machine.to(State.TRIPPED, result.error or "could not make the microscope safe")
        elif state == State.PAUSED:  # paused after the last command
            self.machine.to(State.ABORTING, "plan ended while paused")
            self.machine.to(State.IDLE, "done")
        else:
            self.machine.to(State.IDLE, result.exit_status)
        self.history.append(
            {
                "id": result.plan_id,
                "name": result.name,
                "exit_status": result.exit_status,
                "error": result.error,
                "safe": result.safe,
                "session": str(result.session),
            }
        )
        log.info(
            "plan %d ended: %s%s",
            result.plan_id,
            result.exit_status,
            f" ({result.error})" if result.error else "",
        )
        self.current = None
        with self._lock:
            self._lock.notify_all()

    def _watch_link(self, backend: Microscope, live: LiveMicroscope) -> Any:
        """A `LinkMonitor` on a ZeroMQ backend (None on others)."""
        from emauto.agent.link import LinkMonitor

        endpoint = getattr(backend, "endpoint", None)
        client = getattr(backend, "client_id", None)
        if not isinstance(endpoint, str) or not isinstance(client, str):
            self.link = {"state": "none"}
            return None
        interval = self.config.heartbeat_s or self.config.link_timeout_s / 4
        settings = getattr(backend, "_settings", {})  # the client's CURVE keys, if any
        self.link = {"state": "up", "endpoint": endpoint}
        return LinkMonitor(
            endpoint,
            client,
            self._link_lost,
            interval_s=interval,
            bound_s=self.config.link_timeout_s,
            busy=live.busy,
            curve=settings.get("curve") if isinstance(settings, dict) else None,
        )

    def _link_lost(self, reason: str) -> None:
        self.link = {**self.link, "state": "lost", "reason": reason, "at": time.time()}
        with contextlib.suppress(AgentStateError):  # the plan ended meanwhile
            self.machine.to(
                State.TRIPPED,
                f"lost link: {reason}",
                only_from=(State.RUNNING, State.PAUSED, State.ABORTING),
            )
        with self._lock:
            self._lock.notify_all()

    @staticmethod
    def _make_safe(microscope: Microscope) -> bool:
        try:
            microscope.safe()
            return True
        except Exception as exc:
            log.error("making the microscope safe failed: %s", exc)
            print(f"emauto daemon: making the microscope safe failed: {exc}", file=sys.stderr)
            return False

    def _metadata(self, plan: QueuedPlan) -> dict[str, Any]:
        config = self.config.model_copy(update={"plan": plan.tasks})
        return {
            "uri": self.config.microscope,
            "plan": config.model_dump(mode="json")["plan"],  # with each task's seed
            "plan_name": plan.name,
            "plan_id": plan.id,
            "policies": config.provenance(),
        }

    # ------------------------------------------------------------------ hand-off

    def _ask(self, recorder: SessionRecorder, scope: Microscope, task: str, reason: str) -> str:
        """Blank the beam, pause, ask the operator; record both; act on the answer."""
        if self.machine.state in (State.ABORTING, State.TRIPPED):  # nothing left to ask
            raise AbortedError(f"the plan ends ({self.machine.state.value}) before its hand-off")
        with self._lock:
            self._questions += 1
            question_id = self._questions
            self._answer = None
        text = f"{task}: {reason}. Approve and go on, take the microscope over, or abort?"
        recorder.record_operator("question", question_id, text)
        scope.safe()
        if self.machine.state != State.PAUSED:  # (the operator may have paused just now)
            self.machine.to(State.PAUSED, f"hand-off: {reason}", only_from=(State.RUNNING,))
        self.question = {
            "id": question_id,
            "task": task,
            "text": text,
            "choices": list(CHOICES),
            "asked": time.time(),
        }
        log.warning("hand-off %d: %s", question_id, text)
        timeout = self.config.handoff_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        who = "operator"
        with self._lock:
            while self._answer is None:
                state = self.machine.state
                if state == State.ABORTING:
                    self._answer = "abort"
                elif state == State.TRIPPED:
                    break
                elif deadline is not None and time.monotonic() > deadline:
                    self._answer, who = "abort", f"daemon (no answer within {timeout:g} s)"
                else:
                    self._lock.wait(0.1)
            choice = self._answer
            self.question = None
        if choice is None:  # tripped while asking (a lost link)
            recorder.record_operator("answer", question_id, "daemon (tripped)", "abort")
            raise AbortedError("the daemon tripped while asking its operator")
        recorder.record_operator("answer", question_id, who, choice)
        log.warning("hand-off %d answered: %s", question_id, choice)
        if choice == "approve":
            self.machine.to(State.RUNNING, "operator approved", only_from=(State.PAUSED,))
            if "beam_blank" in scope.describe().knobs:
                scope.set({"beam_blank": 0.0})
            return choice
        if self.machine.state == State.PAUSED:
            self.machine.to(State.ABORTING, f"operator: {choice}")
        if choice == "take_over":
            raise TakenOverError("the operator took the microscope over")
        raise AbortedError("the operator aborted at the hand-off")

    # ------------------------------------------------------------------ tasks

    def _run_task(self, task: Task, scope: Microscope) -> dict[str, Any]:
        recorder = self._recorder
        assert recorder is not None

        def report(done: int, total: int) -> None:
            self._done = (done, total)
            self._record_labels()

        log.info("task %s (%s) starts", task.name, task.kind)
        context = StepContext(recorder, self.progress, report, self.config.policy_folders)
        return task.run(scope, context)


# ---------------------------------------------------------------------- entry points


class _Services:
    """The control socket, the console and the log handler of a running daemon."""

    def __init__(self, daemon: Daemon, *, on_console: Any = None) -> None:
        from emauto.agent.control import ControlServer
        from emauto.agent.live import LiveLogHandler

        self.handler = LiveLogHandler(daemon.live)
        self.handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        emauto_log = logging.getLogger("emauto")
        emauto_log.addHandler(self.handler)
        if emauto_log.level == logging.NOTSET or emauto_log.level > logging.INFO:
            emauto_log.setLevel(logging.INFO)
        self.console = None
        self.control = ControlServer(daemon.config.control, daemon.handle)
        try:
            if daemon.config.console.enabled:
                from emauto.agent.console import ConsoleServer

                self.console = ConsoleServer(daemon)
                daemon.console_url = self.console.url
                print(f"emauto daemon: console on {self.console.url}", file=sys.stderr, flush=True)
                if on_console is not None:
                    on_console(self.console.url)
        except BaseException:
            self.control.close()
            logging.getLogger("emauto").removeHandler(self.handler)
            raise

    def close(self) -> None:
        if self.console is not None:
            self.console.close()
        self.control.close()
        logging.getLogger("emauto").removeHandler(self.handler)


def _run_in_worker(daemon: Daemon, work: Any) -> Any:
    """Run ``work()`` in a worker thread; Ctrl-C or SIGTERM aborts and lets it end safe."""
    results: list[Any] = []
    errors: list[BaseException] = []
    finished = threading.Event()

    def target() -> None:
        try:
            results.append(work())
        except BaseException as exc:  # connect failed: nothing was touched
            errors.append(exc)
        finally:
            finished.set()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)  # a service stop: abort, end safe
    worker = threading.Thread(target=target, name="emauto-daemon")
    worker.start()
    try:
        # an Event, not Thread.join: an interrupted join can mark a live thread as ended
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: abort, and let the worker end safe
        daemon.handle("shutdown")
        while not finished.wait(0.2):
            pass
    worker.join()
    if errors:
        raise errors[0]
    return results[0] if results else None


def run_daemon(
    config: DaemonConfig, *, session: str | Path | None = None, on_console: Any = None
) -> RunResult:
    """``--once``: the control socket and console up, the config's plan run, then exit.

    ``on_console(url)`` is told the console's address once it listens.
    """
    daemon = Daemon(config, session=session)
    services = _Services(daemon, on_console=on_console)
    try:
        result: RunResult = _run_in_worker(daemon, daemon.run)
    finally:
        services.close()
    return result


def serve_daemon(
    config: DaemonConfig, *, queue_config_plan: bool = True, on_console: Any = None
) -> Daemon:
    """The long-running daemon: serve queued plans until ``ctl shutdown``, Ctrl-C or SIGTERM."""
    daemon = Daemon(config)
    services = _Services(daemon, on_console=on_console)
    try:
        _run_in_worker(daemon, lambda: daemon.serve(queue_config_plan=queue_config_plan))
    finally:
        services.close()
    return daemon


def plan_from_file(path: str | Path) -> dict[str, Any]:
    """A plan file (YAML or JSON: ``{name: ..., plan: [task, ...]}`` or just the list of
    tasks) as a submit payload; `ConfigError` when it is not one."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the plan file {path}: {exc}") from exc
    if isinstance(data, list):
        data = {"name": Path(path).stem[:64] or "plan", "plan": data}
    if not isinstance(data, dict) or "plan" not in data:
        raise ConfigError(f"{path}: expected a mapping with 'plan: [task, ...]' or a list of tasks")
    unknown = sorted(str(k) for k in set(data) - {"name", "plan"})
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; a plan file has 'name' and 'plan'")
    data.setdefault("name", Path(path).stem[:64] or "plan")
    return data


def queued(tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """Tasks as JSON for a submit payload."""
    return [task.model_dump(mode="json") for task in tasks]
