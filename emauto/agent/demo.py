"""`emauto demo`: the whole loop on the built-in twin, as it runs beside a microscope.

1. Start the twin's ZeroMQ server (`emauto serve --backend sim`) in a subprocess on loopback,
   with its safety layer and watchdog, as a microscope PC would run it.
2. Run the daemon's default plan over the wire: detune the probe by random aberrations
   (seeded), align it by BO on probe-shift measurements (`bo`), then acquire a survey image.
   The daemon's web console listens on loopback meanwhile; its address
   (``http://127.0.0.1:PORT``) is printed as soon as it listens (``open_console`` opens it
   in the default browser).
3. Record the session (event-model JSON Lines + Zarr frames), write its report (PNG + HTML)
   and pictures of the first and last Ronchigram and of the survey.
4. Stop the server (the beam is blanked on every exit path) and print a short summary.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from emauto.agent.plans import AlignProbeTask, DaemonConfig, SurveyTask
from emauto.errors import EmautoError
from emauto.io.pictures import save_frame_png
from emauto.version import __version__

DEMO_SPECIMEN = "au_on_carbon"
SERVER_START_TIMEOUT_S = 300.0
#: A hand-off question nobody answers in the console is answered 'abort' after this (s).
HANDOFF_TIMEOUT_S = 120.0


def _say(message: str) -> None:
    print(f"[emauto demo] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(uri: str, sim_uri: str, log: Path) -> subprocess.Popen[bytes]:
    """Start `emauto serve` and wait until it answers (it builds the specimen first)."""
    from emauto.drivers.zmq.client import RemoteMicroscope

    command = [sys.executable, "-m", "emauto", "serve", "--backend", "sim"]
    command += ["--bind", uri, "--sim-uri", sim_uri, "--audit-log", str(log.with_suffix(".jsonl"))]
    with open(log, "wb") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise EmautoError(f"the twin's server exited with {server.returncode}; see {log}")
        try:
            RemoteMicroscope(uri, timeout_s=1.0, retries=0).close(safe=False)
            return server
        except EmautoError:
            if time.monotonic() > deadline:
                server.kill()
                raise EmautoError(
                    f"the twin's server did not answer within {SERVER_START_TIMEOUT_S:g} s"
                ) from None


def _stop_server(server: subprocess.Popen[bytes]) -> int:
    server.terminate()
    try:
        return server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


def _pictures(session_path: Path, out: Path) -> list[str]:
    from emauto.sessions.reader import Session

    session = Session(session_path)
    files = []
    ronchigrams = [s for s in session.acquisitions("align_probe") if s.frame_key]
    named = {"ronchigram_start.png": ronchigrams[0], "ronchigram_end.png": ronchigrams[-1]}
    images = session.acquisitions("survey")
    if images:
        named["survey_adf.png"] = images[-1]
    for name, step in named.items():
        strehl = step.truth()
        title = f"{name.removesuffix('.png').replace('_', ', ')}, Strehl {strehl:.2f}"
        files.append(str(save_frame_png(session.frame(step), out / name, title)))
    return files


def run_demo(
    out_dir: str | Path, seed: int = 0, console_port: int = 0, open_console: bool = False
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; return (and write as ``summary.json``) its summary.

    ``console_port``: the live console's port on 127.0.0.1 (0: a free one; printed)."""
    from emauto.agent.daemon import run_daemon
    from emauto.agent.plans import ConsoleConfig
    from emauto.sessions.reader import Session
    from emauto.sessions.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    session_path = out / f"session-{stamp}-seed{seed}"
    uri = f"tcp://127.0.0.1:{_free_port()}"
    sim_uri = f"sim://?specimen={DEMO_SPECIMEN}&seed={seed}"
    _say(f"starting the twin's server on {uri} ({DEMO_SPECIMEN}; built once, then cached) ...")
    server = _start_server(uri, sim_uri, out / "server.log")
    try:
        config = DaemonConfig(
            microscope=f"{uri}?timeout=30",
            plan=(
                AlignProbeTask(policy="bo", detune=True, seed=seed, max_acquisitions=61),
                SurveyTask(fov_m=16e-9, dwell_s=8e-6),
            ),
            control=f"tcp://127.0.0.1:{_free_port()}",
            sessions=out,
            console=ConsoleConfig(port=console_port),
            handoff_timeout_s=HANDOFF_TIMEOUT_S,  # no one may be watching: do not wait forever
        )
        _say(
            f"daemon: align the probe (BO on probe-shift measurements), then a survey; control on "
            f"{config.control}"
        )
        consoles: list[str] = []

        def on_console(url: str) -> None:
            consoles.append(url)
            _say(f"live console: {url}  (open it in a browser while the plan runs)")
            if open_console:
                import webbrowser

                webbrowser.open(url)

        result = run_daemon(config, session=session_path, on_console=on_console)
    finally:
        code = _stop_server(server)
        _say(f"server stopped (exit {code})")
    png, page = write_report(Session(session_path), out)
    files = [str(png), str(page), *_pictures(session_path, out)]
    align = next((t for t in result.tasks if t.get("kind") == "align_probe"), {})
    summary: dict[str, Any] = {
        "emauto": __version__,
        "seed": seed,
        "exit_status": result.exit_status,
        "microscope_left_safe": result.safe,
        "declared_aligned": align.get("declared_aligned"),  # the policy's own word
        "aligned": align.get("success"),  # the twin's true Strehl >= 0.8 at the end
        "strehl_start": align.get("start_strehl"),
        "strehl_end": align.get("final_strehl"),
        "ronchigrams": align.get("acquisitions"),
        "session": str(session_path),
        "console": consoles[0] if consoles else None,
        "files": files,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
