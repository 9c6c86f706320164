"""Compare two folders of benchmark JSON (before / after), timings left out.

Usage: ``python compare.py BEFORE_DIR AFTER_DIR``; prints SAME or DIFF per file and, for a
difference, the path of each differing value. Exits 1 if any file differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: Keys that hold timings (they vary run to run and are not figures of merit here).
TIMING_MARKS = ("wall", "_s", "ms", "seconds", "time", "per_s", "torch_threads", "decision")


def without_timings(value: Any) -> Any:
    """``value`` with every key that holds a timing dropped, recursively."""
    if isinstance(value, dict):
        return {
            k: without_timings(v)
            for k, v in value.items()
            if not any(mark in k for mark in TIMING_MARKS)
        }
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """The paths at which ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += differences(a.get(key), b.get(key), f"{where}/{key}")
        return found
    return [] if a == b else [f"{where}: {str(a)[:80]} | {str(b)[:80]}"]


def main(before: Path, after: Path) -> int:
    """Compare every ``*.json`` of ``before`` with its namesake in ``after``."""
    failed = 0
    for path in sorted(before.glob("*.json")):
        a = without_timings(json.loads(path.read_text()))
        b = without_timings(json.loads((after / path.name).read_text()))
        found = differences(a, b)
        print(path.name, "SAME" if not found else "DIFF")
        for line in found:
            print("   ", line)
        failed += bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
