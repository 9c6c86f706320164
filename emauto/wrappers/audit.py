"""An append-only audit log: one JSON object per line for every accepted or rejected command."""

from __future__ import annotations

import json
import math
import threading
import time
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

    def __init__(self, path: Path | str | None = None, *, keep: int = 10_000) -> None:
        self.path = Path(path) if path is not None else None
        self.records: list[dict[str, Any]] = []
        self._keep = keep
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

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
        """Append one record; ``outcome`` is ``accepted``, ``rejected``, ``failed`` or ``event``."""
        entry: dict[str, Any] = {
            "time": time.time(),
            "caller": caller,
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
            self.records.append(entry)
            if len(self.records) > self._keep:
                del self.records[: len(self.records) - self._keep]
            if self._file is not None:
                self._file.write(json.dumps(entry) + "\n")
                self._file.flush()
        return entry

    def close(self) -> None:
        """Close the file (records stay readable in memory)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
