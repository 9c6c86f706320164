"""The console's web application: pages, a JSON API and one WebSocket of live updates.

Routes (all under the operator token when one is set):

- ``/``: the page (``static/index.html`` + ``console.js``: plain HTML, no build step);
- ``/ws``: a WebSocket that pushes the daemon's status, the latest frame's number and what is
  new in the curves, knob trajectories and log (`LiveState.since`), about every 20 ms when
  something changed;
- ``/frame/{id}.png``: the latest frame, drawn with its scale bar (`render.render_frame_png`);
- ``GET /api/status``, ``/api/registries`` (plan steps and policies, from the registries),
  ``/api/sessions``; ``POST /api/control/{pause|resume|abort|reset}``, ``/api/answer``,
  ``/api/submit``, ``/api/label`` (``{"label", "frame_id", "x", "y"}``: the class of the
  patch where the operator clicked the picture, ``x``, ``y`` in [0, 1) of its width and
  height; refused when a newer frame has replaced the picture clicked on);
- ``/sessions/{name}/report``: a session's report page (written on first request).

A POST must carry the header ``X-Emauto: 1`` (a cross-site form or fetch cannot add it without
a CORS preflight this app never grants), and a WebSocket's ``Origin`` must be this host's:
another web page open in the operator's browser cannot drive the microscope.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from emauto.agent.console.render import render_frame_png
from emauto.agent.live import LiveState
from emauto.agent.state import CHOICES
from emauto.errors import EmautoError, LabelError

STATIC = Path(__file__).parent / "static"
SESSION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_SESSIONS_LISTED = 200
MAX_BODY_BYTES = 256 * 1024
#: How often the WebSocket looks for news (s).
PUSH_INTERVAL_S = 0.02
COOKIE = "emauto_token"


class ConsoleBackend(Protocol):
    """What the console needs of the daemon (`emauto.agent.daemon.Daemon`)."""

    live: LiveState

    def status(self) -> dict[str, Any]: ...

    def handle(self, command: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]: ...


def _error(exc: BaseException, status: int = 409) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)[:1000]}},
        status_code=status,
    )


class TokenGate:
    """ASGI middleware: with a token, every request shows it (``Authorization: Bearer``, the
    cookie, or ``?token=`` once, which sets the cookie); POSTs carry ``X-Emauto: 1``;
    WebSockets come from this host's page."""

    def __init__(self, app: ASGIApp, token: str | None, secure: bool) -> None:
        self.app = app
        self.token = token
        self.secure = secure

    def _presented(self, scope: Scope) -> tuple[str | None, bool]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:], False
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value, False
        from urllib.parse import parse_qs

        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return query["token"][0], True
        return None, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["type"] == "websocket":
            origin, host = headers.get("origin"), headers.get("host", "")
            if origin is not None and origin.split("://", 1)[-1] != host:
                await send({"type": "websocket.close", "code": 1008})
                return
        elif scope["method"] == "POST" and headers.get("x-emauto") != "1":
            response = JSONResponse(
                {"ok": False, "error": {"type": "Forbidden", "message": "missing X-Emauto: 1"}},
                status_code=403,
            )
            await response(scope, receive, send)
            return
        set_cookie = False
        if self.token is not None:
            presented, from_query = self._presented(scope)
            if presented is None or not hmac.compare_digest(presented, self.token):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                response = JSONResponse(
                    {"ok": False, "error": {"type": "Unauthorized", "message": "token needed"}},
                    status_code=401,
                )
                await response(scope, receive, send)
                return
            set_cookie = from_query and scope["type"] == "http"
        if not set_cookie:
            await self.app(scope, receive, send)
            return
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        if self.secure:
            cookie += "; Secure"

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class FrameCache:
    """The latest frame's PNG, drawn once per frame (thread-safe)."""

    def __init__(self, live: LiveState) -> None:
        self.live = live
        self._lock = threading.Lock()
        self._id = 0
        self._png = b""

    def png(self) -> tuple[int, bytes] | None:
        latest = self.live.latest()
        if latest is None or np_ndim(latest.frame.data) != 2:
            return None
        with self._lock:
            if latest.id != self._id:
                self._png, self._id = render_frame_png(latest.frame, latest.id), latest.id
            return self._id, self._png


def picture_pixel(live: LiveState, payload: Mapping[str, Any]) -> dict[str, float]:
    """``{"x_px", "y_px"}`` of the latest frame for a click at fractions (``x``, ``y``) of
    its picture; `LabelError` when the click is not on the picture of that frame."""
    latest = live.latest()
    frame_id = payload.get("frame_id")
    if latest is None or np_ndim(latest.frame.data) != 2:
        raise LabelError("there is no image to label yet")
    if frame_id != latest.id:
        raise LabelError(
            f"the picture clicked on (frame {frame_id!r}) has been replaced by frame "
            f"{latest.id}; click again"
        )
    ny, nx = latest.frame.data.shape
    pixel = {}
    for key, size in (("x", nx), ("y", ny)):
        value = payload.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise LabelError(f"{key}: expected a fraction of the picture in [0, 1), got {value!r}")
        pixel[f"{key}_px"] = float(int(value * size))
    return pixel


def np_ndim(data: Any) -> int:
    return int(getattr(data, "ndim", 0))


def list_sessions(folder: Path) -> list[dict[str, Any]]:
    """The newest session folders under ``folder``: name, modified time, exit status."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        log = path / "documents.jsonl"
        if path.is_dir() and SESSION_NAME.match(path.name) and log.is_file():
            found.append((log.stat().st_mtime, path))
    found.sort(reverse=True)
    sessions = []
    for mtime, path in found[:MAX_SESSIONS_LISTED]:
        sessions.append(
            {
                "name": path.name,
                "modified": mtime,
                "exit_status": _exit_status(path / "documents.jsonl"),
                "report": f"/sessions/{path.name}/report",
            }
        )
    return sessions


def _exit_status(log: Path) -> str | None:
    """The stop document's exit status (None while running or torn), from the file's tail."""
    try:
        with log.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(size - 8192, 0))
            tail = handle.read().splitlines()
        last = json.loads(tail[-1]) if tail else None
    except (OSError, ValueError):
        return None
    if isinstance(last, list) and len(last) == 2 and last[0] == "stop":
        status = last[1].get("exit_status") if isinstance(last[1], dict) else None
        return str(status) if status is not None else None
    return None


def create_app(
    backend: ConsoleBackend,
    sessions: Path,
    *,
    token: str | None = None,
    secure: bool = False,
    closing: threading.Event | None = None,
) -> ASGIApp:
    """The console for ``backend`` (the daemon), its sessions under ``sessions``; WebSockets
    end once ``closing`` is set."""
    closing = closing or threading.Event()
    frames = FrameCache(backend.live)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def status(request: Request) -> Response:
        return JSONResponse(backend.status())

    async def registries(request: Request) -> Response:
        from emauto.agent.plans import STEP_KINDS
        from emauto.tasks.probe_tuning.policies.registry import METHODS

        return JSONResponse(
            {"tasks": list(STEP_KINDS.names()), "policies": list(METHODS), "answers": CHOICES}
        )

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise EmautoError(f"the request body is over {MAX_BODY_BYTES} bytes")
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise EmautoError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise EmautoError("the request body must be a JSON object")
        return value

    async def command(name: str, payload: Mapping[str, Any] | None) -> Response:
        try:
            result = await asyncio.to_thread(backend.handle, name, payload)
        except EmautoError as exc:
            return _error(exc)
        return JSONResponse({"ok": True, "status": result})

    async def control(request: Request) -> Response:
        name = request.path_params["command"]
        if name not in ("pause", "resume", "abort", "reset"):
            return _error(EmautoError(f"unknown command {name!r}"), 404)
        return await command(name, None)

    async def answer(request: Request) -> Response:
        try:
            payload = await body(request)
        except EmautoError as exc:
            return _error(exc, 400)
        return await command("answer", {"choice": str(payload.get("choice", ""))})

    async def submit(request: Request) -> Response:
        try:
            payload = await body(request)
        except EmautoError as exc:
            return _error(exc, 400)
        return await command(
            "submit", {"name": payload.get("name", "plan"), "plan": payload.get("plan"),
                       "source": "console"}
        )  # fmt: skip

    async def label(request: Request) -> Response:
        try:
            payload = await body(request)
            pixel = picture_pixel(backend.live, payload)
        except EmautoError as exc:
            return _error(exc, 400)
        return await command("label", {"label": payload.get("label"), **pixel})

    async def frame(request: Request) -> Response:
        drawn = await asyncio.to_thread(frames.png)
        if drawn is None:
            return Response(status_code=404)
        frame_id, png = drawn
        return Response(
            png,
            media_type="image/png",
            headers={"Cache-Control": "no-store", "X-Frame-Id": str(frame_id)},
        )

    async def session_list(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(list_sessions, sessions))

    def _report(name: str) -> Path:
        from emauto.sessions.reader import Session
        from emauto.sessions.report import write_report

        folder = sessions / name
        page = folder / "report.html"
        log = folder / "documents.jsonl"
        if not page.is_file() or page.stat().st_mtime < log.stat().st_mtime:
            write_report(Session(folder), folder)
        return page

    async def report(request: Request) -> Response:
        name = request.path_params["name"]
        if not SESSION_NAME.match(name) or not (sessions / name / "documents.jsonl").is_file():
            return _error(EmautoError(f"no session {name[:80]!r}"), 404)
        try:
            page = await asyncio.to_thread(_report, name)
        except EmautoError as exc:
            return _error(exc, 422)
        return FileResponse(page, media_type="text/html")

    async def updates(socket: WebSocket) -> None:
        await socket.accept()
        generation, steps, knobs, lines, version, frame_id = -1, 0, 0, 0, -1, 0
        last_status = ""
        try:
            while not closing.is_set():
                live = backend.live
                try:  # the daemon's threads change what status() reads while it reads it
                    status = backend.status()
                except RuntimeError:  # (a deque or dict changed size): read again
                    await asyncio.sleep(PUSH_INTERVAL_S)
                    continue
                status_text = json.dumps(status, allow_nan=False, sort_keys=True)
                if live.version == version and status_text == last_status:
                    await asyncio.sleep(PUSH_INTERVAL_S)
                    continue
                version, last_status = live.version, status_text
                news = live.since(generation, steps, knobs, lines)
                latest = live.latest()
                message: dict[str, Any] = {"status": status, "frame": None, **news}
                if latest is not None and latest.id != frame_id:
                    frame_id = latest.id
                    message["frame"] = {
                        "id": latest.id,
                        "published": latest.published,
                        "kind": latest.frame.kind,
                    }
                if news["generation"] != generation:  # a new plan: its counts start at 1
                    steps = knobs = 0
                generation = news["generation"]
                steps = news["steps"][-1]["n"] if news["steps"] else steps
                knobs = news["knobs"][-1]["n"] if news["knobs"] else knobs
                lines = news["log"][-1]["n"] if news["log"] else lines
                await socket.send_text(json.dumps(message, allow_nan=False))
            await socket.close(1001)
        except (WebSocketDisconnect, RuntimeError, ConnectionError):
            return

    routes = [
        Route("/", index),
        Route("/api/status", status),
        Route("/api/registries", registries),
        Route("/api/sessions", session_list),
        Route("/api/control/{command}", control, methods=["POST"]),
        Route("/api/answer", answer, methods=["POST"]),
        Route("/api/submit", submit, methods=["POST"]),
        Route("/api/label", label, methods=["POST"]),
        Route("/frame/{frame_id:int}.png", frame),
        Route("/frame/latest.png", frame),
        Route("/sessions/{name}/report", report),
        WebSocketRoute("/ws", updates),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return TokenGate(Starlette(routes=routes), token, secure)
