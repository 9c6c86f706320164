"""An append-only audit log: one JSON object per line for every accepted or rejected command.

Bounded: rejected commands are written at most ``max_rejects_per_s`` per second; beyond that
they are counted and summarised in one ``audit``/``event`` record per second (``suppressed``
by command and error), so a flood of bad requests cannot fill the disk. Accepted, failed and
event records are always written. The file rotates at ``max_bytes`` (``PATH.1`` ...
``PATH.N``, ``backups`` kept): at most ``(backups + 1) * max_bytes`` on disk.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def _jsonable(value: Any) -> Any:
    """Make ``value`` JSON-safe: non-finite floats become strings, unknown objects repr()."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)[:200]


class AuditLog:
    """JSON Lines audit log, thread-safe; ``path=None`` keeps the records in memory only."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        keep: int = 10_000,
        max_rejects_per_s: int = 20,
        max_bytes: int = 256 * 1024 * 1024,
        backups: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.records: list[dict[str, Any]] = []
        self.suppressed_total = 0
        self._keep = keep
        self._max_rejects = max_rejects_per_s
        self._max_bytes = max_bytes
        self._backups = backups
        self._clock = clock
        self._window_start = clock()
        self._window_rejects = 0
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._size = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            self._size = self._file.tell()

    def record(
        self,
        command: str,
        outcome: str,
        *,
        caller: str = "local",
        role: str = "operator",
        args: Any = None,
        error: BaseException | None = None,
    ) -> dict[str, Any]:
        """Append one record; ``outcome`` is ``accepted``, ``rejected``, ``failed`` or ``event``.
        A rejected record beyond the rate limit is only counted (returned, not written)."""
        entry: dict[str, Any] = {
            "time": time.time(),
            "caller": str(caller)[:200],
            "role": role,
            "command": command,
            "outcome": outcome,
        }
        if args is not None:
            entry["args"] = _jsonable(args)
        if error is not None:
            entry["error"] = type(error).__name__
            entry["message"] = str(error)[:500]
        with self._lock:
            self._roll_window()
            if outcome == "rejected":
                self._window_rejects += 1
                if self._window_rejects > self._max_rejects:
                    self._suppressed[f"{command}/{entry.get('error', '?')}"] += 1
                    self.suppressed_total += 1
                    return entry
            self._write(entry)
        return entry

    def _roll_window(self) -> None:
        """Start a new one-second window; summarise what the last one suppressed."""
        now = self._clock()
        if now - self._window_start < 1.0:
            return
        if self._suppressed:
            self._write(self._summary(now))
        self._window_start = now
        self._window_rejects = 0

    def _summary(self, now: float) -> dict[str, Any]:
        summary = {
            "time": time.time(),
            "caller": "audit",
            "role": "system",
            "command": "audit",
            "outcome": "event",
            "args": {
                "suppressed": sum(self._suppressed.values()),
                "by": dict(self._suppressed.most_common(20)),
                "window_s": round(now - self._window_start, 3),
                "max_rejects_per_s": self._max_rejects,
            },
        }
        self._suppressed.clear()
        return summary

    def _write(self, entry: dict[str, Any]) -> None:
        self.records.append(entry)
        if len(self.records) > self._keep:
            del self.records[: len(self.records) - self._keep]
        if self._file is None:
            return
        line = json.dumps(entry) + "\n"
        if self._size + len(line) > self._max_bytes:
            self._rotate()
        assert self._file is not None
        self._file.write(line)
        self._file.flush()
        self._size += len(line)

    def _rotate(self) -> None:
        """``PATH`` -> ``PATH.1`` -> ... -> ``PATH.backups`` (the oldest is dropped)."""
        assert self.path is not None and self._file is not None
        self._file.close()
        for index in range(self._backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path.with_name(f"{self.path.name}.{index - 1}") if index > 1 else self.path
            if newer.exists():
                if index == self._backups and older.exists():
                    older.unlink()
                newer.replace(older)
        if self._backups == 0:
            self.path.unlink(missing_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        """Write any pending summary and close the file (records stay readable in memory)."""
        with self._lock:
            if self._suppressed:
                self._write(self._summary(self._clock()))
            if self._file is not None:
                self._file.close()
                self._file = None
