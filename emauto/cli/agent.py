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
CONTROL_COMMANDS = (
    "status",
    "pause",
    "resume",
    "abort",
    "reset",
    "submit",
    "answer",
    "label",
    "shutdown",
)
DEFAULT_CONTROL = "tcp://127.0.0.1:5580"


def _daemon(args: argparse.Namespace) -> int:
    from emauto.agent.daemon import run_daemon, serve_daemon
    from emauto.agent.plans import DaemonConfig
    from emauto.units import load_yaml

    config = load_yaml(args.config, DaemonConfig) if args.config else DaemonConfig()
    update: dict[str, Any] = {}
    if args.microscope:
        update["microscope"] = args.microscope
    if args.console_port is not None or args.no_console:
        console = config.console.model_dump()
        if args.console_port is not None:
            console["port"] = args.console_port
        if args.no_console:
            console["enabled"] = False
        update["console"] = console
    if update:
        config = DaemonConfig.model_validate({**config.model_dump(), **update})
    if not args.once:
        if args.session:
            raise SystemExit("emauto daemon: --session is for --once (each plan has its own)")
        daemon = serve_daemon(config, queue_config_plan=not args.empty)
        print(json.dumps({"history": list(daemon.history)}, indent=2))
        return 0
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
    from emauto.agent.daemon import CHOICES, plan_from_file

    payload: dict[str, Any] | None = None
    if args.command == "submit":
        if args.argument is None:
            raise SystemExit("emauto ctl submit FILE: name a plan file (YAML or JSON)")
        payload = plan_from_file(args.argument)
    elif args.command == "answer":
        if args.argument not in CHOICES:
            raise SystemExit(f"emauto ctl answer CHOICE: one of {', '.join(CHOICES)}")
        payload = {"choice": args.argument}
    elif args.command == "label":
        if args.argument is None or args.at is None:
            raise SystemExit(
                "emauto ctl label CLASS --at X_PX Y_PX: a class name and the pixel (column, "
                "row) of the latest image the patch is centred on"
            )
        payload = {"label": args.argument, "x_px": args.at[0], "y_px": args.at[1]}
    elif args.argument is not None:
        raise SystemExit(f"emauto ctl {args.command} takes no argument")
    if args.at is not None and args.command != "label":
        raise SystemExit("emauto ctl: --at is for label")
    reply = send_command(args.control, args.command, timeout_s=args.timeout, payload=payload)
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _replay(args: argparse.Namespace) -> int:
    from emauto.sessions.reader import Session
    from emauto.tasks.probe_tuning.rerun import rerun_policy

    report = rerun_policy(args.session, args.policy, args.policy_path)
    # the hand-offs as recorded: each question the daemon asked and its operator's answer
    report["operator"] = Session(args.session).operator
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


def _bench_console(args: argparse.Namespace) -> int:
    from emauto.agent.console.bench import run_console_benchmark

    figures = run_console_benchmark(
        microscope=args.microscope,
        frames=args.frames,
        rate_hz=args.rate,
        chromium=args.chromium,
        seed=args.seed,
        source=args.source,
    )
    save(figures, args.save)
    emit(figures, args.json)
    return 0


def add_bench(bench_tasks: Any) -> None:
    """Register `bench recorder` and `bench console`."""
    console = bench_tasks.add_parser(
        "console",
        help="the web console: latency from an acquisition to its pixels in headless Chromium",
    )
    add_output_options(console, seed=0)
    console.add_argument("--microscope", default="sim://", help="the twin (default: %(default)s)")
    console.add_argument("--frames", type=int, default=60, help="frames acquired")
    console.add_argument("--rate", type=float, default=10.0, help="frames per second")
    console.add_argument(
        "--chromium", default="/usr/bin/chromium", help="the browser (default: %(default)s)"
    )
    console.add_argument(
        "--source",
        choices=("replay", "live"),
        default="replay",
        help="replay: twin frames acquired first, delivered at the rate (as a microscope PC "
        "would); live: acquired in the loop (the twin competes for the CPU)",
    )
    console.set_defaults(handler=_bench_console)

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
    daemon = commands.add_parser(
        "daemon",
        help="serve plans on a microscope, recorded, with a web console (stays up; --once: "
        "run the config's plan and exit)",
    )
    daemon.add_argument("--config", type=Path, help="DaemonConfig YAML (default: built-in plan)")
    daemon.add_argument("--microscope", help="override the config's microscope URI")
    daemon.add_argument(
        "--once", action="store_true", help="run the config's plan, print its outcome, exit"
    )
    daemon.add_argument(
        "--empty", action="store_true", help="start with an empty queue (not the config's plan)"
    )
    daemon.add_argument(
        "--session", type=Path, help="with --once: session folder (default: under sessions)"
    )
    daemon.add_argument(
        "--console-port", type=int, help="the web console's port (0: any free port)"
    )
    daemon.add_argument("--no-console", action="store_true", help="do not serve the console")
    daemon.set_defaults(handler=_daemon)

    ctl = commands.add_parser("ctl", help="control a running daemon")
    ctl.add_argument("command", choices=CONTROL_COMMANDS, help="what to ask the daemon")
    ctl.add_argument(
        "argument",
        nargs="?",
        help="submit: a plan file (YAML/JSON: name, plan: [task, ...]); answer: approve, "
        "take_over or abort; label: the class name",
    )
    ctl.add_argument(
        "--at",
        nargs=2,
        type=float,
        metavar=("X_PX", "Y_PX"),
        help="label: the pixel (column, row) of the latest image the 32x32 patch is centred on",
    )
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
