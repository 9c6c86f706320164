"""`emauto daemon`, `emauto ctl`, `emauto replay`, `emauto report` and `emauto export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emauto.io.results import add_output_options, emit, save
from emauto.registry import Registry
from emauto.tasks.probe_tuning.policies.registry import METHODS

#: Every ``emauto export`` format: name -> ``export(session, out_folder) -> [paths]``.
EXPORTERS = Registry(
    "export format",
    {
        "hdf5": "emauto.sessions.export:export_hdf5",
        "zspy": "emauto.sessions.export:export_zspy",
        "minari": "emauto.tasks.probe_tuning.minari:export_minari_files",
    },
)
CONTROL_COMMANDS = ("status", "pause", "resume", "abort", "reset")
DEFAULT_CONTROL = "tcp://127.0.0.1:5580"


def _daemon(args: argparse.Namespace) -> int:
    from emauto.agent.daemon import run_daemon
    from emauto.agent.plans import DaemonConfig
    from emauto.units import load_yaml

    config = load_yaml(args.config, DaemonConfig) if args.config else DaemonConfig()
    if args.microscope:
        config = DaemonConfig.model_validate({**config.model_dump(), "microscope": args.microscope})
    result = run_daemon(config, session=args.session)
    print(
        json.dumps(
            {
                "exit_status": result.exit_status,
                "safe": result.safe,
                "session": str(result.session),
                "tasks": result.tasks,
                "error": result.error,
            },
            indent=2,
        )
    )
    return {"success": 0, "abort": 2}.get(result.exit_status, 1)


def _ctl(args: argparse.Namespace) -> int:
    from emauto.agent.control import send_command

    reply = send_command(args.control, args.command, timeout_s=args.timeout)
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _replay(args: argparse.Namespace) -> int:
    from emauto.tasks.probe_tuning.rerun import rerun_policy

    report = rerun_policy(args.session, args.policy, args.policy_path)
    print(json.dumps(report, indent=2))
    return 0


def _report(args: argparse.Namespace) -> int:
    from emauto.sessions.reader import Session
    from emauto.sessions.report import summary, write_report

    session = Session(args.session, repair=args.repair)
    png, page = write_report(session, args.out)
    print(json.dumps({**summary(session), "png": str(png), "html": str(page)}, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from emauto.sessions.export import export_into
    from emauto.sessions.reader import Session

    session = Session(args.session)
    out = args.out or session.path / f"export-{args.format}"
    exporter = EXPORTERS.load(args.format)
    paths = export_into(out, lambda folder: exporter(session, folder))
    print(json.dumps({"format": args.format, "written": [str(p) for p in paths]}, indent=2))
    return 0


def _bench_recorder(args: argparse.Namespace) -> int:
    from emauto.bench.recorder import run_recorder_benchmark

    figures = run_recorder_benchmark(
        steps=args.steps,
        trials=args.trials,
        seed=args.seed,
        folder=args.dir,
        power_cuts=args.power_cuts,
    )
    save(figures, args.save)
    emit(figures, args.json)
    return 0


def add_bench(bench_tasks: Any) -> None:
    """Register `bench recorder`."""
    bench = bench_tasks.add_parser(
        "recorder", help="fsync cost per step, kill -9 trials, simulated power cuts"
    )
    add_output_options(bench, seed=0)
    bench.add_argument("--steps", type=int, default=400, help="steps timed on the twin")
    bench.add_argument("--trials", type=int, default=20, help="kill -9 trials")
    bench.add_argument(
        "--power-cuts", type=int, default=200, help="simulated power cuts at random points"
    )
    bench.add_argument("--dir", type=Path, help="folder under test (default: the current one)")
    bench.set_defaults(handler=_bench_recorder)


def add_commands(commands: Any) -> None:
    """Register `daemon`, `ctl`, `replay`, `report` and `export`."""
    daemon = commands.add_parser("daemon", help="run a plan on a microscope, recorded")
    daemon.add_argument("--config", type=Path, help="DaemonConfig YAML (default: built-in plan)")
    daemon.add_argument("--microscope", help="override the config's microscope URI")
    daemon.add_argument("--session", type=Path, help="session folder (default: under sessions)")
    daemon.set_defaults(handler=_daemon)

    ctl = commands.add_parser("ctl", help="control a running daemon")
    ctl.add_argument("command", choices=CONTROL_COMMANDS)
    ctl.add_argument("--control", default=DEFAULT_CONTROL, help="the daemon's control address")
    ctl.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply")
    ctl.set_defaults(handler=_ctl)

    replay = commands.add_parser("replay", help="re-run a policy on a recorded session")
    replay.add_argument("session", type=Path, help="the session folder")
    replay.add_argument("--policy", choices=METHODS, help="default: the recorded one")
    replay.add_argument(
        "--policy-path",
        help="a trained policy folder for rl (default: the shipped one; a folder the session "
        "names is never loaded)",
    )
    replay.set_defaults(handler=_replay)

    report = commands.add_parser("report", help="write a session's PNG and HTML summary")
    report.add_argument("session", type=Path, help="the session folder")
    report.add_argument("--out", type=Path, help="folder (default: the session folder)")
    report.add_argument(
        "--repair",
        action="store_true",
        help="cut a torn last line (a crash mid-write) off documents.jsonl; without it the "
        "session is only read",
    )
    report.set_defaults(handler=_report)

    export = commands.add_parser("export", help="export a session (HyperSpy, Minari)")
    export.add_argument("session", type=Path, help="the session folder")
    export.add_argument("--format", choices=EXPORTERS.names(), required=True, help="file format")
    export.add_argument(
        "--out",
        type=Path,
        help="a new folder (default: SESSION/export-FORMAT); written whole or not at all",
    )
    export.set_defaults(handler=_export)
