"""The `emauto` command.

Every command module is registered once in `COMMAND_MODULES`; each has ``add_commands``
(its subcommands) and ``add_bench`` (its ``emauto bench`` entries). A handler takes the
parsed arguments and returns the process exit code. Command modules import their work
inside the handlers, so ``--help`` stays fast.

For every command: ``-v`` / ``-vv`` show emauto's log at INFO / DEBUG, ``-q`` / ``-qq`` only
errors / nothing but critical messages (default: warnings), always on stderr. With ``--json``
stdout carries JSON only: any other line a command prints goes to stderr (`JsonOnlyStdout`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

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
    "emauto.cli.calibration",
)


#: Log levels by verbosity (``-v`` counts +1, ``-q`` -1).
LOG_LEVELS = {-2: logging.CRITICAL, -1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO,
              2: logging.DEBUG}  # fmt: skip


class _StderrHandler(logging.StreamHandler):
    """Log records to the current ``sys.stderr`` (looked up at each record)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("emauto: %(levelname)s %(name)s: %(message)s"))

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(verbosity: int) -> int:
    """Send emauto's log to stderr at the level of ``verbosity`` (-2..2, clipped); return
    the level."""
    level = LOG_LEVELS[max(-2, min(2, verbosity))]
    logger = logging.getLogger("emauto")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_StderrHandler())
    logger.setLevel(level)
    return level


@contextlib.contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """`configure_logging` for one command; the logger as it was afterwards (a program that
    calls `main` keeps its own logging)."""
    logger = logging.getLogger("emauto")
    level, handlers = logger.level, list(logger.handlers)
    configure_logging(verbosity)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers


class JsonOnlyStdout:
    """A stdout for ``--json``: each complete line that is a JSON document goes to
    ``stdout``, any other line (progress, a note) to ``stderr``."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._route(line)
        return len(text)

    def _route(self, line: str) -> None:
        try:
            json.loads(line)
        except ValueError:
            self.stderr.write(line + "\n")
            return
        self.stdout.write(line + "\n")

    def flush(self) -> None:
        self.stdout.flush()
        self.stderr.flush()

    def close_line(self) -> None:
        """Route what is left without its newline."""
        if self._pending:
            self._route(self._pending)
            self._pending = ""
        self.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _json_only(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    router = JsonOnlyStdout(sys.stdout, sys.stderr)
    with contextlib.redirect_stdout(router):
        try:
            yield
        finally:
            router.close_line()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emauto", description="Automation agent for (S)TEM: digital twin, policies, agent."
    )
    parser.add_argument("--version", action="version", version=f"emauto {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="more log on stderr: -v INFO, -vv DEBUG (default: warnings)",
    )  # fmt: skip
    parser.add_argument(
        "-q", "--quiet", action="count", default=0,
        help="less log on stderr: -q errors only, -qq critical only",
    )  # fmt: skip
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
            with (
                _logging(args.verbose - args.quiet),
                _json_only(bool(getattr(args, "json", False))),
            ):
                return handler(args)
        except EmautoError as exc:
            print(f"emauto: error: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print("emauto: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
