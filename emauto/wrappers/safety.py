"""The safety layer: wraps any Microscope and refuses whatever could harm the instrument.

Enforced for every command, before the backend sees it:

- soft limits, narrower than the hardware's (reject, never clip);
- a maximum single step and a maximum rate (units/s) per knob;
- a cumulative dose budget (electrons) over the session;
- confirmation by readback within a tolerance and a timeout;
- a heartbeat watchdog on the controlling client (the one that last sent ``set`` or
  ``acquire``; before any, the first one heard): after ``missed_heartbeats`` intervals
  without a sign of life from it the backend goes safe (beam blanked, motion stopped) and
  stays tripped until an operator resets it. Other clients' requests do not keep it alive; a
  command in flight does (its start and its end count).

Every accepted or rejected command is written to the audit log.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from emauto.errors import (
    ConfigError,
    DoseBudgetError,
    EmautoError,
    InvalidRequestError,
    OutOfLimitsError,
    RateLimitError,
    ReadbackError,
    StepTooLargeError,
    WatchdogTrippedError,
)
from emauto.microscope import (
    Frame,
    ImageRequest,
    KnobSpec,
    Microscope,
    MicroscopeDescription,
    MicroscopeState,
    PositionsScan,
    RasterScan,
    RonchigramRequest,
    SegmentsScan,
    validate_setpoints,
)
from emauto.units import ELECTRON_CHARGE_C, StrictModel
from emauto.wrappers.audit import AuditLog
from emauto.wrappers.base import MicroscopeWrapper


class KnobSafety(StrictModel):
    """Per-knob safety settings, in the knob's SI unit; ``None`` keeps the backend's value."""

    lower: float | None = None
    upper: float | None = None
    max_step: float | None = Field(default=None, gt=0)
    max_rate_per_s: float | None = Field(default=None, gt=0, description="unit per second")
    readback_tolerance: float | None = Field(default=None, ge=0)


class SafetyConfig(StrictModel):
    """What the safety layer enforces. Times in seconds, dose in electrons."""

    knobs: dict[str, KnobSafety] = Field(default_factory=dict)
    dose_budget_e: float | None = Field(default=None, gt=0, description="None: unlimited")
    readback: bool = True
    readback_timeout_s: float = Field(default=1.0, ge=0)
    readback_poll_s: float = Field(default=0.01, gt=0)
    readback_relative_tolerance: float = Field(
        default=1e-6, ge=0, description="fraction of the knob's range"
    )
    readback_exclude: tuple[str, ...] = Field(
        default=("stage_x", "stage_y"),
        description="knobs that move over time (confirmed by stage_moving instead)",
    )
    heartbeat_interval_s: float | None = Field(default=None, gt=0, description="None: off")
    missed_heartbeats: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> SafetyConfig:
        for name, knob in self.knobs.items():
            if knob.lower is not None and knob.upper is not None and knob.lower >= knob.upper:
                raise ValueError(f"knobs.{name}: lower {knob.lower} must be < upper {knob.upper}")
        return self

    @property
    def watchdog_bound_s(self) -> float | None:
        """Longest silence before the watchdog trips, s (None when it is off)."""
        if self.heartbeat_interval_s is None:
            return None
        return self.heartbeat_interval_s * self.missed_heartbeats


def narrowed_knobs(knobs: Mapping[str, KnobSpec], config: SafetyConfig) -> dict[str, KnobSpec]:
    """The backend's knob table with soft limits and steps applied; raises `ConfigError`
    when a soft limit lies outside the hardware limit or names an unknown knob."""
    unknown = sorted(set(config.knobs) - set(knobs))
    if unknown:
        raise ConfigError(f"safety config names unknown knob(s) {unknown}; have {sorted(knobs)}")
    out: dict[str, KnobSpec] = {}
    for name, spec in knobs.items():
        rule = config.knobs.get(name)
        if rule is None:
            out[name] = spec
            continue
        lower = spec.lower if rule.lower is None else rule.lower
        upper = spec.upper if rule.upper is None else rule.upper
        if lower < spec.lower or upper > spec.upper or lower >= upper:
            raise ConfigError(
                f"knobs.{name}: soft limits [{lower:g}, {upper:g}] must lie inside the "
                f"hardware limits [{spec.lower:g}, {spec.upper:g}] {spec.unit}"
            )
        step = spec.max_step if rule.max_step is None else min(rule.max_step, spec.max_step)
        out[name] = spec.model_copy(update={"lower": lower, "upper": upper, "max_step": step})
    return out


def scan_points(request: ImageRequest) -> int:
    """Probe positions of a scan, from its declared shape (nothing is allocated)."""
    scan = request.scan
    if isinstance(scan, RasterScan):
        return scan.shape[0] * scan.shape[1]
    if isinstance(scan, PositionsScan):
        return len(scan.positions_m)
    assert isinstance(scan, SegmentsScan)
    return sum(s.n_points for s in scan.segments)


def beam_time_s(request: RonchigramRequest | ImageRequest, dwell_s: float) -> float:
    """Beam-on time of an acquisition, s (``dwell_s``: the scan_dwell knob, if unset)."""
    if isinstance(request, RonchigramRequest):
        return request.exposure_s
    count = scan_points(request)
    dwell = request.dwell_s if request.dwell_s is not None else dwell_s
    return dwell * count


def estimate_dose_e(
    request: RonchigramRequest | ImageRequest, current_A: float, dwell_s: float
) -> float:
    """Electrons an acquisition will deliver: current x beam-on time / e."""
    return current_A * beam_time_s(request, dwell_s) / ELECTRON_CHARGE_C


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``None`` deletes, else replace."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strict_config(data: Any) -> SafetyConfig:
    """A `SafetyConfig` from JSON-like ``data`` with strict types; raises `ConfigError`."""
    try:
        return SafetyConfig.model_validate_json(json.dumps(data, allow_nan=False), strict=True)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
        else:
            problems = str(exc)
        raise ConfigError(f"invalid SafetyConfig: {problems}") from exc


def _audit_args(request: Any) -> Any:
    """An acquisition request for the audit log: a positions scan's positions are counted,
    never copied (up to millions of points)."""
    if not isinstance(request, BaseModel):
        return None
    if isinstance(request, ImageRequest) and isinstance(request.scan, PositionsScan):
        args = request.model_dump(mode="json", exclude={"scan"})
        args["scan"] = {"mode": "positions", "count": len(request.scan.positions_m)}
        return args
    return request.model_dump(mode="json")


class SafeMicroscope(MicroscopeWrapper):
    """A Microscope that enforces `SafetyConfig` on ``backend`` (kept as ``microscope``);
    thread-safe. Every contract method is overridden: each passes the checks first.

    ``caller`` and ``role`` keyword arguments name who sent a command, for the audit log.
    """

    def __init__(
        self,
        backend: Microscope,
        config: SafetyConfig | None = None,
        *,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(backend)
        self.config = config or SafetyConfig()
        self.audit = audit or AuditLog()
        self._clock = clock
        self._lock = threading.RLock()
        self._hardware = backend.describe()
        self._description = self._narrow(self.config)
        self._last_change: dict[str, float] = {}
        self._dose_used_e = 0.0
        self._alive: OrderedDict[str, float] = OrderedDict()  # caller -> last sign of life
        self._controller: str | None = None
        self._tripped = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ configuration

    def _narrow(self, config: SafetyConfig) -> MicroscopeDescription:
        knobs = narrowed_knobs(self._hardware.knobs, config)
        return self._hardware.model_copy(update={"knobs": knobs})

    def set_limits(self, config: SafetyConfig, *, caller: str = "local") -> None:
        """Replace the safety configuration (an operator command)."""
        with self._lock:
            try:
                self._description = self._narrow(config)
            except EmautoError as exc:
                self.audit.record("set_limits", "rejected", caller=caller, error=exc)
                raise
            self.config = config
            self.audit.record(
                "set_limits", "accepted", caller=caller, args=config.model_dump(mode="json")
            )

    def update_limits(
        self, patch: Mapping[str, Any], *, replace: bool = False, caller: str = "local"
    ) -> SafetyConfig:
        """Change the safety configuration from a JSON ``patch`` (an operator command).

        By default the patch is merged into the current configuration (RFC 7386 JSON merge
        patch: a field given replaces, an object merges field by field, ``null`` restores the
        default), so a file holding only knob limits keeps the heartbeat and the dose budget.
        ``replace=True`` installs ``patch`` as the whole configuration and refuses one that
        does not name every field. Types are strict (``true`` is not a number). Raises
        `ConfigError`; nothing changes then."""
        with self._lock:
            try:
                if not isinstance(patch, Mapping):
                    raise ConfigError(f"set_limits: expected an object, got {type(patch).__name__}")
                if replace:
                    missing = sorted(set(SafetyConfig.model_fields) - set(patch))
                    if missing:
                        raise ConfigError(
                            f"set_limits --replace: the configuration is incomplete, missing "
                            f"{missing}; send every field or merge (the default) instead"
                        )
                    merged: Any = dict(patch)
                else:
                    merged = merge_patch(self.config.model_dump(mode="json"), patch)
                config = strict_config(merged)
            except EmautoError as exc:
                self.audit.record("set_limits", "rejected", caller=caller, args=patch, error=exc)
                raise
            self.set_limits(config, caller=caller)
            return config

    # ------------------------------------------------------------------ status

    @property
    def tripped(self) -> bool:
        """True while the watchdog holds the microscope safe."""
        return self._tripped

    @property
    def dose_used_e(self) -> float:
        """Electrons delivered through this layer since it started."""
        return self._dose_used_e

    def status(self) -> dict[str, Any]:
        """Watchdog, dose budget and limits, for operators."""
        with self._lock:
            return {
                "tripped": self._tripped,
                "dose_used_e": self._dose_used_e,
                "dose_budget_e": self.config.dose_budget_e,
                "heartbeat_interval_s": self.config.heartbeat_interval_s,
                "missed_heartbeats": self.config.missed_heartbeats,
                "controller": self._controller,
                "since_heartbeat_s": self._silence(),
                "config": self.config.model_dump(mode="json"),
            }

    # ------------------------------------------------------------------ watchdog

    def heartbeat(self, *, caller: str = "local") -> None:
        """``caller`` is alive; the first caller heard arms the watchdog (until a command
        makes its sender the controller)."""
        with self._lock:
            self._touch(caller)
            if self._controller is None:
                self._controller = caller

    def _touch(self, caller: str) -> None:
        """Note a sign of life from ``caller`` (at most 1024 callers are remembered)."""
        self._alive[caller] = self._clock()
        self._alive.move_to_end(caller)
        while len(self._alive) > 1024:
            oldest = next(iter(self._alive))
            if oldest == self._controller:
                self._alive.move_to_end(oldest)
                oldest = next(iter(self._alive))
            del self._alive[oldest]

    def _silence(self) -> float | None:
        """Seconds since the controller's last sign of life (None: not armed)."""
        if self._controller is None:
            return None
        last = self._alive.get(self._controller)
        return None if last is None else self._clock() - last

    def check_watchdog(self) -> bool:
        """Trip the watchdog if the controlling client has been silent too long; True when
        tripped."""
        bound = self.config.watchdog_bound_s
        with self._lock:
            silent = self._silence()
            if self._tripped or bound is None or silent is None:
                return self._tripped
            if silent <= bound:
                return False
            self._tripped = True
            self.audit.record(
                "watchdog",
                "event",
                caller="watchdog",
                role="system",
                args={"silent_s": silent, "bound_s": bound, "controller": self._controller},
            )
            self._safe_backend()
            return True

    def reset_watchdog(self, *, caller: str = "local") -> None:
        """Operator reset: re-enable commands (the beam stays blanked until set)."""
        with self._lock:
            self._tripped = False
            self._controller = None
            self.audit.record("reset_watchdog", "accepted", caller=caller)

    def start_watchdog(self, period_s: float | None = None) -> None:
        """Check the watchdog from a background thread every ``period_s`` (default interval/4)."""
        interval = self.config.heartbeat_interval_s
        if interval is None or self._thread is not None:
            return
        period = period_s or interval / 4

        def loop() -> None:
            while not self._stop.wait(period):
                self.check_watchdog()

        self._thread = threading.Thread(target=loop, name="emauto-watchdog", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ contract

    def describe(self) -> MicroscopeDescription:
        """The backend's description with soft limits and max steps applied."""
        return self._description

    def read(self, *, caller: str = "local", role: str = "agent") -> MicroscopeState:
        """Read the backend (a heartbeat of ``caller``, unless the system reads)."""
        if role != "system":
            self.heartbeat(caller=caller)
        with self._lock:
            return self.microscope.read()

    def set(
        self, setpoints: Mapping[str, float], *, caller: str = "local", role: str = "agent"
    ) -> MicroscopeState:
        """Check every setpoint against limits, step, rate and watchdog; apply; read back."""
        args = dict(setpoints) if isinstance(setpoints, Mapping) else repr(setpoints)
        with self._lock:
            try:
                self._check_tripped()
                checked = validate_setpoints(self._description, {}, setpoints)
                current = self.microscope.read()
                now = self._clock()
                self._check_steps(checked, current.knobs, now)
            except EmautoError as exc:
                self.audit.record("set", "rejected", caller=caller, role=role, args=args, error=exc)
                raise
            self._command_from(caller)
            try:
                state = self.microscope.set(checked)
                state = self._confirm(checked, state)
            except EmautoError as exc:
                self.audit.record("set", "failed", caller=caller, role=role, args=args, error=exc)
                raise
            finally:
                self._touch(caller)  # a command in flight counts as life
            for name, value in checked.items():
                if value != current.knobs.get(name):
                    self._last_change[name] = now
            self.audit.record("set", "accepted", caller=caller, role=role, args=checked)
            return state

    def acquire(
        self,
        request: RonchigramRequest | ImageRequest,
        *,
        caller: str = "local",
        role: str = "agent",
    ) -> Frame:
        """Check the watchdog and the dose budget, then acquire."""
        args = _audit_args(request)
        with self._lock:
            try:
                self._check_tripped()
                self._check_points(request)
                budget = self.config.dose_budget_e
                if budget is not None:
                    dwell = self.microscope.read().knobs.get("scan_dwell", 0.0)
                    need = estimate_dose_e(request, self._hardware.beam_current_A, dwell)
                    if self._dose_used_e + need > budget:
                        raise DoseBudgetError(
                            f"acquisition needs {need:.3g} e but only "
                            f"{budget - self._dose_used_e:.3g} e of the {budget:.3g} e "
                            "dose budget are left"
                        )
            except EmautoError as exc:
                self.audit.record(
                    "acquire", "rejected", caller=caller, role=role, args=args, error=exc
                )
                raise
            self._command_from(caller)
            try:
                frame = self.microscope.acquire(request)
            except EmautoError as exc:
                self.audit.record(
                    "acquire", "failed", caller=caller, role=role, args=args, error=exc
                )
                raise
            finally:
                self._touch(caller)  # a command in flight counts as life
            self._dose_used_e += frame.dose_e
            self.audit.record(
                "acquire",
                "accepted",
                caller=caller,
                role=role,
                args={"kind": frame.kind, "dose_e": frame.dose_e},
            )
            return frame

    def safe(self, *, caller: str = "local", role: str = "agent") -> None:
        """Blank the beam and stop motion; always allowed."""
        with self._lock:
            self._safe_backend()
            self.audit.record("safe", "accepted", caller=caller, role=role)

    def close(self) -> None:
        """Stop the watchdog thread, go safe and close the backend."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            try:
                self._safe_backend()
            finally:
                self.microscope.close()
                self.audit.record("close", "accepted", role="system")
                self.audit.close()

    # ------------------------------------------------------------------ internals

    def _safe_backend(self) -> None:
        try:
            self.microscope.safe()
        except Exception as exc:  # going safe must not raise past this layer
            self.audit.record("safe", "failed", role="system", error=exc)

    def _command_from(self, caller: str) -> None:
        """``caller`` commands: it becomes the controlling client the watchdog guards."""
        self._touch(caller)
        self._controller = caller

    def _check_points(self, request: RonchigramRequest | ImageRequest) -> None:
        """Refuse a scan over more positions than the backend's `ScanLimits.max_positions`,
        counted before the backend allocates anything for it."""
        if not isinstance(request, ImageRequest):
            return
        count, most = scan_points(request), self._hardware.scan.max_positions
        if count > most:
            raise InvalidRequestError(f"the scan has {count} positions, at most {most} are allowed")

    def _check_tripped(self) -> None:
        if self._tripped:
            raise WatchdogTrippedError(
                "the heartbeat watchdog tripped and the microscope is safe; "
                "an operator must reset it (emauto operator reset-watchdog)"
            )

    def _check_steps(
        self, checked: Mapping[str, float], current: Mapping[str, float], now: float
    ) -> None:
        for name, value in checked.items():
            spec = self._description.knobs[name]
            before = current.get(name)
            if before is None or not math.isfinite(before):
                continue
            delta = abs(value - before)
            if delta > spec.max_step * (1 + 1e-9):
                raise StepTooLargeError(
                    f"knob {name}: a step of {delta:g} {spec.unit} from {before:g} to {value:g} "
                    f"exceeds the maximum step {spec.max_step:g} {spec.unit}"
                )
            rule = self.config.knobs.get(name)
            rate = rule.max_rate_per_s if rule else None
            last = self._last_change.get(name)
            if rate is not None and last is not None and delta > 0:
                elapsed = max(now - last, 0.0)
                if delta > rate * elapsed * (1 + 1e-9):
                    raise RateLimitError(
                        f"knob {name}: changing by {delta:g} {spec.unit} {elapsed:.3g} s after "
                        f"the last change exceeds the maximum rate {rate:g} {spec.unit}/s"
                    )

    def _tolerance(self, name: str) -> float:
        spec = self._hardware.knobs[name]
        rule = self.config.knobs.get(name)
        if rule is not None and rule.readback_tolerance is not None:
            return rule.readback_tolerance
        return self.config.readback_relative_tolerance * (spec.upper - spec.lower)

    def _confirm(self, checked: Mapping[str, float], state: MicroscopeState) -> MicroscopeState:
        """Poll ``read()`` until every knob reads back its setpoint; else go safe and raise."""
        if not self.config.readback:
            return state
        names = [n for n in checked if n not in self.config.readback_exclude]
        deadline = self._clock() + self.config.readback_timeout_s
        while True:
            off = {
                n: state.knobs.get(n, math.nan)
                for n in names
                if not abs(state.knobs.get(n, math.nan) - checked[n]) <= self._tolerance(n)
            }
            if not off:
                return state
            if self._clock() >= deadline:
                self._safe_backend()
                detail = ", ".join(f"{n}: set {checked[n]:g}, read {v:g}" for n, v in off.items())
                raise ReadbackError(
                    f"readback did not confirm within {self.config.readback_timeout_s:g} s "
                    f"({detail}); the microscope was made safe"
                )
            time.sleep(self.config.readback_poll_s)
            state = self.microscope.read()


__all__ = [
    "KnobSafety",
    "OutOfLimitsError",
    "SafeMicroscope",
    "SafetyConfig",
    "beam_time_s",
    "estimate_dose_e",
    "merge_patch",
    "narrowed_knobs",
    "scan_points",
]
