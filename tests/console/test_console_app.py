"""The console without a browser: who may connect, and the frame's picture."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import emauto
from emauto.agent.console import ConsoleServer
from emauto.agent.console.render import nice_length, render_frame_png, scale_label
from emauto.agent.daemon import Daemon
from emauto.agent.plans import ConsoleConfig, DaemonConfig
from emauto.errors import ConsoleSecurityError
from emauto.microscope import ImageRequest, RasterScan, RonchigramRequest

TOKEN = "a-long-operator-token-0123456789"


def get(url: str, **headers: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("console", "missing"),
    [
        ({"host": "0.0.0.0"}, "without TLS .* and an operator token"),
        ({"host": "0.0.0.0", "token_file": "TOKEN"}, "without TLS"),
        ({"host": "0.0.0.0", "tls_cert": "c.pem", "tls_key": "k.pem"}, "operator token"),
        ({"tls_cert": "c.pem"}, "both tls_cert and tls_key"),
    ],
)
def test_a_console_beyond_loopback_refuses_to_start_without_tls_and_a_token(
    tmp_path: Path, console: dict[str, Any], missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMAUTO_CONSOLE_TOKEN", raising=False)
    (tmp_path / "TOKEN").write_text(TOKEN)
    for key in ("token_file", "tls_cert", "tls_key"):
        if key in console:
            console[key] = str(tmp_path / console[key])
    config = DaemonConfig(console=ConsoleConfig.model_validate(console), sessions=tmp_path)
    with pytest.raises(ConsoleSecurityError, match=missing):
        ConsoleServer(Daemon(config))


def test_with_a_token_every_request_shows_it_and_posts_need_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAUTO_CONSOLE_TOKEN", TOKEN)
    daemon = Daemon(DaemonConfig(sessions=tmp_path))
    server = ConsoleServer(daemon)
    try:
        url = server.url
        assert url.startswith("http://127.0.0.1:")
        assert get(url + "/api/status")[0] == 401
        assert get(url + "/api/status", Authorization="Bearer wrong-token-wrong-token")[0] == 401
        code, body = get(url + "/api/status", Authorization=f"Bearer {TOKEN}")
        assert code == 200 and json.loads(body)["state"] == "idle"
        code, _ = get(url + f"/?token={TOKEN}")
        assert code == 200
        auth = {"Authorization": f"Bearer {TOKEN}"}
        code, reply = post(url + "/api/control/pause", {}, **auth)
        assert code == 403  # no X-Emauto header: a cross-site form cannot send one
        code, reply = post(url + "/api/control/pause", {}, **auth, **{"X-Emauto": "1"})
        assert code == 409 and reply["error"]["type"] == "AgentStateError"  # idle: nothing
        code, reply = post(
            url + "/api/submit", {"plan": [{"kind": "dance"}]}, **auth, **{"X-Emauto": "1"}
        )
        assert code == 409 and reply["error"]["type"] == "ConfigError"
        assert get(url + "/frame/latest.png", **auth)[0] == 404  # no frame yet
        assert get(url + "/sessions/..%2Fetc/report", **auth)[0] == 404
    finally:
        server.close()


def test_frames_are_drawn_with_a_scale_bar_in_their_units(tiny_sim_uri: str) -> None:
    assert nice_length(0.73e-9) == 0.5e-9 and nice_length(23e-3) == 20e-3
    assert scale_label(2e-9, "m") == "2 nm" and scale_label(0.02, "rad") == "20 mrad"
    assert scale_label(5e-6, "m") == "5 µm"
    scope = emauto.connect(tiny_sim_uri)
    try:
        ronchigram = scope.acquire(RonchigramRequest(exposure_s=1e-3))
        scope.set({"scan_fov": 2e-9})
        image = scope.acquire(ImageRequest(detector="adf", scan=RasterScan(shape=(32, 32))))
    finally:
        scope.close()
    for frame in (ronchigram, image):
        picture = np.asarray(Image.open(io.BytesIO(render_frame_png(frame, 7))).convert("L"))
        assert picture.shape == (384, 384)
        bar = picture[-22:-16, 12:]
        white = int((bar > 250).all(axis=0).sum())
        assert 20 < white < 200  # a bar about a quarter of the width
