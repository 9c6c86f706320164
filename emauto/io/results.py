"""Command results: print them (JSON or aligned lines), save them, the common benchmark
options. Shared by the command modules of the CLI and of each task."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """Print a benchmark result as one JSON object or as aligned ``key value`` lines."""
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:32s} {value}")


def emit(result: dict[str, Any], as_json: bool) -> None:
    """Print ``result``: one line of JSON, or indented JSON for a person."""
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))


def save(result: dict[str, Any], out: Path | None) -> None:
    """Also write the result to ``out`` (e.g. ``benchmarks/NAME-latest.json``)."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)


def add_output_options(parser: argparse.ArgumentParser, *, seed: int) -> None:
    """``--json``, ``--seed`` (default ``seed``) and ``--save``."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--save", type=Path, help="also write the JSON to this file")
