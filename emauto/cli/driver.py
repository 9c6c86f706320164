"""The driver's subcommands: ``serve``, ``keys``, ``operator`` and ``bench driver``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emauto.drivers.vendors import BACKENDS
from emauto.errors import ConfigError
from emauto.io.results import add_save_option


def _serve(args: argparse.Namespace) -> int:
    from emauto.drivers.zmq.config import ServerConfig, load_server_config
    from emauto.drivers.zmq.serve import serve

    config = load_server_config(Path(args.config)) if args.config else ServerConfig()
    update: dict[str, Any] = {}
    for field, value in (
        ("backend", args.backend),
        ("bind", args.bind),
        ("keys_dir", args.keys),
        ("audit_log", args.audit_log),
        ("sim_uri", args.sim_uri),
    ):
        if value is not None:
            update[field] = value
    config = ServerConfig.model_validate({**config.model_dump(), **update})

    def ready(endpoint: str) -> None:
        print(f"emauto: serving {config.backend} on {endpoint}", flush=True)

    serve(config, ready=ready)
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from emauto.drivers.zmq.auth import create_client_keys, create_server_keys

    folder = Path(args.dir)
    made = {"server": str(create_server_keys(folder))}
    for name in args.agent or []:
        made[f"agent:{name}"] = str(create_client_keys(folder, name, "agent"))
    for name in args.operator or []:
        made[f"operator:{name}"] = str(create_client_keys(folder, name, "operator"))
    print(json.dumps(made, indent=2))
    return 0


def _remote(args: argparse.Namespace) -> Any:
    from emauto.drivers.zmq.client import RemoteMicroscope

    curve = None
    if args.key or args.server_key:
        if not (args.key and args.server_key):
            raise ConfigError("CURVE needs both --key CLIENT.key_secret and --server-key FILE")
        curve = (Path(args.key), Path(args.server_key))
    return RemoteMicroscope(args.connect, timeout_s=args.timeout, retries=1, curve=curve)


def _operator(args: argparse.Namespace) -> int:
    scope = _remote(args)
    try:
        if args.action == "status":
            result = scope.status()
        elif args.action == "reset-watchdog":
            result = scope.reset_watchdog()
        else:
            if not args.file:
                raise ConfigError("set-limits needs --file SAFETY.yaml")
            from emauto.units import load_yaml
            from emauto.wrappers.safety import SafetyConfig

            # only the fields the file names travel: the server merges them into its
            # configuration (a file of knob limits keeps the heartbeat and the dose budget)
            config = load_yaml(Path(args.file), SafetyConfig)
            patch = config.model_dump(mode="json", exclude_unset=True)
            result = scope.set_limits(patch, replace=args.replace)
    finally:
        scope.close(safe=False)  # an operator query leaves the beam as it is
    print(json.dumps(result, indent=2))
    return 0


def _bench_driver(args: argparse.Namespace) -> int:
    from emauto.bench.driver import run_driver_benchmark
    from emauto.io.results import print_result, save

    result = run_driver_benchmark(requests=args.requests, frames=args.frames)
    save(result, args.save)
    print_result(result, args.json)
    return 0


def _bench_security(args: argparse.Namespace) -> int:
    from emauto.bench.security import run_security_benchmark
    from emauto.io.results import print_result, save

    result = run_security_benchmark(
        messages=args.messages,
        trials=args.trials,
        watchdog_trials=args.watchdog_trials,
        long_trials=args.long_trials,
        big_messages=args.big_messages,
        seed=args.seed,
    )
    save(result, args.save)
    print_result(result, args.json)
    return 0


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect", default="tcp://127.0.0.1:5555", help="server endpoint")
    parser.add_argument("--key", default=None, help="client .key_secret (CURVE)")
    parser.add_argument("--server-key", default=None, help="server public .key (CURVE)")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline per try, s")


def add_commands(commands: Any) -> None:
    """Register ``serve``, ``keys`` and ``operator`` on the top-level subparsers."""
    serve = commands.add_parser("serve", help="serve a microscope over ZeroMQ (microscope PC)")
    serve.add_argument(
        "--backend", choices=BACKENDS.names(), default=None, help="the microscope behind the server"
    )
    serve.add_argument("--bind", default=None, help="default tcp://127.0.0.1:5555 (loopback)")
    serve.add_argument("--config", default=None, help="server YAML (emauto/drivers/zmq/config)")
    serve.add_argument("--keys", default=None, help="CURVE key folder (emauto keys create)")
    serve.add_argument("--audit-log", default=None, help="JSON Lines audit log path")
    serve.add_argument("--sim-uri", default=None, help="the twin's sim:// URI (sim backend)")
    serve.set_defaults(handler=_serve)

    keys = commands.add_parser("keys", help="create CURVE keys and the client allow-list")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="server key pair and client keys in DIR")
    create.add_argument("dir", help="the key folder (created)")
    create.add_argument("--agent", action="append", help="create an agent key NAME")
    create.add_argument("--operator", action="append", help="create an operator key NAME")
    create.set_defaults(handler=_keys_create)

    operator = commands.add_parser("operator", help="operator commands to a running server")
    operator.add_argument(
        "action", choices=("status", "reset-watchdog", "set-limits"), help="what to ask the server"
    )
    operator.add_argument(
        "--file", default=None, help="SafetyConfig YAML for set-limits (merged into the server's)"
    )
    operator.add_argument(
        "--replace",
        action="store_true",
        help="set-limits: install the file as the whole configuration (every field required)",
    )
    _add_connection(operator)
    operator.set_defaults(handler=_operator)


def add_bench(bench_tasks: Any) -> None:
    """Register ``bench driver`` and ``bench security``."""
    driver = bench_tasks.add_parser("driver", help="ZeroMQ driver: round trip and frame rate")
    driver.add_argument("--json", action="store_true", help="print one JSON object")
    driver.add_argument("--requests", type=int, default=2000, help="read/set round trips")
    driver.add_argument("--frames", type=int, default=300, help="512x512 frames")
    add_save_option(driver)
    driver.set_defaults(handler=_bench_driver)

    security = bench_tasks.add_parser(
        "security", help="ZeroMQ server: fuzz, kill -9/restart exactly-once, watchdog"
    )
    security.add_argument("--json", action="store_true", help="print one JSON object")
    security.add_argument("--messages", type=int, default=20_000, help="fuzzed messages")
    security.add_argument("--trials", type=int, default=20, help="kill -9/restart trials")
    security.add_argument(
        "--watchdog-trials", type=int, default=5, help="controlling client killed (-9)"
    )
    security.add_argument(
        "--long-trials", type=int, default=3, help="legitimate acquisitions of 4 bounds"
    )
    security.add_argument(
        "--big-messages", type=int, default=4, help="12-part messages of 8 MiB parts"
    )
    security.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_save_option(security)
    security.set_defaults(handler=_bench_security)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the emauto command")
