"""Print the probe-tuning tables of benchmarks/README.md from the benchmark's JSON files.

    python benchmarks/experiments/probe_tuning_tables.py benchmarks/probe-tuning-latest.json

One row per method: success (the state left, Wilson 95 % interval), false dones, stops of
its own, median acquisitions and final Strehl ratio (bootstrap 95 % intervals), median dose,
and the old oracle rule's success (the true Strehl ratio reached 0.8 at some frame) beside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _rate(figure: dict[str, Any]) -> str:
    low, high = figure["ci95"]
    return f"{100 * figure['rate']:.0f} % ({100 * low:.0f}-{100 * high:.0f})"


def _median(figure: dict[str, Any] | None, digits: int = 0) -> str:
    if figure is None:
        return "-"
    low, high = figure["ci95"]
    return f"{figure['median']:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def table(methods: dict[str, dict[str, Any]]) -> str:
    """The markdown table of one run."""
    lines = [
        "| method | success, state left (95 % CI) | false done | stopped itself "
        "| median acquisitions | median final Strehl | median dose (e) "
        "| old oracle rule: reached 0.8 at a frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in methods.items():
        lines.append(
            f"| `{name}` | {_rate(f['success'])} | {_rate(f['false_done'])} "
            f"| {_rate(f['stopped_by_policy'])} | {_median(f['acquisitions'])} "
            f"| {_median(f['final_strehl'], 2)} | {f['dose_e']['median']:.2e} "
            f"| {_rate(f['oracle_success'])} |"
        )
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    for path in paths:
        run = json.loads(Path(path).read_text())
        print(f"`{path}`: `{run['command']}`\n")
        print(table(run["methods"]) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
