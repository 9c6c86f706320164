"""The daemon's state machine."""

from __future__ import annotations

import threading
import time

import pytest

from emauto.agent.state import TRANSITIONS, State, StateMachine
from emauto.errors import AbortedError, AgentStateError


def test_every_state_has_its_transitions_and_others_are_refused() -> None:
    for source, targets in TRANSITIONS.items():
        for target in State:
            machine = StateMachine()
            machine._state = source
            if target in targets:
                machine.to(target)
                assert machine.state == target
            else:
                with pytest.raises(AgentStateError, match=f"cannot go from {source.value}"):
                    machine.to(target)
                assert machine.state == source


def test_checkpoint_blocks_while_paused_and_raises_on_abort() -> None:
    machine = StateMachine()
    machine.to(State.RUNNING)
    machine.checkpoint()  # running: passes
    machine.to(State.PAUSED)
    passed = threading.Event()

    def worker() -> None:
        machine.checkpoint()
        passed.set()

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.3)
    assert not passed.is_set()
    machine.to(State.RUNNING)
    thread.join(2)
    assert passed.is_set()
    machine.to(State.ABORTING)
    with pytest.raises(AbortedError):
        machine.checkpoint()
    assert [t.value for _, t, _ in machine.history] == ["running", "paused", "running", "aborting"]
