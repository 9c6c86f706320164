"""What every `emauto` command does alike: each option and command has help text, ``-v`` /
``-q`` set the log level (the log on stderr), and with ``--json`` stdout carries JSON only."""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emauto.cli import JsonOnlyStdout, _parser, main

#: Options still without help, each in a module another change owns; this set may only
#: shrink (the test fails when one gains help text and is still listed).
PENDING: set[tuple[str, str]] = set()


def without_help(parser: argparse.ArgumentParser, path: str = "emauto") -> set[tuple[str, str]]:
    """Every (command, option) of the parser tree without help text; a command without help
    is listed as (command, "(command)")."""
    missing: set[tuple[str, str]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name):
                    missing.add((f"{path} {name}", "(command)"))
                missing |= without_help(sub, f"{path} {name}")
        elif isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        elif not action.help or action.help == argparse.SUPPRESS:
            missing.add((path, "/".join(action.option_strings) or action.dest))
    return missing


def test_every_option_and_command_has_help_text() -> None:
    missing = without_help(_parser())
    assert missing <= PENDING, f"without help: {sorted(missing - PENDING)}"
    assert missing >= PENDING, f"these have help now; drop them from PENDING: {PENDING - missing}"


def test_the_walk_finds_an_option_without_help() -> None:
    parser = argparse.ArgumentParser(prog="x")
    commands = parser.add_subparsers()
    sub = commands.add_parser("sub", help="a command")
    sub.add_argument("--bare")
    commands.add_parser("quiet")
    assert without_help(parser, "x") == {("x sub", "--bare"), ("x quiet", "(command)")}


@pytest.mark.parametrize(
    ("flags", "level"),
    [([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
     (["-q"], logging.ERROR), (["-qq"], logging.CRITICAL), (["-v", "-q"], logging.WARNING)],
)  # fmt: skip
def test_verbosity_sets_the_log_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], level: int
) -> None:
    """The level while the command runs (its log on stderr), and the logger as it was after."""
    seen: list[int] = []

    def analyze_and_log(args: argparse.Namespace) -> int:
        seen.append(logging.getLogger("emauto").level)
        logger = logging.getLogger("emauto.test")
        logger.info("an info line")
        logger.error("an error line")
        return analyze(args)

    np.save(tmp_path / "noise.npy", np.random.default_rng(0).random((32, 32)))
    parser = _parser()
    args = parser.parse_args([*flags, "analyze", str(tmp_path / "noise.npy"), "--json"])
    analyze = args.handler
    before = logging.getLogger("emauto").level
    with pytest.MonkeyPatch.context() as patch:  # the real command, with two log lines added
        patch.setattr("emauto.cli._parser", lambda: _with_handler(parser, analyze_and_log))
        assert main([*flags, "analyze", str(tmp_path / "noise.npy"), "--json"]) == 0
    assert seen == [level]
    assert logging.getLogger("emauto").level == before
    out, err = capsys.readouterr()
    json.loads(out)  # stdout: the result alone
    assert ("an info line" in err) == (level <= logging.INFO)
    assert ("an error line" in err) == (level <= logging.ERROR)


def _with_handler(parser: argparse.ArgumentParser, handler: object) -> argparse.ArgumentParser:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands.choices["analyze"].set_defaults(handler=handler)
    return parser


def test_json_only_stdout_routes_other_lines_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    router = JsonOnlyStdout(out, err)
    print("episode 1/3: success=True", file=router)
    router.write('{"a": ')  # a line arrives in pieces
    router.write("1}\nwrote x.json\n")
    print(json.dumps([1, 2]), file=router, end="")
    router.close_line()
    assert out.getvalue().splitlines() == ['{"a": 1}', "[1, 2]"]
    assert err.getvalue().splitlines() == ["episode 1/3: success=True", "wrote x.json"]


def test_json_command_prints_only_json_in_a_real_process(tmp_path: Path) -> None:
    y, x = np.mgrid[0:48, 0:48]
    np.save(tmp_path / "frame.npy", np.cos(x / 2.0) * np.cos(y / 2.0))
    done = subprocess.run(
        [sys.executable, "-m", "emauto", "-vv", "analyze", str(tmp_path / "frame.npy"),
         "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["overlay"].endswith("frame_overlay.png")
