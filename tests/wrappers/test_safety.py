"""The safety layer: soft limits, step and rate, dose budget, readback, watchdog, audit."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pytest

from emauto.bench.driver import StaticMicroscope
from emauto.errors import (
    ConfigError,
    DoseBudgetError,
    NonFiniteSetpointError,
    OutOfLimitsError,
    RateLimitError,
    ReadbackError,
    StepTooLargeError,
    WatchdogTrippedError,
)
from emauto.microscope import Microscope, MicroscopeState, RonchigramRequest
from emauto.wrappers.audit import AuditLog
from emauto.wrappers.safety import KnobSafety, SafeMicroscope, SafetyConfig, estimate_dose_e


class Clock:
    """A clock the test moves by hand, s."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingBackend(StaticMicroscope):
    """Counts the commands that reach the backend."""

    def __init__(self) -> None:
        super().__init__(shape=(16, 16))
        self.sets = 0
        self.safes = 0

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        self.sets += 1
        return super().set(setpoints)

    def safe(self) -> None:
        self.safes += 1
        super().safe()


class StuckLens(CountingBackend):
    """A lens that never reaches its setpoint: C10 reads back 0."""

    def read(self) -> MicroscopeState:
        state = super().read()
        return state.model_copy(update={"knobs": {**state.knobs, "C10": 0.0}})


def make(
    config: SafetyConfig | None = None, backend: CountingBackend | None = None
) -> tuple[SafeMicroscope, CountingBackend, Clock]:
    clock = Clock()
    backend = backend or CountingBackend()
    return SafeMicroscope(backend, config or SafetyConfig(), clock=clock), backend, clock


def test_is_a_microscope_and_narrows_the_description() -> None:
    config = SafetyConfig(knobs={"C10": KnobSafety(lower=-1e-6, upper=2e-6, max_step=0.5e-6)})
    scope, _, _ = make(config)
    assert isinstance(scope, Microscope)
    spec = scope.describe().knobs["C10"]
    assert (spec.lower, spec.upper, spec.max_step) == (-1e-6, 2e-6, 0.5e-6)
    assert scope.describe().knobs["C12a"] == scope.microscope.describe().knobs["C12a"]


def test_soft_limits_reject_and_never_clip() -> None:
    config = SafetyConfig(knobs={"C10": KnobSafety(lower=-1e-6, upper=1e-6)})
    scope, backend, _ = make(config)
    with pytest.raises(OutOfLimitsError, match=r"outside the limits \[-1e-06, 1e-06\]"):
        scope.set({"C10": 1.5e-6})
    assert backend.sets == 0 and scope.read().knobs["C10"] == 0.0
    scope.set({"C10": 1e-6})
    assert scope.read().knobs["C10"] == 1e-6


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_never_reaches_the_backend(value: float) -> None:
    scope, backend, _ = make()
    with pytest.raises(NonFiniteSetpointError):
        scope.set({"C10": value})
    assert backend.sets == 0


def test_max_step() -> None:
    scope, backend, _ = make(SafetyConfig(knobs={"C12a": KnobSafety(max_step=1e-7)}))
    with pytest.raises(StepTooLargeError, match="exceeds the maximum step 1e-07 m"):
        scope.set({"C12a": 2e-7})
    scope.set({"C12a": 1e-7})
    scope.set({"C12a": 2e-7})
    assert backend.sets == 2


def test_max_rate() -> None:
    scope, _, clock = make(SafetyConfig(knobs={"C10": KnobSafety(max_rate_per_s=1e-6)}))
    scope.set({"C10": 1e-6})  # the first change has no reference time
    clock.now += 0.5
    with pytest.raises(RateLimitError, match="maximum rate"):
        scope.set({"C10": 2e-6})
    clock.now += 0.6
    scope.set({"C10": 2e-6})
    assert scope.read().knobs["C10"] == 2e-6


def test_dose_budget() -> None:
    scope, _, _ = make()
    request = RonchigramRequest(exposure_s=1e-3)
    one = estimate_dose_e(request, scope.describe().beam_current_A, 0.0)
    scope.set_limits(SafetyConfig(dose_budget_e=2.5 * one))
    scope.set({"beam_blank": 0.0})
    scope.acquire(request)
    scope.acquire(request)
    with pytest.raises(DoseBudgetError, match="dose budget"):
        scope.acquire(request)
    assert scope.dose_used_e == pytest.approx(2 * one)


def test_readback_failure_goes_safe() -> None:
    config = SafetyConfig(readback_timeout_s=0.05, readback_poll_s=0.01)
    backend = StuckLens()
    clock = Clock()
    scope = SafeMicroscope(backend, config, clock=lambda: clock.now)
    clock.now = 0.0

    def ticking() -> float:
        clock.now += 0.02
        return clock.now

    scope._clock = ticking
    with pytest.raises(ReadbackError, match="C10: set 1e-06, read 0"):
        scope.set({"C10": 1e-6})
    assert backend.safes == 1 and scope.read().beam_blanked


def test_watchdog_trips_to_safe_and_stays_until_reset() -> None:
    scope, backend, clock = make(SafetyConfig(heartbeat_interval_s=1.0, missed_heartbeats=3))
    scope.set({"beam_blank": 0.0})
    clock.now += 2.9
    assert not scope.check_watchdog()
    scope.heartbeat()
    clock.now += 3.1
    assert scope.check_watchdog()
    assert scope.read().beam_blanked and backend.safes == 1
    with pytest.raises(WatchdogTrippedError, match="operator must reset"):
        scope.set({"beam_blank": 0.0})
    with pytest.raises(WatchdogTrippedError):
        scope.acquire(RonchigramRequest(exposure_s=1e-3))
    scope.heartbeat()  # heartbeats alone do not clear a trip
    assert scope.tripped
    scope.reset_watchdog(caller="operator")
    scope.set({"beam_blank": 0.0})
    assert not scope.read().beam_blanked


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown knob"):
        make(SafetyConfig(knobs={"warp_drive": KnobSafety(lower=0, upper=1)}))
    with pytest.raises(ConfigError, match="inside the hardware limits"):
        make(SafetyConfig(knobs={"C10": KnobSafety(lower=-1.0, upper=1.0)}))
    with pytest.raises(ValueError, match="extra"):
        SafetyConfig.model_validate({"dose_budget": 1})
    with pytest.raises(ValueError):
        SafetyConfig.model_validate({"dose_budget_e": math.inf})


def test_audit_log_records_accepted_and_rejected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    scope = SafeMicroscope(CountingBackend(), SafetyConfig(), audit=AuditLog(path))
    scope.set({"C10": 1e-7}, caller="agent-1")
    with pytest.raises(OutOfLimitsError):
        scope.set({"C10": 1.0}, caller="agent-1")
    scope.safe()
    scope.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    outcomes = [(r["command"], r["outcome"]) for r in records]
    assert outcomes[:3] == [("set", "accepted"), ("set", "rejected"), ("safe", "accepted")]
    assert records[0]["caller"] == "agent-1" and records[0]["args"] == {"C10": 1e-7}
    assert records[1]["error"] == "OutOfLimitsError" and "outside" in records[1]["message"]


def test_close_goes_safe() -> None:
    scope, backend, _ = make()
    scope.set({"beam_blank": 0.0})
    scope.close()
    assert backend.safes >= 1 and backend.read().beam_blanked


def test_audit_log_aggregates_a_flood_of_rejects(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, max_rejects_per_s=20, clock=lambda: now[0])
    scope = SafeMicroscope(CountingBackend(), SafetyConfig(), audit=audit)
    for index in range(10_000):  # a flood within one second
        now[0] = index * 1e-4
        with pytest.raises(OutOfLimitsError):
            scope.set({"C10": 1.0}, caller="flood")
    scope.set({"C10": 1e-7}, caller="agent")  # accepted commands are always written
    now[0] = 1.5
    audit.record("read", "accepted")
    scope.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    rejected = [r for r in records if r["outcome"] == "rejected"]
    assert len(rejected) == 20
    summary = [r for r in records if r["command"] == "audit"]
    assert summary[0]["args"]["suppressed"] == 10_000 - 20
    assert summary[0]["args"]["by"] == {"set/OutOfLimitsError": 10_000 - 20}
    assert ("set", "accepted") in [(r["command"], r["outcome"]) for r in records]
    assert path.stat().st_size < 20_000


def test_audit_log_rotates_at_its_size_bound(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, max_bytes=4096, backups=2)
    for index in range(500):
        audit.record("set", "accepted", args={"C10": index * 1e-9})
    audit.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all((tmp_path / name).stat().st_size <= 4096 for name in files)
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["args"]["C10"] == 499e-9


def test_audit_of_a_positions_scan_counts_positions_without_copying_them() -> None:
    import tracemalloc

    import numpy as np

    from emauto.errors import DoseBudgetError
    from emauto.microscope import ImageRequest, PositionsScan

    scope, _, _ = make(SafetyConfig(dose_budget_e=1.0))
    scope.set({"beam_blank": 0.0})
    positions = np.zeros((1_000_000, 2))
    request = ImageRequest(scan=PositionsScan(positions_m=positions), dwell_s=1e-6)
    tracemalloc.start()
    try:
        with pytest.raises(DoseBudgetError):
            scope.acquire(request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB to audit a rejected scan"
    record = scope.audit.records[-1]
    assert record["outcome"] == "rejected"
    assert record["args"]["scan"] == {"mode": "positions", "count": 1_000_000}
