"""CURVE: the allow-list, agent vs operator roles, wrong, missing and revoked keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from emauto.bench.driver import StaticMicroscope
from emauto.drivers.zmq.auth import KeyRing, create_client_keys, create_server_keys
from emauto.drivers.zmq.client import RemoteMicroscope
from emauto.drivers.zmq.config import ServerConfig, check_bind, is_loopback
from emauto.errors import AuthError, DeadlineExceededError, PermissionDeniedError


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    create_server_keys(folder)
    create_client_keys(folder, "agent1", "agent")
    create_client_keys(folder, "agent2", "agent")
    create_client_keys(folder, "op1", "operator")
    return folder


def client(keys: Path, name: str, endpoint: str, **kwargs: Any) -> RemoteMicroscope:
    secret = keys / "clients" / f"{name}.key_secret"
    return RemoteMicroscope(endpoint, curve=(secret, keys / "server.key"), **kwargs)


@pytest.fixture
def curve_server(keys: Path, thread_server: Any) -> Any:
    return thread_server(StaticMicroscope(shape=(8, 8)), keys=KeyRing(keys))


def test_agent_may_drive_but_not_change_limits(keys: Path, curve_server: Any) -> None:
    with client(keys, "agent1", curve_server.endpoint, timeout_s=5.0) as agent:
        assert agent.hello["role"] == "agent"
        assert "set_limits" not in agent.hello["ops"]
        agent.set({"C10": 1e-9})
        with pytest.raises(PermissionDeniedError, match="operator key"):
            agent.set_limits({"dose_budget_e": 1.0})
        with pytest.raises(PermissionDeniedError):
            agent.reset_watchdog()
    with client(keys, "op1", curve_server.endpoint, timeout_s=5.0) as operator:
        assert operator.hello["role"] == "operator"
        status = operator.set_limits({"dose_budget_e": 1e12})
        assert status["dose_budget_e"] == 1e12
    rejected = [r for r in curve_server.scope.audit.records if r["outcome"] == "rejected"]
    assert [r["command"] for r in rejected] == ["set_limits", "reset_watchdog"]


def refused(make: Any, server: Any) -> None:
    before = list(server.ops)
    with pytest.raises(DeadlineExceededError, match=r"CURVE|no reply"):
        make()
    assert server.ops == before  # no message reached the handler


def test_wrong_key_is_refused(keys: Path, tmp_path: Path, curve_server: Any) -> None:
    stranger = tmp_path / "other"
    create_client_keys(stranger, "mallory", "agent")  # a valid key pair, not on this allow-list
    secret = stranger / "clients" / "mallory.key_secret"
    endpoint = curve_server.endpoint
    refused(
        lambda: RemoteMicroscope(
            endpoint, curve=(secret, keys / "server.key"), timeout_s=0.5, retries=0
        ),
        curve_server,
    )
    # the right client key against the wrong server key
    refused(
        lambda: RemoteMicroscope(
            endpoint,
            curve=(keys / "clients" / "agent1.key_secret", stranger / "server.key"),
            timeout_s=0.5,
            retries=0,
        ),
        curve_server,
    )


def test_missing_key_is_refused(curve_server: Any) -> None:
    endpoint = curve_server.endpoint
    refused(lambda: RemoteMicroscope(endpoint, timeout_s=0.5, retries=0), curve_server)
    # the error says that the server may want keys, and how to give them
    with pytest.raises(DeadlineExceededError, match=r"may require CURVE keys.*key="):
        RemoteMicroscope(endpoint, timeout_s=0.5, retries=0)


def test_revoked_key_is_refused(keys: Path, curve_server: Any) -> None:
    with client(keys, "agent2", curve_server.endpoint, timeout_s=5.0) as agent:
        agent.read()
    (keys / "agents" / "agent2.key").unlink()
    time.sleep(1.2)  # the server rereads the allow-list at most every 0.5 s
    refused(
        lambda: client(keys, "agent2", curve_server.endpoint, timeout_s=0.5, retries=0),
        curve_server,
    )
    with client(keys, "agent1", curve_server.endpoint, timeout_s=5.0) as agent:
        agent.read()  # the others still work


def test_unusable_key_files_are_auth_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key_secret"
    bad.write_text("not a key")
    with pytest.raises(AuthError):
        RemoteMicroscope("tcp://127.0.0.1:1", curve=(bad, bad), timeout_s=0.1, retries=0)


def test_wide_bind_needs_keys_and_allow_list(keys: Path, tmp_path: Path) -> None:
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://[::1]:5555")
    assert is_loopback("tcp://localhost:5555") and not is_loopback("tcp://0.0.0.0:5555")
    assert not is_loopback("tcp://192.168.1.10:5555") and not is_loopback("tcp://*:5555")
    check_bind(ServerConfig(bind="tcp://127.0.0.1:5555"))
    with pytest.raises(AuthError, match="needs CURVE keys"):
        check_bind(ServerConfig(bind="tcp://0.0.0.0:5555"))
    empty = tmp_path / "empty"
    create_server_keys(empty)
    with pytest.raises(AuthError, match="allow-list"):
        check_bind(ServerConfig(bind="tcp://0.0.0.0:5555", keys_dir=empty))
    check_bind(ServerConfig(bind="tcp://0.0.0.0:5555", keys_dir=keys))
