"""The console in a real browser (headless Chromium, Playwright): it loads, the frame updates
live, the buttons pause, resume and abort, a hand-off is answered, and a screenshot is checked."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pytest
from console_helpers import SURVEY, VIEWPORT, align
from PIL import Image

from emauto.agent.daemon import Daemon
from emauto.agent.state import State
from emauto.sessions import Session

TIMEOUT_MS = 60_000


def frame_id(page: Any) -> int:
    return int(page.get_attribute("#frame-id", "data-frame-id") or 0)


def wait_state(page: Any, state: str) -> None:
    page.wait_for_selector(f'#state[data-state="{state}"]', timeout=TIMEOUT_MS)


def test_the_console_loads_updates_live_and_its_screenshot_shows_the_frame(
    console_daemon: Daemon, page: Any
) -> None:
    page.goto(console_daemon.console_url)
    wait_state(page, "idle")
    assert page.title() == "emauto console"
    page.wait_for_function("document.querySelectorAll('#submit-policy option').length > 3")
    policies = page.eval_on_selector_all("#submit-policy option", "o => o.map(e => e.value)")
    assert {"shift", "bo", "handoff"} <= set(policies)  # offered from the registry
    # queue a plan from the page's form: the shift policy, 9 frames, detuned first
    page.select_option("#submit-kind", "align_probe")
    page.select_option("#submit-policy", "shift")
    page.fill("#submit-frames", "9")
    page.check("#submit-detune")
    page.click("#submit")
    page.wait_for_function("Number(document.querySelector('#frame-id').dataset.frameId) >= 1",
                           timeout=TIMEOUT_MS)  # fmt: skip
    first = frame_id(page)
    page.wait_for_function(
        f"Number(document.querySelector('#frame-id').dataset.frameId) > {first}",
        timeout=TIMEOUT_MS,
    )
    assert frame_id(page) > first  # live: a newer frame was drawn without a reload
    painted = page.evaluate("window.__painted")
    assert [p[0] for p in painted] == sorted(p[0] for p in painted)
    shot = Image.open(io.BytesIO(page.screenshot()))
    assert shot.size == (VIEWPORT["width"], VIEWPORT["height"])
    frame = np.asarray(Image.open(io.BytesIO(page.locator("#frame").screenshot())).convert("L"))
    assert abs(frame.shape[0] - 384) <= 1 and abs(frame.shape[1] - 384) <= 1  # CSS px rounding
    assert frame.std() > 10  # not blank: a Ronchigram, its scale bar and its label
    assert frame[-30:-14, 10:40].max() > 200  # the white scale bar, bottom left
    assert page.locator("#knob-plots canvas").count() >= 1  # the aberrations moved
    wait_state(page, "idle")
    assert page.locator("#history-list li").count() == 1
    assert "success" in page.inner_text("#history-list")
    page.click("#sessions-refresh")
    page.wait_for_selector("#session-list a", timeout=TIMEOUT_MS)
    report = page.get_attribute("#session-list a", "href")
    assert report is not None and report.endswith("/report")
    response = page.request.get(console_daemon.console_url + report)
    assert response.ok and "<img" in response.text()
    assert "plan 1" in page.inner_text("#log-lines")
    # a second plan: its curves start over and reach the page too
    console_daemon.submit({"name": "again", "plan": [align(5)]})
    page.wait_for_function("document.querySelectorAll('#history-list li').length === 2",
                           timeout=TIMEOUT_MS)  # fmt: skip
    page.wait_for_function("window.__console.steps.length >= 1", timeout=5_000)
    shown = page.evaluate("window.__console")
    assert shown["generation"] == 2 and shown["steps"][0]["n"] == 1
    assert all(p["knobs"] for p in shown["knobs"])


def test_pause_resume_and_abort_from_the_buttons(console_daemon: Daemon, page: Any) -> None:
    page.goto(console_daemon.console_url)
    wait_state(page, "idle")
    console_daemon.submit({"name": "long", "plan": [align(500)]})
    page.wait_for_function("Number(document.querySelector('#frame-id').dataset.frameId) >= 2",
                           timeout=TIMEOUT_MS)  # fmt: skip
    page.click("#pause")
    wait_state(page, "paused")
    assert console_daemon.machine.state == State.PAUSED
    time.sleep(0.5)  # the command in flight when the pause came ends first
    done = console_daemon.status()["progress"]["done"]
    time.sleep(0.4)
    assert console_daemon.status()["progress"]["done"] == done  # nothing acquired while paused
    assert page.is_disabled("#pause") and page.is_enabled("#resume")
    page.click("#resume")
    wait_state(page, "running")
    page.click("#abort")
    wait_state(page, "idle")
    page.wait_for_function(  # the finished-plan list follows the state over the WebSocket
        "document.querySelector('#history-list').innerText.includes('abort')", timeout=TIMEOUT_MS
    )
    assert "abort" in page.inner_text("#history-list")
    session = Session(console_daemon.history[-1]["session"])
    assert session.exit_status == "abort"
    assert session.steps[-1].kind == "safe" and session.steps[-1].data["beam_blanked"] is True


def test_a_hand_off_is_answered_in_the_browser(
    console_daemon: Daemon, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handoff_policy_helper import GivesUp

    import emauto.tasks.probe_tuning.policies.registry as registry

    monkeypatch.setattr(registry, "make_policy", lambda *a, **k: GivesUp())
    page.goto(console_daemon.console_url)
    wait_state(page, "idle")
    console_daemon.submit({"name": "asks", "plan": [align(13), SURVEY]})
    page.wait_for_selector("#question:not([hidden])", timeout=TIMEOUT_MS)
    assert "without declaring the probe aligned" in page.inner_text("#question-text")
    assert page.is_disabled("#resume")  # the question is answered, not resumed
    page.click("#answer-approve")
    wait_state(page, "idle")
    assert page.is_hidden("#question")
    session = Session(console_daemon.history[-1]["session"])
    assert session.exit_status == "success" and session.tasks() == ["align_probe", "survey"]
    assert [(e["kind"], e["choice"]) for e in session.operator] == [
        ("question", ""),
        ("answer", "approve"),
    ]


def test_the_latency_bench_reports_median_and_p90(browser: Any, tiny_sim_uri: str) -> None:
    from emauto.agent.console.bench import run_console_benchmark

    figures = run_console_benchmark(
        tiny_sim_uri, frames=10, rate_hz=10.0, distinct=2, browser=browser
    )
    assert figures["drawn"] + figures["skipped"] == 10 - figures["warm_up_frames"]
    latency = figures["latency_ms"]
    assert 0 < latency["min"] <= latency["median"] <= latency["p90"] <= latency["max"]
    assert figures["browser"].startswith("chromium")
