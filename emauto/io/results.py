"""Command results: print them (JSON or aligned lines), save them, the common benchmark
options. Shared by the command modules of the CLI and of each task."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
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


def save(result: dict[str, Any], out: Path | None, *, key: str | None = None) -> None:
    """Also write the result to ``out`` (e.g. ``benchmarks/NAME-latest.json``).

    With ``key`` (a command line, `command_line`), ``out`` holds several results keyed by
    the command that measured each: the result is written under ``key`` and the file's
    other entries are kept.
    """
    if out is None:
        return
    document: dict[str, Any] = result
    if key is not None:
        document = {}
        if out.is_file():
            existing = json.loads(out.read_text())
            if not isinstance(existing, dict):
                raise ValueError(f"{out}: expected a JSON object keyed by command")
            document = existing
        document[key] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}" + (f" under {key!r}" if key is not None else ""), file=sys.stderr)


def command_line(argv: Sequence[str]) -> str:
    """``emauto ARGS`` as typed, without ``--save FILE`` (where the result goes is no part
    of what was measured): the key of a result in a file keyed by command."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--save":
            skip = True
        elif not arg.startswith("--save="):
            kept.append(arg)
    return " ".join(["emauto", *kept])


def add_save_option(parser: argparse.ArgumentParser, *, keyed: bool = False) -> None:
    """``--save FILE``; ``keyed``: the file holds one result per command (see `save`)."""
    help_text = (
        "also write the JSON into this file under its command (other commands' entries kept)"
        if keyed
        else "also write the JSON to this file"
    )
    parser.add_argument("--save", type=Path, help=help_text)


def add_output_options(parser: argparse.ArgumentParser, *, seed: int, keyed: bool = False) -> None:
    """``--json``, ``--seed`` (default ``seed``) and ``--save`` (see `add_save_option`)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=seed, help="random seed (default: %(default)s)")
    add_save_option(parser, keyed=keyed)
