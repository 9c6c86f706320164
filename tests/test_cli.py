"""The `emauto` command: version, demo and the sim benchmark, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import emauto
from emauto.cli import main


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emauto", *args],
        capture_output=True,
        text=True,
        check=False,
        env={"EMAUTO_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"},
        timeout=600,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert emauto.__version__ in capsys.readouterr().out


def test_python_dash_m_emauto_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emauto", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and emauto.__version__ in result.stdout


@pytest.mark.slow
def test_demo_runs_the_whole_loop(tmp_path: Path, specimen_cache: Path) -> None:
    result = run_cli("demo", "--out", str(tmp_path / "demo"), cache=specimen_cache)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["exit_status"] == "success" and summary["microscope_left_safe"] is True
    assert summary["strehl_start"] < 0.1  # detuned by random aberrations
    assert isinstance(summary["aligned"], bool) and summary["ronchigrams"] >= 2
    # the live console's address, printed while the daemon runs the plan
    assert summary["console"].startswith("http://127.0.0.1:")
    assert f"live console: {summary['console']}" in result.stderr
    for name in ("report.png", "ronchigram_start.png", "ronchigram_end.png", "survey_adf.png"):
        data = (tmp_path / "demo" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert "data:image/png;base64," in (tmp_path / "demo" / "report.html").read_text()
    from emauto.sessions import Session

    session = Session(summary["session"])
    assert session.exit_status == "success" and session.tasks() == ["align_probe", "survey"]
    assert session.start["uri"].startswith("tcp://127.0.0.1:")  # over the wire, as at a microscope
    assert session.steps[-1].kind == "safe" and session.steps[-1].data["beam_blanked"] is True


@pytest.mark.slow
def test_bench_sim_json(specimen_cache: Path) -> None:
    result = run_cli("bench", "sim", "--json", "--repeats", "6", cache=specimen_cache)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in ("fast_ronchigram_per_s", "multislice_ronchigram_per_s", "speedup",
                "fast_vs_multislice_rel_error", "adf_image_256_per_s"):  # fmt: skip
        assert figures[key] > 0
    assert figures["fast_vs_multislice_rel_error"] < 0.10


def test_errors_are_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err


def test_estimator_training_from_a_data_config(
    tmp_path: Path,
    specimen_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`emauto train --task ronchigram-estimator --data-config` generates the pairs in memory
    on a Dask LocalCluster and trains; exactly one of --data and --data-config is needed."""
    from emauto.models.estimator import RonchigramEstimator

    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))
    tiny = Path(__file__).parent / "data" / "tiny_carbon.yaml"
    (tmp_path / "data.yaml").write_text(f"samples: 6\nchunk: 3\nspecimen: {tiny}\n")
    (tmp_path / "train.yaml").write_text("epochs: 1\nbatch_size: 2\nwidth: 8\narch: resnet\n")
    out = tmp_path / "estimator.pt"
    base = ["train", "--task", "ronchigram-estimator", "--out", str(out)]
    for extra in ([], ["--data", "x.npz", "--data-config", str(tmp_path / "data.yaml")]):
        assert main([*base, *extra]) != 0
        assert "either --data DATASET.npz or --data-config" in capsys.readouterr().err
    code = main(
        [
            *base,
            "--data-config",
            str(tmp_path / "data.yaml"),
            "--config",
            str(tmp_path / "train.yaml"),
            "--workers",
            "1",
        ]
    )
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["train_samples"] == 5 and figures["generate_seconds"] > 0
    assert RonchigramEstimator.load(out).metadata.arch == "resnet"


# --------------------------------------------------------------------------- Ctrl-C


def interrupt_when(condition, timeout_s: float = 120.0) -> threading.Event:  # type: ignore[no-untyped-def]
    """Send this process SIGINT (what Ctrl-C sends) once ``condition()`` holds; set the
    returned event to stop watching."""
    stop = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not stop.is_set() and time.monotonic() < deadline:
            if condition():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    return stop


def events_in(log: Path) -> int:
    try:
        return log.read_bytes().count(b'["event"')
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("command", ["evaluate", "bench probe-tuning"])
def test_ctrl_c_while_recording_ends_safe_with_one_line_and_an_abort_record(
    tmp_path: Path, tiny_sim_uri: str, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    record = tmp_path / "sessions"
    log = record / "random" / "documents.jsonl"
    stop = interrupt_when(lambda: events_in(log) >= 6)
    try:
        code = main(
            [
                *command.split(),
                "--method",
                "random",
                "--episodes",
                "50",
                "--budget",
                "20",
                "--microscope",
                tiny_sim_uri,
                "--record",
                str(record),
            ]
        )
    finally:
        stop.set()
    err = capsys.readouterr().err
    assert code == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "emauto: interrupted"
    from emauto.sessions import Session

    session = Session(record / "random")
    assert session.complete and session.exit_status == "abort"  # not "success"
    assert session.stop is not None and "KeyboardInterrupt" in session.stop["reason"]
    assert session.steps[-1].kind == "safe" and session.steps[-1].data["beam_blanked"] is True


@pytest.mark.slow
def test_ctrl_c_in_a_real_process_exits_130_without_a_traceback(
    tmp_path: Path, tiny_sim_uri: str, specimen_cache: Path
) -> None:
    """The same, as a user sees it: a real process, a real SIGINT."""
    record = tmp_path / "sessions"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "emauto", "evaluate", "--method", "random"),
            *("--episodes", "50", "--microscope", tiny_sim_uri, "--record", str(record)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EMAUTO_CACHE_DIR": str(specimen_cache)},
    )
    deadline = time.monotonic() + 120
    while events_in(record / "random" / "documents.jsonl") < 4 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "emauto: interrupted"
    from emauto.sessions import Session

    assert Session(record / "random").exit_status == "abort"
