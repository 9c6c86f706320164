"""The `emauto` command.

Every command module is registered once in `COMMAND_MODULES`; each has ``add_commands``
(its subcommands) and ``add_bench`` (its ``emauto bench`` entries). A handler takes the
parsed arguments and returns the process exit code. Command modules import their work
inside the handlers, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from emauto.errors import EmautoError
from emauto.version import __version__

Handler = Callable[[argparse.Namespace], int]

#: Each module's commands, in the order ``--help`` lists them: the shared packages' and
#: each task's.
COMMAND_MODULES = (
    "emauto.cli.demo",
    "emauto.tasks.probe_tuning.cli",
    "emauto.tasks.probe_tuning.robustness_cli",
    "emauto.cli.driver",
    "emauto.cli.agent",
    "emauto.tasks.sparse_scan.cli",
    "emauto.cli.analysis",
    "emauto.tasks.region_search.cli",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emauto", description="Automation agent for (S)TEM: digital twin, policies, agent."
    )
    parser.add_argument("--version", action="version", version=f"emauto {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    modules = [importlib.import_module(name) for name in COMMAND_MODULES]
    for module in modules:
        module.add_commands(commands)
    bench = commands.add_parser("bench", help="run a benchmark and print its figures")
    bench_tasks = bench.add_subparsers(dest="task", required=True, metavar="TASK")
    for module in modules:
        module.add_bench(bench_tasks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `emauto` console command.

    Ctrl-C (`KeyboardInterrupt`) ends any command with one line on stderr and exit status
    130, after the command's own ``finally`` clauses have closed what it opened (the
    microscope made safe, a recorded session closed with ``exit_status: abort``).
    """
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = _parser().parse_args(argv)
        args.command_argv = argv  # as typed: the key of a result saved by command (--save)
        handler: Handler = args.handler
        try:
            return handler(args)
        except EmautoError as exc:
            print(f"emauto: error: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print("emauto: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
