"""`emauto bench console`: from an acquisition to its pixels on the operator's screen.

Frames reach the daemon's live tap (`LiveMicroscope`) at a fixed rate (10 frames/s by
default) and the daemon's console serves them to headless Chromium, driven by Playwright.
``source="replay"`` (the default) acquires ``distinct`` Ronchigrams from the twin first and
hands them to the tap in turn at the rate, as a microscope PC would deliver them (the twin's
own compute, slower than 10 frames/s on a loaded 2-core machine, is `emauto bench sim`'s
subject); ``source="live"`` acquires each frame in the loop, so the twin's compute competes
with the console for the CPU. The page records, for each frame it draws, the frame's id and
the time its pixels were handed to the screen (after the PNG is decoded and swapped in, at
the next animation frame: ``window.__painted``). The latency of a frame is that time minus the time
the acquisition returned. The browser's clock is calibrated against Python's in the same run
(``clock_offset_ms``). Frames that a newer one overtook before they were drawn are counted
as ``skipped``: the console always shows the newest frame, never a queue of old ones.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
GOAL_MS = 250.0
WARM_UP = 5


def _browser_clock_offset_ms(page: Any) -> float:
    """Browser wall clock minus Python's (ms), from the midpoint of a round trip."""
    offsets = []
    for _ in range(5):
        before = time.time() * 1e3
        browser = float(page.evaluate("performance.timeOrigin + performance.now()"))
        after = time.time() * 1e3
        offsets.append(browser - (before + after) / 2)
    return float(statistics.median(offsets))


def run_console_benchmark(
    microscope: str = "sim://",
    frames: int = 60,
    rate_hz: float = 10.0,
    chromium: str = CHROMIUM,
    seed: int = 0,
    source: str = "replay",
    distinct: int = 8,
    browser: Any = None,
) -> dict[str, Any]:
    """Measure acquisition-to-screen latency of the console (ms): median, p90, max.

    ``browser``: a Playwright browser already launched (else Chromium at ``chromium``)."""
    import contextlib

    from playwright.sync_api import sync_playwright

    import emauto
    from emauto.agent.console import ConsoleServer
    from emauto.agent.console.render import render_frame_png
    from emauto.agent.daemon import Daemon
    from emauto.agent.live import LiveMicroscope
    from emauto.agent.plans import DaemonConfig
    from emauto.microscope import RonchigramRequest

    if not WARM_UP < frames <= 10_000 or not 0 < rate_hz <= 100:
        raise ValueError(
            f"expected {WARM_UP + 1}-10000 frames at 0-100 Hz, got {frames} at {rate_hz}"
        )
    if source not in ("replay", "live"):
        raise ValueError(f"source is 'replay' or 'live', got {source!r}")
    if browser is None and not Path(chromium).is_file():
        raise FileNotFoundError(f"no Chromium at {chromium}: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as folder:
        daemon = Daemon(DaemonConfig(sessions=Path(folder)), progress=False)
        console = ConsoleServer(daemon)
        backend = emauto.connect(microscope if "seed=" in microscope else _seeded(microscope, seed))
        scope = LiveMicroscope(backend, daemon.live)
        published: dict[int, float] = {}
        acquire_ms: list[float] = []
        recorded = []
        try:
            if source == "replay":  # distinct frames: defocus steps of 20 nm
                for index in range(distinct):
                    backend.set({"C10": (index - distinct / 2) * 20e-9})
                    tic = time.perf_counter()
                    recorded.append(backend.acquire(RonchigramRequest(exposure_s=1e-3)))
                    acquire_ms.append((time.perf_counter() - tic) * 1e3)
            with contextlib.ExitStack() as stack:
                if browser is None:
                    playwright = stack.enter_context(sync_playwright())
                    browser = playwright.chromium.launch(
                        executable_path=chromium, args=CHROMIUM_ARGS
                    )
                    stack.callback(browser.close)
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                stack.callback(context.close)
                page = context.new_page()
                page.goto(console.url)
                page.wait_for_function(
                    "document.querySelector('#connection').textContent === 'live'"
                )
                offset_start = _browser_clock_offset_ms(page)
                period = 1.0 / rate_hz
                started = time.perf_counter()
                for index in range(frames):
                    due = started + index * period
                    time.sleep(max(due - time.perf_counter(), 0.0))
                    if recorded:
                        daemon.live.publish_frame(recorded[index % len(recorded)])
                    else:
                        tic = time.perf_counter()
                        scope.acquire(RonchigramRequest(exposure_s=1e-3))
                        acquire_ms.append((time.perf_counter() - tic) * 1e3)
                    latest = daemon.live.latest()
                    assert latest is not None
                    published[latest.id] = latest.published * 1e3
                elapsed = time.perf_counter() - started
                last = max(published)
                page.wait_for_function(
                    f"window.__painted.length && window.__painted.at(-1)[0] >= {last}",
                    timeout=10_000,
                )
                painted = page.evaluate("window.__painted")
                offset_end = _browser_clock_offset_ms(page)
                version = browser.version
            latest = daemon.live.latest()
            assert latest is not None
            tic = time.perf_counter()
            render_frame_png(latest.frame, latest.id)
            render_ms = (time.perf_counter() - tic) * 1e3
        finally:
            backend.close()
            console.close()
    offset = (offset_start + offset_end) / 2
    latencies = [
        t - offset - published[int(i)]
        for i, t in painted
        if int(i) in published and int(i) > WARM_UP
    ]
    if not latencies:
        raise RuntimeError("no frame was drawn after the warm-up")
    counted = [i for i in published if i > WARM_UP]
    return {
        "benchmark": "console",
        "microscope": microscope,
        "source": source,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "frames": frames,
        "rate_hz_target": rate_hz,
        "rate_hz_achieved": round(frames / elapsed, 2),
        "warm_up_frames": WARM_UP,
        "drawn": len(latencies),
        "skipped": len(counted) - len(latencies),
        "latency_ms": {
            "median": round(float(np.median(latencies)), 1),
            "p90": round(float(np.percentile(latencies, 90)), 1),
            "max": round(float(np.max(latencies)), 1),
            "min": round(float(np.min(latencies)), 1),
        },
        "goal_ms": GOAL_MS,
        "meets_goal": bool(np.percentile(latencies, 90) <= GOAL_MS),
        "acquire_ms_median": round(float(np.median(acquire_ms)), 1),
        "render_png_ms": round(render_ms, 1),
        "clock_offset_ms": round(offset, 2),
        "clock_drift_ms": round(offset_end - offset_start, 2),
        "browser": f"chromium {version}",
    }


def _seeded(uri: str, seed: int) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}seed={seed}"
