"""The wrapper base: explicit forwarding of the contract, `unwrapped`, no pass-through, and
the twin-only `GroundTruth` / `Restartable` protocols."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import emauto
from emauto.bench.driver import StaticMicroscope
from emauto.drivers.replay import ReplayMicroscope, ReplayTwin
from emauto.drivers.sim import SimulatedMicroscope
from emauto.drivers.zmq.client import RemoteMicroscope, RemoteTwin
from emauto.microscope import (
    GroundTruth,
    ImageRequest,
    Microscope,
    Restartable,
    RonchigramRequest,
)
from emauto.wrappers.base import MicroscopeWrapper, unwrap
from emauto.wrappers.checkpointed import CheckpointedMicroscope
from emauto.wrappers.counting import CountingMicroscope
from emauto.wrappers.recording import RecordingMicroscope
from emauto.wrappers.safety import SafeMicroscope, SafetyConfig

#: The contract's methods, read from the protocol itself.
CONTRACT = sorted(
    name
    for name, member in vars(Microscope).items()
    if inspect.isfunction(member) and not name.startswith("_")
)
WRAPPERS = [
    MicroscopeWrapper,
    SafeMicroscope,
    RecordingMicroscope,
    CountingMicroscope,
    CheckpointedMicroscope,
]


class Spy:
    """A backend that notes each contract call and returns a sentinel for it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.extra = "not in the contract"

    def _note(self, name: str, *args: Any) -> object:
        self.calls.append((name, args))
        return f"{name} result"

    def describe(self) -> Any:
        return self._note("describe")

    def read(self) -> Any:
        return self._note("read")

    def set(self, setpoints: Mapping[str, float]) -> Any:
        return self._note("set", setpoints)

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Any:
        return self._note("acquire", request)

    def safe(self) -> None:
        self._note("safe")

    def close(self) -> None:
        self._note("close")


@pytest.fixture
def twin(tiny_carbon: Path, specimen_cache: Path) -> SimulatedMicroscope:
    scope = emauto.connect(f"sim://?specimen={tiny_carbon}&fidelity=fast", cache_dir=specimen_cache)
    assert isinstance(scope, SimulatedMicroscope)
    return scope


def test_the_contract_is_the_six_methods() -> None:
    assert CONTRACT == ["acquire", "close", "describe", "read", "safe", "set"]


@pytest.mark.parametrize("cls", WRAPPERS, ids=lambda c: c.__name__)
def test_every_wrapper_defines_the_contract_and_no_pass_through(cls: type) -> None:
    assert issubclass(cls, MicroscopeWrapper)
    for name in CONTRACT:
        assert inspect.isfunction(inspect.getattr_static(cls, name)), name
    assert not hasattr(cls, "__getattr__")
    assert cls.__getattribute__ is object.__getattribute__


ARGUMENTS: dict[str, tuple[Any, ...]] = {
    "describe": (),
    "read": (),
    "set": ({"C10": 2e-9},),
    "acquire": (RonchigramRequest(exposure_s=1e-3),),
    "safe": (),
    "close": (),
}


@pytest.mark.parametrize("name", CONTRACT)
def test_the_base_forwards_each_contract_method_unchanged(name: str) -> None:
    spy = Spy()
    scope = MicroscopeWrapper(spy)  # type: ignore[arg-type]
    args = ARGUMENTS[name]
    result = getattr(scope, name)(*args)
    assert spy.calls == [(name, args)] and all(
        a is b for a, b in zip(spy.calls[0][1], args, strict=True)
    )  # once, with the very objects
    assert result == (None if name in ("safe", "close") else f"{name} result")


def test_the_base_is_a_microscope_and_a_context_manager() -> None:
    spy = Spy()
    with MicroscopeWrapper(spy) as scope:  # type: ignore[arg-type]
        assert isinstance(scope, Microscope) and scope.microscope is spy
    assert spy.calls == [("close", ())]


def test_a_plain_attribute_is_not_passed_through() -> None:
    spy = Spy()
    scope = CountingMicroscope(spy)  # type: ignore[arg-type]
    assert spy.extra and not hasattr(scope, "extra")
    with pytest.raises(AttributeError):
        scope.extra  # type: ignore[attr-defined]  # noqa: B018
    assert scope.unwrapped.extra == spy.extra  # type: ignore[attr-defined]


class Closing(StaticMicroscope):
    """The static microscope, noting whether it was closed."""

    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


def test_unwrapped_follows_a_stack_of_wrappers(tmp_path: Path) -> None:
    backend = Closing((16, 16))
    safe = SafeMicroscope(backend, SafetyConfig())
    recording = RecordingMicroscope.open(safe, tmp_path / "s")
    checkpointed = CheckpointedMicroscope(recording, lambda: None, lambda: False)
    counter = CountingMicroscope(checkpointed)
    for wrapper in (safe, recording, checkpointed, counter):
        assert wrapper.unwrapped is backend and unwrap(wrapper) is backend
    assert counter.microscope is checkpointed and checkpointed.microscope is recording
    assert unwrap(backend) is backend
    assert repr(counter).startswith("<CountingMicroscope<CheckpointedMicroscope<")
    frame = counter.acquire(RonchigramRequest(exposure_s=1e-3))  # through every layer
    assert counter.acquisitions == 1 and counter.dose_e == frame.dose_e
    assert recording.recorder.steps == 1 and safe.dose_used_e == frame.dose_e
    counter.close()
    assert recording.recorder.closed and backend.closed


def test_ground_truth_is_a_twins(twin: SimulatedMicroscope) -> None:
    assert isinstance(twin, GroundTruth) and isinstance(twin, Restartable)
    assert 0.0 <= twin.strehl_ratio() <= 1.0
    assert set(twin.true_aberrations().to_dict()) >= {"C10", "C12a", "C12b"}
    assert not isinstance(StaticMicroscope(), GroundTruth)
    assert not isinstance(StaticMicroscope(), Restartable)
    wrapped = CountingMicroscope(SafeMicroscope(twin, SafetyConfig()))
    assert not isinstance(wrapped, GroundTruth)  # a wrapper has no truth of its own
    assert isinstance(unwrap(wrapped), GroundTruth)  # ... the twin below it has
    wrapped.close()


def test_twins_over_the_wire_and_replayed_have_truth_but_do_not_restart() -> None:
    assert issubclass(RemoteTwin, GroundTruth) and not issubclass(RemoteTwin, Restartable)
    assert issubclass(ReplayTwin, GroundTruth) and not issubclass(ReplayTwin, Restartable)
    assert not issubclass(RemoteMicroscope, GroundTruth)
    assert not issubclass(ReplayMicroscope, GroundTruth)
