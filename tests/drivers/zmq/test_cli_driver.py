"""The driver's commands: keys, serve's bind check, operator, bench driver, connect(tcp://)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import emauto
from emauto.bench.driver import StaticMicroscope
from emauto.cli import main
from emauto.drivers.zmq.client import RemoteMicroscope
from emauto.errors import ConfigError


def test_keys_create(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "keys"
    assert main(["keys", "create", str(folder), "--agent", "agent1", "--operator", "op1"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert set(made) == {"server", "agent:agent1", "operator:op1"}
    for path in ("server.key_secret", "agents/agent1.key", "operators/op1.key"):
        assert (folder / path).exists()
    assert (folder / "server.key_secret").stat().st_mode & 0o077 == 0


def test_serve_refuses_a_wide_bind_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--bind", "tcp://0.0.0.0:5599"]) == 2
    assert "needs CURVE keys" in capsys.readouterr().err


def test_operator_commands(
    thread_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    assert main(["operator", "status", "--connect", server.endpoint]) == 0
    assert json.loads(capsys.readouterr().out)["tripped"] is False
    limits = tmp_path / "limits.yaml"
    limits.write_text("dose_budget_e: 1.0e+9\nknobs:\n  C10: {lower: -1.0e-6, upper: 1.0e-6}\n")
    assert (
        main(["operator", "set-limits", "--file", str(limits), "--connect", server.endpoint]) == 0
    )
    assert json.loads(capsys.readouterr().out)["dose_budget_e"] == 1e9
    assert server.scope.describe().knobs["C10"].upper == 1e-6
    assert main(["operator", "reset-watchdog", "--connect", server.endpoint]) == 0


def test_bench_driver_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    saved = tmp_path / "driver-latest.json"
    args = ["bench", "driver", "--json", "--requests", "50", "--frames", "5", "--save", str(saved)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("rtt_p50_ms", "rtt_p99_ms", "frames_per_s", "overhead_vs_inprocess"):
        assert result[key] > 0
    assert result["frame_shape"] == [512, 512] and result["frame_dtype"] == "float32"
    assert json.loads(saved.read_text()) == result  # --save writes what was printed


def test_connect_tcp(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    scope = emauto.connect(f"{server.endpoint}?timeout=5&retries=1")
    assert isinstance(scope, RemoteMicroscope) and isinstance(scope, emauto.microscope.Microscope)
    assert scope.describe().backend == "static"
    scope.close()
    for bad in ("tcp://127.0.0.1", "tcp://127.0.0.1:1?colour=red", "tcp://127.0.0.1:1?key=a"):
        with pytest.raises(ConfigError):
            emauto.connect(bad)


def test_readme_server_yaml_is_valid(tmp_path: Path) -> None:
    from emauto.drivers.zmq.config import load_server_config

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    section = readme[readme.index("## Driving a real microscope") :]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "server.yaml"
    path.write_text(block)
    config = load_server_config(path)
    assert config.safety.knobs["C10"].max_step == 1e-6
    assert config.safety.watchdog_bound_s == 5.0


def test_bad_limits_are_config_errors(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    with RemoteMicroscope(server.endpoint, timeout_s=5.0) as remote:
        with pytest.raises(ConfigError, match="dose_budget_e"):
            remote.set_limits({"dose_budget_e": -1})
        with pytest.raises(ConfigError, match="inside the hardware limits"):
            remote.set_limits({"knobs": {"C10": {"upper": 1.0}}})


def test_serve_on_a_port_in_use_is_a_clear_error_before_the_backend(
    thread_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from emauto.drivers.zmq.config import ServerConfig
    from emauto.drivers.zmq.serve import make_server
    from emauto.errors import AddressInUseError

    server = thread_server(StaticMicroscope(shape=(8, 8)))
    with pytest.raises(AddressInUseError, match="already in use"):
        make_server(ServerConfig(bind=server.endpoint, backend="sim", sim_uri="sim://?nope=1"))
    # (the bad sim URI proves the backend was never built: the bind is checked first)
    assert main(["serve", "--bind", server.endpoint]) == 2
    assert "already in use" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_security_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    saved = tmp_path / "security.json"
    args = ["bench", "security", "--json", "--messages", "200", "--trials", "1"]
    args += ["--watchdog-trials", "1", "--long-trials", "1", "--big-messages", "0"]
    assert main([*args, "--save", str(saved)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["messages_fuzzed"] == 200 and result["crashes"] == 0
    assert result["backend_calls_from_invalid_input"] == 0
    assert result["duplicate_applications"] == 0
    assert result["watchdog_trips_in_long_acquisitions"] == 0
    assert json.loads(saved.read_text()) == result
