"""Operator labels from the control socket, `emauto ctl label` and the console's picture:
the patch where the operator points joins the few-shot classifier (real ZeroMQ, a real
HTTP server, the tiny twin)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq

import emauto
from emauto.agent.console import ConsoleServer
from emauto.agent.control import ControlServer, send_command
from emauto.agent.daemon import Daemon
from emauto.agent.plans import DaemonConfig
from emauto.cli import main
from emauto.errors import LabelError
from emauto.microscope import ImageRequest, RasterScan


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"X-Emauto": "1"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def daemon_with_image(tmp_path: Path, tiny_sim_uri: str) -> Daemon:
    """A daemon whose latest frame is a 64 x 64 ADF image of the tiny twin."""
    daemon = Daemon(DaemonConfig(sessions=tmp_path / "sessions"), progress=False)
    scope = emauto.connect(tiny_sim_uri)
    try:
        image = scope.acquire(ImageRequest(detector="adf", scan=RasterScan(shape=(64, 64))))
    finally:
        scope.close()
    daemon.live.publish_frame(image)
    return daemon


def test_a_pixel_of_the_latest_image_is_labelled(daemon_with_image: Daemon) -> None:
    daemon = daemon_with_image
    reply = daemon.handle("label", {"label": "particle", "x_px": 20, "y_px": 40})
    assert reply["label"]["counts"] == {"particle": 1}
    latest = daemon.live.latest()
    assert latest is not None
    assert reply["label"]["electrons_per_pixel"] == pytest.approx(latest.frame.dose_e / 64**2)
    with pytest.raises(emauto.errors.AnalysisError, match="does not fit"):
        daemon.handle("label", {"label": "particle", "x_px": 60, "y_px": 40})
    with pytest.raises(LabelError, match="x_px"):
        daemon.handle("label", {"label": "particle", "x_px": True, "y_px": 40})
    assert daemon.labels.fewshot.counts == {"particle": 1}  # the bad ones changed nothing


def test_no_image_yet_is_a_clear_error(tmp_path: Path) -> None:
    daemon = Daemon(DaemonConfig(sessions=tmp_path), progress=False)
    with pytest.raises(LabelError, match="no image"):
        daemon.handle("label", {"label": "particle", "x_px": 20, "y_px": 20})


def test_labels_over_the_control_socket(daemon_with_image: Daemon) -> None:
    server = ControlServer("tcp://127.0.0.1:0", daemon_with_image.handle)
    address = server._socket.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        reply = send_command(address, "label", payload={"label": "support", "x_px": 32, "y_px": 32})
        assert reply["ok"] and reply["status"]["label"]["counts"] == {"support": 1}
        latest = daemon_with_image.live.latest()
        assert latest is not None
        counts = latest.frame.data[:32, :32].round().astype(int).tolist()  # JSON integers
        reply = send_command(
            address,
            "label",
            payload={"label": "particle", "counts": counts, "electrons_per_pixel": 50.0},
        )
        assert reply["ok"] and reply["status"]["label"]["counts"] == {"particle": 1, "support": 1}
        reply = send_command(address, "label", payload={"label": "x" * 65, "x_px": 32, "y_px": 32})
        assert not reply["ok"] and reply["error"]["type"] == "ProtocolError"
    finally:
        server.close()


def test_ctl_label_needs_a_class_and_a_pixel(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--at X_PX Y_PX"):
        main(["ctl", "label", "particle"])
    with pytest.raises(SystemExit, match="--at is for label"):
        main(["ctl", "status", "--at", "1", "2"])


def test_a_click_on_the_console_picture_labels_that_patch(daemon_with_image: Daemon) -> None:
    server = ConsoleServer(daemon_with_image)
    try:
        latest = daemon_with_image.live.latest()
        assert latest is not None
        click = {"label": "particle", "frame_id": latest.id, "x": 0.5, "y": 0.25}
        code, reply = _post(server.url + "/api/label", {**click, "frame_id": latest.id + 1})
        assert code == 400 and "replaced" in reply["error"]["message"]
        code, reply = _post(server.url + "/api/label", {**click, "x": 1.5})
        assert code == 400 and reply["error"]["type"] == "LabelError"
        code, reply = _post(server.url + "/api/label", click)
        assert code == 200 and reply["status"]["label"]["counts"] == {"particle": 1}
    finally:
        server.close()
