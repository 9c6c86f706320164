"""The server's request ledger: what happened to each client's recent requests.

Exactly-once needs more than a reply cache held in memory: a cache evicts and a server
restarts. The ledger keeps, per client (``user/client id``), the outcome of its last few
requests: sequence number, op, ``started`` (logged before a command reaches the safety layer)
or ``done`` (ok or the typed error, and the reply header when it is small). Commands that act
(`MUTATING`) are appended to a JSON Lines file and fsync'd twice, before they are applied and
before their reply is sent; other requests are written without fsync (their sequence numbers
only fence stale copies). On start the file is replayed and compacted.

Memory is bounded: at most ``max_clients`` clients (least recently seen forgotten first) with
``history`` outcomes each, and one reply header of at most `MAX_KEPT_HEADER_BYTES` per client
(its latest request's): 4096 clients hold at most ~40 MB. A forgotten
client's sequence numbers raise ``floor``: a command from an unknown client at or below the
floor cannot be told from a retry of a forgotten one and is refused.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

#: Ops that act on the microscope or the server: applied at most once, persisted with fsync.
MUTATING = frozenset({"set", "acquire", "safe", "set_limits", "reset_watchdog"})
#: Largest reply header kept to answer a retry after the reply cache let it go, bytes.
MAX_KEPT_HEADER_BYTES = 8 * 1024

State = Literal["started", "done", "fence"]


@dataclass(frozen=True)
class Outcome:
    """What became of request ``seq`` of one client. ``header``: the reply header (UTF-8
    JSON) when it was small and had no array frames."""

    seq: int
    op: str
    state: State
    time: float
    ok: bool | None = None
    error: dict[str, str] | None = None
    header: str | None = None

    def to_json(self, key: str) -> str:
        """One ledger line."""
        record: dict[str, Any] = {"k": key, "seq": self.seq, "op": self.op, "s": self.state}
        record["t"] = self.time
        if self.ok is not None:
            record["ok"] = self.ok
        if self.error is not None:
            record["e"] = self.error
        if self.header is not None:
            record["h"] = self.header
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> tuple[str, Outcome]:
        """``(key, outcome)`` from a parsed ledger line (raises on a malformed one)."""
        state = record["s"]
        if state not in ("started", "done", "fence"):
            raise ValueError(f"unknown state {state!r}")
        error = record.get("e")
        outcome = cls(
            seq=int(record["seq"]),
            op=str(record["op"]),
            state=state,
            time=float(record["t"]),
            ok=record.get("ok"),
            error={str(k): str(v) for k, v in error.items()} if isinstance(error, dict) else None,
            header=record.get("h") if isinstance(record.get("h"), str) else None,
        )
        return str(record["k"]), outcome


def _place(outcomes: deque[Outcome], outcome: Outcome) -> None:
    """Insert ``outcome`` in sequence order (``done`` replaces ``started`` of the same request;
    a fence stays last when an earlier request finishes after it). Only the latest request can
    be retried, so only it keeps its reply header."""
    items = [o for o in outcomes if o.seq != outcome.seq or o.state == "fence"]
    items.append(outcome)
    items.sort(key=lambda o: (o.seq, o.state == "fence"))
    items = items[-(outcomes.maxlen or len(items)) :]
    outcomes.clear()
    for index, item in enumerate(items):
        if item.header is not None and index != len(items) - 1:
            item = replace(item, header=None)
        outcomes.append(item)


class Ledger:
    """Per-client outcomes of recent requests; persisted to ``path`` when given."""

    def __init__(
        self, path: Path | str | None = None, *, max_clients: int = 4096, history: int = 8
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.max_clients = max_clients
        self.history = history
        self.floor = -1
        self._entries: OrderedDict[str, deque[Outcome]] = OrderedDict()
        self._lock = threading.Lock()
        self._lines = 0
        self._fd: int | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._compact()

    @property
    def persistent(self) -> bool:
        """True when outcomes survive a restart (a ledger file)."""
        return self.path is not None

    # ------------------------------------------------------------------ queries

    def last(self, key: str) -> Outcome | None:
        """The client's latest outcome, if it is remembered."""
        with self._lock:
            outcomes = self._entries.get(key)
            return outcomes[-1] if outcomes else None

    def find(self, key: str, seq: int) -> Outcome | None:
        """The outcome of request ``seq`` of the client, if it is remembered."""
        with self._lock:
            for outcome in reversed(self._entries.get(key, ())):
                if outcome.seq == seq and outcome.state != "fence":
                    return outcome
            return None

    def knows(self, key: str) -> bool:
        """True when the client is remembered."""
        with self._lock:
            return key in self._entries

    # ------------------------------------------------------------------ updates

    def start(self, key: str, seq: int, op: str) -> None:
        """Log that a command is about to be applied (fsync'd for `MUTATING` ops)."""
        self._add(key, Outcome(seq=seq, op=op, state="started", time=time.time()))

    def finish(
        self,
        key: str,
        seq: int,
        op: str,
        *,
        ok: bool,
        error: dict[str, str] | None = None,
        header: bytes | None = None,
    ) -> None:
        """Log a request's outcome (fsync'd for `MUTATING` ops) before its reply is sent."""
        kept = None
        if header is not None and len(header) <= MAX_KEPT_HEADER_BYTES:
            kept = header.decode("utf-8")
        outcome = Outcome(
            seq=seq, op=op, state="done", time=time.time(), ok=ok, error=error, header=kept
        )
        self._add(key, outcome)

    def fence(self, key: str, seq: int) -> None:
        """Make every request of the client up to ``seq`` stale: a late copy of one that was
        never received is dropped, never applied (after `applied` answered for it)."""
        last = self.last(key)
        if last is None or last.seq < seq:
            self._add(key, Outcome(seq=seq, op="fence", state="fence", time=time.time()))

    def _remember(self, key: str, outcome: Outcome) -> None:
        """Keep ``outcome`` under client ``key`` (most recent last); forget the least recent
        clients beyond ``max_clients``, raising the floor past their last sequence number.
        The caller holds the lock (or is loading, before any thread runs)."""
        outcomes = self._entries.get(key)
        if outcomes is None:
            outcomes = self._entries[key] = deque(maxlen=self.history)
        _place(outcomes, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_clients:
            _, forgotten = self._entries.popitem(last=False)
            self._raise_floor(forgotten[-1].seq)

    def _add(self, key: str, outcome: Outcome) -> None:
        line = outcome.to_json(key) + "\n"
        durable = outcome.op in MUTATING or outcome.state == "fence"
        with self._lock:
            self._remember(key, outcome)
            if self._fd is not None:
                os.write(self._fd, line.encode())
                if durable:
                    os.fsync(self._fd)
                self._lines += 1
                if self._lines > 4 * len(self._entries) * self.history + 10_000:
                    self._compact_locked()

    def _raise_floor(self, seq: int) -> None:
        """Raise the floor to a forgotten client's ``seq``, but never above the clock in
        microseconds (where clients start counting): a peer sending a huge ``seq`` must not
        lock every new client out."""
        self.floor = max(self.floor, min(seq, time.time_ns() // 1000))

    # ------------------------------------------------------------------ file

    def _load(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        bad = 0
        with self.path.open("rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw)
                    if record.get("k") == "#floor":
                        self.floor = max(self.floor, int(record["seq"]))
                        continue
                    key, outcome = Outcome.from_record(record)
                except (ValueError, KeyError, TypeError, AttributeError):
                    bad += 1  # a line torn by a crash mid-write: skip it
                    continue
                self._remember(key, outcome)
        if bad:
            log.warning("ledger %s: skipped %d malformed line(s)", self.path, bad)

    def _compact(self) -> None:
        with self._lock:
            self._compact_locked()

    def _compact_locked(self) -> None:
        """Rewrite the file with what is remembered (write, fsync, rename: never torn)."""
        assert self.path is not None
        temporary = self.path.with_name(self.path.name + ".tmp")
        lines = [json.dumps({"k": "#floor", "seq": self.floor}) + "\n"]
        for key, outcomes in self._entries.items():
            lines.extend(outcome.to_json(key) + "\n" for outcome in outcomes)
        with temporary.open("w", encoding="utf-8") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lines = len(lines)

    def close(self) -> None:
        """Close the file (the outcomes stay in memory)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
