"""`emauto daemon`, `ctl`, `replay`, `report` and `export` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emauto.cli import main


def test_daemon_command_runs_a_plan_from_yaml(tmp_path: Path, tiny_sim_uri: str) -> None:
    config = tmp_path / "daemon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "microscope": tiny_sim_uri,
                "control": "tcp://127.0.0.1:0",
                "plan": [
                    {"kind": "align_probe", "detune": True, "max_acquisitions": 7},
                    {"kind": "acquire_image", "shape": [16, 16], "fov_m": 1e-9},
                ],
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "emauto", "daemon", "--once", "--config", str(config),
         "--session", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["exit_status"] == "success" and outcome["safe"] is True
    assert "align_probe (shift)" in result.stderr  # progress on stderr


def test_ctl_without_a_daemon_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ctl", "status", "--control", "tcp://127.0.0.1:1", "--timeout", "0.3"]) != 0
    assert "is it running?" in capsys.readouterr().err


def test_replay_report_and_export_commands(
    recorded_session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(recorded_session)]) == 0
    assert json.loads(capsys.readouterr().out)["align_probe"]["identical"] is True
    assert main(["report", str(recorded_session), "--out", str(tmp_path / "r")]) == 0
    assert json.loads(capsys.readouterr().out)["exit_status"] == "success"
    assert (tmp_path / "r" / "report.html").is_file()
    assert main(["export", str(recorded_session), "--format", "hdf5", "--out",
                 str(tmp_path / "e")]) == 0  # fmt: skip
    written = json.loads(capsys.readouterr().out)["written"]
    assert all(Path(p).suffix == ".hspy" and Path(p).is_file() for p in written)


def test_commands_on_a_corrupt_session_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "documents.jsonl").write_text("garbage\n")
    result = subprocess.run(
        [sys.executable, "-m", "emauto", "report", str(tmp_path / "bad")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "SessionCorruptError" in result.stderr or "must be 'start'" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_aborts_the_daemon_and_it_ends_safe(tmp_path: Path, tiny_sim_uri: str) -> None:
    import signal
    import time

    from emauto.sessions import Session

    config = tmp_path / "daemon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "microscope": tiny_sim_uri,
                "control": "tcp://127.0.0.1:0",
                "plan": [{"kind": "align_probe", "detune": True, "max_acquisitions": 5000}],
            }
        )
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "emauto", "daemon", "--once", "--config", str(config),
         "--session", str(tmp_path / "s")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while (
        not (tmp_path / "s" / "frames.zarr").is_dir()
        or len(list((tmp_path / "s" / "frames.zarr").iterdir())) < 4
    ):
        assert time.monotonic() < deadline and daemon.poll() is None
        time.sleep(0.1)
    daemon.send_signal(signal.SIGTERM)
    out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 2, err  # aborted
    assert json.loads(out)["exit_status"] == "abort"
    session = Session(tmp_path / "s")
    assert session.exit_status == "abort"
    assert session.steps[-1].kind == "safe" and session.steps[-1].data["beam_blanked"] is True
