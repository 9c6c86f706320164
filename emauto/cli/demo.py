"""`emauto demo` (the whole loop on the built-in simulated microscope) and
`emauto bench sim` (the twin: fast against multislice)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from emauto.io.results import add_output_options, print_result, save


def _demo(args: argparse.Namespace) -> int:
    from emauto.agent.demo import run_demo

    summary = run_demo(
        args.out, seed=args.seed, console_port=args.console_port, open_console=args.open
    )
    print(json.dumps(summary, indent=2))
    return 0


def _bench_sim(args: argparse.Namespace) -> int:
    from emauto.bench.sim import run_sim_benchmark

    result = run_sim_benchmark(seed=args.seed, repeats=args.repeats)
    save(result, args.save)
    print_result(result, args.json)
    return 0


def add_commands(commands: Any) -> None:
    """Register `demo`."""
    demo = commands.add_parser(
        "demo", help="drive the built-in simulated microscope end to end and write PNGs"
    )
    demo.add_argument("--out", default="emauto-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the twin and the episodes")
    demo.add_argument(
        "--console-port",
        type=int,
        default=0,
        help="the live console's port on 127.0.0.1 (default: a free one; its address is printed)",
    )
    demo.add_argument(
        "--open", action="store_true", help="open the live console in the default browser"
    )
    demo.set_defaults(handler=_demo)


def add_bench(bench_tasks: Any) -> None:
    """Register `bench sim`."""
    sim = bench_tasks.add_parser("sim", help="the twin: fast vs multislice speed and error")
    sim.add_argument("--repeats", type=int, default=None, help="override repetitions")
    add_output_options(sim, seed=0)
    sim.set_defaults(handler=_bench_sim)
