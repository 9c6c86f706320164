"""The daemon's state machine: idle, running, paused, aborting, tripped.

::

    idle ──start──► running ──pause──► paused
      ▲               │  ▲               │
      │ done          │  └───resume──────┘
      │               ▼                  ▼
      ├──────────── aborting ◄──abort────┘   (abort also from running)
      │
    tripped ◄── a safety trip, a lost link or a crashed task, from any busy state
      │
      └──reset (operator)──► idle

The worker thread calls `checkpoint` before every microscope command: it blocks while the
daemon is paused and raises `AbortedError` once an abort was asked for.
"""

from __future__ import annotations

import threading
from enum import StrEnum

from emauto.errors import AbortedError, AgentStateError

#: What the operator may answer when the daemon hands over (`emauto.agent.daemon`).
CHOICES: tuple[str, ...] = ("approve", "take_over", "abort")


class State(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    TRIPPED = "tripped"


#: Allowed transitions: from state -> the states it may go to.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.RUNNING}),
    State.RUNNING: frozenset({State.PAUSED, State.ABORTING, State.IDLE, State.TRIPPED}),
    State.PAUSED: frozenset({State.RUNNING, State.ABORTING, State.TRIPPED}),
    State.ABORTING: frozenset({State.IDLE, State.TRIPPED}),
    State.TRIPPED: frozenset({State.IDLE}),
}


class StateMachine:
    """Thread-safe state with the transitions above; every change is kept in ``history``."""

    def __init__(self) -> None:
        self._state = State.IDLE
        self._changed = threading.Condition()
        self.history: list[tuple[State, State, str]] = []

    @property
    def state(self) -> State:
        return self._state

    def to(self, target: State, reason: str = "", *, only_from: tuple[State, ...] = ()) -> None:
        """Move to ``target``; `AgentStateError` if that transition is not allowed (or, with
        ``only_from``, if the current state is not one of those)."""
        with self._changed:
            if only_from and self._state not in only_from:
                raise AgentStateError(
                    f"cannot {reason or 'do that'} while {self._state.value}; only while "
                    f"{' or '.join(s.value for s in only_from)}"
                )
            if target not in TRANSITIONS[self._state]:
                allowed = sorted(s.value for s in TRANSITIONS[self._state])
                raise AgentStateError(
                    f"cannot go from {self._state.value} to {target.value}; "
                    f"from {self._state.value} the daemon may go to {allowed}"
                )
            self.history.append((self._state, target, reason))
            self._state = target
            self._changed.notify_all()

    def checkpoint(self) -> None:
        """Block while paused; raise `AbortedError` when aborting or tripped (a lost link
        trips the daemon from another thread; called by the worker)."""
        with self._changed:
            while self._state == State.PAUSED:
                self._changed.wait(0.1)
            if self._state == State.ABORTING:
                raise AbortedError("the operator aborted the plan")
            if self._state == State.TRIPPED:
                reason = self.history[-1][2] if self.history else "tripped"
                raise AbortedError(f"the daemon tripped: {reason}")

    def wait_for(self, *states: State, timeout_s: float | None = None) -> bool:
        """Wait until the state is one of ``states``; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._state in states, timeout_s)
