"""The `emauto` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from emauto import __version__
from emauto.errors import EmautoError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emauto", description="Automation agent for (S)TEM: digital twin, policies, agent."
    )
    parser.add_argument("--version", action="version", version=f"emauto {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="drive the built-in simulated microscope end to end and write PNGs"
    )
    demo.add_argument("--out", default="emauto-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)

    bench = commands.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument("task", choices=["sim"], help="what to benchmark")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--repeats", type=int, default=None, help="override repetitions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `emauto` console command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from emauto.demo import run_demo

            summary = run_demo(args.out, seed=args.seed)
            print(json.dumps(summary, indent=2))
            return 0
        if args.command == "bench":
            from emauto.bench.sim import run_sim_benchmark

            result = run_sim_benchmark(seed=args.seed, repeats=args.repeats)
            if args.json:
                print(json.dumps(result))
            else:
                for key, value in result.items():
                    print(f"{key:32s} {value}")
            return 0
    except EmautoError as exc:
        print(f"emauto: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
