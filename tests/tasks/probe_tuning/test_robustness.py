"""`emauto bench robustness`: the probe-tuning bench on perturbed twins, same seeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from emauto import connect
from emauto.cli import _parser, main
from emauto.drivers.sim.perturbations import PERTURBATIONS
from emauto.errors import ConfigError
from emauto.microscope import RonchigramRequest
from emauto.tasks.probe_tuning.bench import run_probe_tuning_benchmark
from emauto.tasks.probe_tuning.policies.registry import METHODS
from emauto.tasks.probe_tuning.robustness import ExcursionTracker, run_robustness_suite


@pytest.fixture(autouse=True)
def _cache(specimen_cache: Path, carbon_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default carbon film, built once in the session's cache."""
    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(specimen_cache))


def test_command_runs_one_perturbation_one_method_two_episodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    saved = tmp_path / "robustness.json"
    code = main(
        [
            "bench", "robustness", "--methods", "shift", "--episodes", "2", "--budget", "4",
            "--perturbation", "c12a_sign_flipped", "--json", "--save", str(saved),
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr()
    suite = json.loads(out.out)
    assert list(suite) == ["c12a_sign_flipped"] and list(suite["c12a_sign_flipped"]) == ["shift"]
    figures = suite["c12a_sign_flipped"]["shift"]
    assert figures["episodes"] == 2 and figures["budget_acquisitions"] == 5
    assert set(figures["success"]) >= {"count", "ci95"}  # the bench's Wilson interval
    assert figures["acquisitions"]["median"] <= 5
    assert "count" in figures["false_done"] and "curve" not in figures
    excursion = figures["knob_excursion_m"]
    assert {"C10", "C12a", "C12b"} <= set(excursion)
    assert all(0 <= v["median"] <= v["max"] for v in excursion.values())
    assert excursion["C10"]["max"] > 0  # shift moves the probe's focus to measure
    assert out.err.count("c12a_sign_flipped: shift episode") == 2  # progress on stderr
    document = json.loads(saved.read_text())
    assert document["results"] == suite
    assert document["seeds"] == [0, 1]
    assert document["perturbations"]["c12a_sign_flipped"]["file"].endswith(
        "configs/robustness/c12a_sign_flipped.yaml"
    )


def test_the_reference_is_the_probe_tuning_bench(one_thread: None) -> None:
    """On ``none`` the suite's figures are the probe-tuning bench's on ``sim://`` (same
    episodes, same scoring), wall time apart."""
    suite = run_robustness_suite(["random"], ["none"], episodes=2, seed=3, budget_steps=3)
    bench = run_probe_tuning_benchmark(["random"], episodes=2, seed=3, budget_steps=3)
    ours, theirs = dict(suite["none"]["random"]), dict(bench["random"])
    for figures in (ours, theirs):
        figures.pop("wall_s_per_episode")
    theirs.pop("curve")
    ours.pop("knob_excursion_m")
    assert ours == theirs


def test_excursion_counts_from_the_first_frame(carbon_uri: str) -> None:
    tracker = ExcursionTracker(connect(carbon_uri))
    tracker.start_episode()
    tracker.set({"C10": 100e-9})  # the env's start: before the first frame, not counted
    tracker.acquire(RonchigramRequest(exposure_s=0.002))
    tracker.set({"C10": 140e-9})
    tracker.set({"C10": 90e-9, "C12a": -3e-9})
    assert tracker.largest(["C10", "C12a", "C12b"]) == pytest.approx(
        {"C10": 40e-9, "C12a": 3e-9, "C12b": 0.0}
    )
    tracker.start_episode()
    assert tracker.largest(["C10"]) == {"C10": 0.0}
    tracker.close()


def test_bad_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown perturbation"):
        run_robustness_suite(["shift"], ["cosmic_rays"], episodes=1)
    with pytest.raises(ConfigError, match="unknown method"):
        run_robustness_suite(["nope"], ["none"], episodes=1)
    with pytest.raises(ConfigError, match="episodes"):
        run_robustness_suite(["shift"], ["none"], episodes=0)
    with pytest.raises(SystemExit):
        main(["bench", "robustness", "--perturbation", "cosmic_rays"])


def test_cli_choices_come_from_the_registries() -> None:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bench = sub.choices["bench"]
    tasks = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    robustness = tasks.choices["robustness"]
    options = {a.dest: a.choices for a in robustness._actions}
    assert list(options["methods"] or []) == list(METHODS)
    assert list(options["perturbation"] or []) == [*PERTURBATIONS, "all"]
