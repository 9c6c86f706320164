"""The `emauto` command.

Each subcommand registers a handler with ``set_defaults(handler=...)``; a handler takes the
parsed arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from emauto.cli.agent import add_agent_bench, add_agent_commands
from emauto.cli.driver import add_driver_bench, add_driver_commands
from emauto.errors import EmautoError
from emauto.tasks.probe_tuning.cli import add_tuning_bench, add_tuning_commands
from emauto.tasks.region_search.cli import add_region_bench, add_region_commands
from emauto.tasks.sparse_scan.cli import add_scan_bench, add_scan_commands
from emauto.version import __version__

Handler = Callable[[argparse.Namespace], int]


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """Print a benchmark result as one JSON object or as aligned ``key value`` lines."""
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:32s} {value}")


def _demo(args: argparse.Namespace) -> int:
    from emauto.agent.demo import run_demo

    print(json.dumps(run_demo(args.out, seed=args.seed), indent=2))
    return 0


def _bench_sim(args: argparse.Namespace) -> int:
    from emauto.bench.sim import run_sim_benchmark

    print_result(run_sim_benchmark(seed=args.seed, repeats=args.repeats), args.json)
    return 0


def _add_bench_parsers(bench_tasks: Any) -> None:
    sim = bench_tasks.add_parser("sim", help="the twin: fast vs multislice speed and error")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--repeats", type=int, default=None, help="override repetitions")
    sim.set_defaults(handler=_bench_sim)
    add_tuning_bench(bench_tasks)
    add_driver_bench(bench_tasks)
    add_agent_bench(bench_tasks)
    add_scan_bench(bench_tasks)
    add_region_bench(bench_tasks)


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
    demo.set_defaults(handler=_demo)

    add_tuning_commands(commands)
    add_driver_commands(commands)
    add_agent_commands(commands)
    add_scan_commands(commands)
    add_region_commands(commands)
    bench = commands.add_parser("bench", help="run a benchmark and print its figures")
    _add_bench_parsers(bench.add_subparsers(dest="task", required=True, metavar="TASK"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `emauto` console command."""
    args = _parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EmautoError as exc:
        print(f"emauto: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
