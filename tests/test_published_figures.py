"""Every published figure traces to a JSON file written by a named command.

For each ``benchmarks/*-latest.json``, README.md or benchmarks/README.md names the command
that writes it (and the command parses, saves to that file and asks for what the JSON
holds); the headline figures quoted in the two READMEs equal the JSON's, rounded as
printed. Reads files and parses command lines only: no benchmark runs here. Edit a figure
in a README without its JSON, or the JSON without the README, and this fails.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from emauto.cli import _parser
from emauto.tasks.probe_tuning.policies.registry import POLICIES as TUNING_POLICIES
from emauto.tasks.region_search.policies import POLICIES
from emauto.tasks.sparse_scan.registry import STATIC_STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
READMES = ("README.md", "benchmarks/README.md")

#: Files with one result, written by ``emauto bench NAME ... --save benchmarks/FILE``.
SAVED = (
    "sim-latest.json",
    "driver-latest.json",
    "analysis-latest.json",
    "fewshot-latest.json",
    "recorder-latest.json",
    "security-latest.json",
    "calibration-latest.json",
    "region-search-latest.json",
)
#: Files with one result per command, each under its command line.
KEYED = ("sparse-scan-latest.json",)
#: Probe-tuning runs, each written by ``emauto bench probe-tuning ... --save benchmarks/FILE``.
PROBE_TUNING = (
    "probe-tuning-latest.json",
    "probe-tuning-measuring-optimisers-latest.json",
    "probe-tuning-au_on_carbon-latest.json",
    "probe-tuning-tenth_dose-latest.json",
    "probe-tuning-unseen-thick_carbon-latest.json",
    "probe-tuning-unseen-noisy_camera-latest.json",
    "probe-tuning-unseen-srtio3_thin-latest.json",
    "probe-tuning-learned-stop-latest.json",
    "probe-tuning-au_on_carbon-learned-stop-latest.json",
    "probe-tuning-au_on_carbon-bo-latest.json",
    "probe-tuning-tenth_dose-learned-stop-latest.json",
    "probe-tuning-tenth_dose-bo-latest.json",
    "probe-tuning-multislice-learned-stop-latest.json",
    "probe-tuning-multislice-hand-built-latest.json",
    "probe-tuning-multislice-bo-latest.json",
    "probe-tuning-unseen-thick_carbon-learned-stop-latest.json",
    "probe-tuning-unseen-noisy_camera-learned-stop-latest.json",
    "probe-tuning-unseen-srtio3_thin-learned-stop-latest.json",
)
#: Robustness-suite runs (`emauto bench robustness ... --save benchmarks/FILE`).
ROBUSTNESS = (
    "robustness-latest.json",
    "robustness-calibrated-latest.json",
    "robustness-calibrated-randomised-latest.json",
)
#: Runs on the abTEM multislice twin (about 1 s a Ronchigram on 2 cores): 30 episodes.
MULTISLICE_EPISODES = 30
#: Files an experiment script prints: ``python benchmarks/experiments/X.py ... > benchmarks/FILE``.
SCRIPTS = (
    "stop-threshold-latest.json",
    "probe-shift-accuracy-latest.json",
    "estimator-rounds-latest.json",
    "batched-twin-latest.json",
    "reference-plane-latest.json",
    "completion-generalisation-latest.json",
)


@cache
def readme(name: str) -> str:
    """A README with every run of whitespace made one space (figures may wrap)."""
    return " ".join((ROOT / name).read_text().split())


def readmes() -> str:
    return " ".join(readme(name) for name in READMES)


@cache
def latest(name: str) -> Any:
    return json.loads((BENCHMARKS / name).read_text())


def fixed(value: float, digits: int) -> str:
    """``value`` rounded half up to ``digits`` decimals, as a person prints it."""
    quantum = Decimal(1).scaleb(-digits)
    return str(Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def pct(fraction: float, digits: int = 1) -> str:
    return fixed(100 * fraction, digits)


def parse(command: str) -> Any:
    """The namespace ``emauto`` parses ``command`` into (it must be an emauto command)."""
    words = shlex.split(command)
    assert words[0] == "emauto", command
    return _parser().parse_args(words[1:])


def named_commands(file: str) -> list[str]:
    """Commands the READMEs give as writing ``benchmarks/FILE``: "`FILE`, written by `CMD`"."""
    pattern = rf"`benchmarks/{re.escape(file)}`, written by `([^`]+)`"
    return re.findall(pattern, readmes())


# --------------------------------------------------------------- which command wrote it


def test_every_latest_json_is_accounted_for() -> None:
    files = sorted(p.name for p in BENCHMARKS.glob("*-latest.json"))
    assert files == sorted([*SAVED, *KEYED, *PROBE_TUNING, *SCRIPTS, *ROBUSTNESS])


@pytest.mark.parametrize("file", SAVED)
def test_a_command_that_saves_it_is_named(file: str) -> None:
    commands = named_commands(file)
    assert len(commands) == 1, f"no (or several) `benchmarks/{file}`, written by `...`"
    args = parse(commands[0])
    assert args.command == "bench" and args.json
    assert args.save == Path("benchmarks") / file
    result = latest(file)
    if file == "sim-latest.json":
        assert args.task == "sim" and args.repeats is None  # the default: 300 fast frames
        assert result["repeats"] == {"fast": 300, "multislice": 5, "adf": 10}
    elif file == "driver-latest.json":
        assert args.task == "driver"
        assert (result["requests"], result["frames"]) == (args.requests, args.frames)
    elif file == "analysis-latest.json":
        assert args.task == "analysis"
        assert (result["seed"], result["images_per_dose"]) == (args.seed, args.images)
    elif file == "fewshot-latest.json":
        assert args.task == "fewshot" and result["episodes"] == args.episodes
        assert sorted(result["shots"]) == sorted(f"{k}_shot" for k in args.shots.split(","))
    elif file == "security-latest.json":
        assert args.task == "security" and result["messages_fuzzed"] >= args.messages
        assert (result["kill_trials"], result["watchdog_trials"]) == (
            args.trials,
            args.watchdog_trials,
        )
    elif file == "recorder-latest.json":
        assert args.task == "recorder" and result["kill_trials"] == args.trials
        assert result["power_cut_trials"] == args.power_cuts
    elif file == "calibration-latest.json":
        assert args.task == "calibration"
        assert (result["seed_set"], result["twins"]) == (args.seeds, args.twins)


@pytest.mark.parametrize("file", KEYED)
def test_each_keyed_result_is_named_with_its_command(file: str) -> None:
    text = readmes()
    assert f"--save benchmarks/{file}" in text
    for command, result in latest(file).items():
        assert f"`{command}`" in text, f"{command!r} is not named in a README"
        args = parse(command)
        assert args.command == "bench" and args.save is None
        for figures in result.values():
            assert figures["coverage"] == args.coverage and figures["dose_e"] == args.dose
        if args.image:  # a file a shipped script writes, named beside the command
            script = re.search(rf"`(benchmarks/experiments/\w+\.py) build/{args.image}`", text)
            assert script, f"no script named that writes {args.image}"
            assert (ROOT / script.group(1)).is_file()
            assert [next(iter(f["per_image"])) for f in result.values()] == [args.image] * len(
                result
            )


def test_region_search_names_its_fields_and_methods() -> None:
    result = latest("region-search-latest.json")
    (command,) = named_commands("region-search-latest.json")
    args = parse(command)
    assert args.method == "all"
    assert result["fields"] == [90_000 + 100 * args.seed + i for i in range(args.episodes)]
    assert sorted(result["methods"]) == sorted(POLICIES.names())


# ----------------------------------------------------------------- the figures quoted


def _sim(d: dict[str, Any]) -> list[tuple[str, str]]:
    fast, speedup = fixed(d["fast_ronchigram_per_s"], 0), fixed(d["speedup"], 1)
    error = pct(d["fast_vs_multislice_rel_error"])
    worst = pct(d["fast_vs_multislice_rel_error_max"])
    adf = fixed(d["adf_image_256_per_s"], 1)
    adf_error = pct(d["adf_fast_vs_multislice_rel_error"])
    shape = pct(d["adf_fast_vs_multislice_shape_error"])
    ratio = fixed(d["adf_fast_vs_multislice_intensity_ratio"], 2)
    return [
        ("README.md", f"{fast} fast Ronchigrams/s, {speedup}x faster"),
        ("README.md", f"{error} % median error; {adf} HAADF 256x256 images/s"),
        ("README.md", f"median of {error} % (max {worst} %)"),
        (
            "README.md",
            f"measured {adf_error} % (shape error {shape} %, the fast signal is {ratio}x",
        ),
        ("benchmarks/README.md", f"| {fast} | >= 1000 |"),
        ("benchmarks/README.md", f"| {fixed(d['multislice_ronchigram_per_s'], 1)} | |"),
        ("benchmarks/README.md", f"| {speedup}x | >= 100x |"),
        ("benchmarks/README.md", f"| {error} % (max {worst} %) | stated bound 10 % |"),
        ("benchmarks/README.md", f"| {adf} | |"),
        ("benchmarks/README.md", f"| {adf_error} % | stated bound 20 % |"),
    ]


def _driver(d: dict[str, Any]) -> list[tuple[str, str]]:
    p50, p99 = fixed(d["rtt_p50_ms"], 2), fixed(d["rtt_p99_ms"], 2)
    fps, overhead = fixed(d["frames_per_s"], 0), fixed(d["overhead_vs_inprocess"], 0)
    return [
        ("README.md", f"p50 {p50} ms, p99 {p99} ms; {fps} frames/s"),
        ("README.md", f"p50 {p50} ms, p99 {p99} ms, {fps} frames/s, {overhead}x the in-process"),
        ("benchmarks/README.md", f"| {p50} | |"),
        ("benchmarks/README.md", f"| {p99} | <= 1 |"),
        ("benchmarks/README.md", f"| {fps} | >= 500 |"),
        ("benchmarks/README.md", f"| {overhead}x | |"),
    ]


def _three_figures(value: float) -> str:
    """A dose to three significant figures with a space between thousands (2 560)."""
    rounded = int(Decimal(str(value)).quantize(Decimal(1)).scaleb(0))
    digits = len(str(rounded))
    rounded = int(round(rounded, 3 - digits)) if digits > 3 else rounded
    return f"{rounded:,}".replace(",", " ")


def _analysis(d: dict[str, Any]) -> list[tuple[str, str]]:
    def dose_row(f: dict[str, Any]) -> str:
        sub = f["sublattices"]
        return (
            f"| {_three_figures(f['dose_e_per_A2'])} | {fixed(f['precision'], 3)} | "
            f"{fixed(f['recall'], 3)} | {fixed(sub['Sr']['recall'], 3)} / "
            f"{fixed(sub['Ti-O']['recall'], 3)} | {fixed(f['rms_error_pm'], 1)} | "
            f"{fixed(f['crb_rms_pm'], 1)} | {fixed(f['error_over_bound'], 2)} | "
            f"{fixed(f['crb_with_jitter_rms_pm'], 1)} | "
            f"{fixed(f['error_over_bound_with_jitter'], 2)} | "
            f"{fixed(f['error_over_reported_sigma_rms'], 2)} | "
            f"{fixed(f['analysis_s_per_image'], 2)} |"
        )

    def structure_row(name: str, f: dict[str, Any]) -> str:
        subs = " / ".join(f"{k} {fixed(v['recall'], 3)}" for k, v in f["sublattices"].items())
        return (
            f"| {name} | {subs} | {fixed(f['precision'], 3)} | {f['basis_named_right']} | "
            f"{fixed(f['analysis_s_per_image'], 2)} |"
        )

    moderate = d["doses"]["dwell_2us"]
    none = d["non_atomic"]
    low, high = none["false_column_image_rate_ci95"]
    return [
        *(("benchmarks/README.md", dose_row(f)) for f in d["doses"].values()),
        *(("benchmarks/README.md", structure_row(n, f)) for n, f in d["structures"].items()),
        (
            "benchmarks/README.md",
            f"columns reported on {round(none['false_column_image_rate'] * none['images'])} of "
            f"{none['images']} images ({pct(none['false_column_image_rate'])} %, 95 % interval "
            f"{pct(low, 0)}-{pct(high, 0)} %), {none['columns_reported']} columns in all",
        ),
        (
            "README.md",
            f"at 2.6e3 e/Å²: recall {pct(moderate['recall'])} %, "
            f"{fixed(moderate['rms_error_pm'], 1)} pm rms against a Cramér-Rao bound of "
            f"{fixed(moderate['crb_rms_pm'], 1)} pm ({fixed(moderate['error_over_bound'], 2)}x",
        ),
        (
            "README.md",
            f"columns on {round(none['false_column_image_rate'] * none['images'])} of "
            f"{none['images']} images without resolved columns",
        ),
    ]


def _fewshot(d: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        (
            "benchmarks/README.md",
            f"| {k.split('_')[0]} | {fixed(f['accuracy'], 3)} | {fixed(f['ece'], 3)} | "
            f"{fixed(f['latency_ms_per_patch'], 2)} | {fixed(f['batched_ms_per_patch'], 2)} |",
        )
        for k, f in d["shots"].items()
    ]
    five = d["shots"]["5_shot"]
    return [
        *rows,
        ("benchmarks/README.md", f"{d['queries']} queries"),
        ("benchmarks/README.md", f"The CNN itself reaches {fixed(d['cnn_accuracy'], 3)}"),
        (
            "benchmarks/README.md",
            # the verdict follows the figures: >= 90 % at < 10 ms a patch
            "**Goal met**"
            if five["accuracy"] >= 0.9 and five["latency_ms_per_patch"] < 10
            else "**Latency met, accuracy not**"
            if five["latency_ms_per_patch"] < 10
            else "**Goal not met**",
        ),
        ("benchmarks/README.md", f"({pct(five['accuracy'])} %)"),
        (
            "README.md",
            f"5-shot {pct(five['accuracy'])} % at {fixed(five['latency_ms_per_patch'], 1)} ms",
        ),
    ]


def _region_search(d: dict[str, Any]) -> list[tuple[str, str]]:
    figures = []
    for m in d["methods"].values():
        found = " | ".join(fixed(m["found_at_area"][a], 2) for a in ("0.1", "0.2", "0.3", "0.5"))
        reached = [a for a in m["area_at_90pct_per_field"] if a is not None]
        if m["area_at_90pct"] is not None:
            area = f"{fixed(m['area_at_90pct'], 2)} ({m['reached_90pct']})"
        elif reached:
            area = f"{fixed(min(reached), 2)}-{fixed(max(reached), 2)} ({m['reached_90pct']})"
        else:
            area = "not reached"
        figures.append(("benchmarks/README.md", f"| {found} | {area} |"))
    survey, dkl = d["methods"]["survey"], d["methods"]["dkl"]
    channelling = d["methods"]["channelling"]
    dkl_areas = [a for a in dkl["area_at_90pct_per_field"] if a is not None]
    return [
        *figures,
        (
            "README.md",
            f"90 % of targets after {pct(channelling['area_at_90pct'], 1)} % of the area and "
            f"{pct(channelling['dose_fraction_at_90pct'], 1)} % of the dose",
        ),
        ("README.md", f"against {pct(survey['area_at_90pct'], 0)} % for the survey heuristic"),
        (
            "README.md",
            f"DKL {pct(min(dkl_areas), 0)}-{pct(max(dkl_areas), 0)} % "
            f"({len(dkl_areas)} of {len(d['fields'])} fields)",
        ),
    ]


REGION_COMMAND = (
    "emauto bench sparse-scan --image twin_au_region.emd --coverage 0.05 --dose 200 --json"
)
STATIC = STATIC_STRATEGIES.names()


def _sparse_scan(d: dict[str, Any]) -> list[tuple[str, str]]:
    figures = []
    for result in d.values():  # every row of every table
        for strategy, f in result.items():
            rms = fixed(f["rms_error_pct"], 2)
            if len(f["per_image"]) > 1:
                rms += (
                    " ("
                    + " / ".join(fixed(i["rms_error_pct"], 2) for i in f["per_image"].values())
                    + ")"
                )
            best = min(f["rms_error_pct_by_reconstruction"].items(), key=lambda kv: kv[1])
            figures.append(
                (
                    "benchmarks/README.md",
                    f"| `{strategy}` | {rms} | {best[0]} {fixed(best[1], 2)} | "
                    f"{fixed(f['ssim'], 3)} | {fixed(f['time_fraction'], 3)} |",
                )
            )
    twins = d["emauto bench sparse-scan --coverage 0.05 --json"]
    sparse = d["emauto bench sparse-scan --coverage 0.01 --json"]
    region = d[REGION_COMMAND]
    best_static = min(STATIC, key=lambda s: region[s]["rms_error_pct"])
    adaptive = region["uncertainty"]["rms_error_pct"]
    gain = pct(1 - adaptive / region[best_static]["rms_error_pct"])
    headline = fixed(twins["uncertainty"]["rms_error_pct"], 2)
    cs = fixed(twins["uncertainty"]["rms_error_pct_by_reconstruction"]["cs"], 2)
    margins = [
        (
            "benchmarks/README.md",
            f"| {coverage} | `{strategy}` | {fixed(m['equal_dose']['margin_pct'], 1)} % "
            f"(`{m['equal_dose']['best_static']}`) | "
            + (
                "none finite"
                if m["equal_time"]["margin_pct"] is None
                else f"{fixed(m['equal_time']['margin_pct'], 1)} %"
            )
            + f" (`{m['equal_time']['best_static']}`) |",
        )
        for coverage, result in (("1/20", twins), ("1/100", sparse))
        for strategy, m in ((s, f["margin"]) for s, f in result.items() if "margin" in f)
    ]
    return [
        *figures,
        *margins,
        (
            "README.md",
            f"{headline} % RMS at 1/20 (adaptive `uncertainty`, `validated` reconstruction; "
            f"`cs` {cs} %)",
        ),
        ("README.md", f"{fixed(sparse['uncertainty']['rms_error_pct'], 2)} % at 1/100"),
        (
            "README.md",
            f"{fixed(adaptive, 2)} % at 1/20 with Poisson noise, {gain} % below the best static",
        ),
        (
            "benchmarks/README.md",
            f"{fixed(adaptive, 2)} % vs {fixed(region[best_static]['rms_error_pct'], 2)} % "
            f"(`{best_static}`), {gain} % lower",
        ),
    ]


def _recorder(d: dict[str, Any]) -> list[tuple[str, str]]:
    def ms(name: str) -> str:
        return f"{fixed(d[name + '_median_ms'], 2)} ms / {fixed(d[name + '_p99_ms'], 2)} ms"

    cut = "power_cut_"
    return [
        ("benchmarks/README.md", f"| {ms('fsync_step')} | |"),
        ("benchmarks/README.md", f"| {ms('fsync_set')} | |"),
        ("benchmarks/README.md", f"| {ms('fsync_acquire')} | |"),
        ("benchmarks/README.md", f"| {fixed(d['raw_fsync_median_ms'], 2)} ms | |"),
        (
            "benchmarks/README.md",
            f"| {d['kill_trials']} / **{d['kill_lost_acknowledged_steps']}** |",
        ),
        (
            "benchmarks/README.md",
            f"| {d[cut + 'trials']} / **{d[cut + 'acknowledged_steps_lost']}** | 0 |",
        ),
        (
            "benchmarks/README.md",
            f"| {d[cut + 'dangling_frames']} / {d[cut + 'sessions_lost']} / "
            f"{d[cut + 'trials_failed']} | 0 |",
        ),
        ("benchmarks/README.md", f"| {d[cut + 'torn_tails_repaired']} | |"),
    ]


def _security(d: dict[str, Any]) -> list[tuple[str, str]]:
    failed = d["applied_states_of_failed_commands"]
    return [
        (
            "benchmarks/README.md",
            f"| {d['messages_fuzzed']:,} / **{d['crashes']}** / "
            f"**{d['backend_calls_from_invalid_input']}** |",
        ),
        (
            "benchmarks/README.md",
            f"| {d['peak_rss_growth_mb_before_large_messages']} MB / "
            f"{d['peak_rss_growth_mb']} MB |",
        ),
        ("benchmarks/README.md", f"| {d['kill_trials']} / **{d['duplicate_applications']}** |"),
        (
            "benchmarks/README.md",
            f"| {d['commands_failed_at_client']}, {d['failed_commands_answered_by_applied']} "
            f"({failed.get('applied', 0)} / {failed.get('interrupted', 0)}) |",
        ),
        (
            "benchmarks/README.md",
            f"| {d['watchdog_trips_within_bound']} of {d['watchdog_trials']} | 100 % |",
        ),
        (
            "benchmarks/README.md",
            f"| {d['watchdog_trips_in_long_acquisitions']} of {d['long_acquisitions']} | 0 % |",
        ),
    ]


FIGURES: dict[str, Callable[[Any], list[tuple[str, str]]]] = {
    "sim-latest.json": _sim,
    "driver-latest.json": _driver,
    "analysis-latest.json": _analysis,
    "fewshot-latest.json": _fewshot,
    "recorder-latest.json": _recorder,
    "security-latest.json": _security,
    "region-search-latest.json": _region_search,
    "sparse-scan-latest.json": _sparse_scan,
}


@pytest.mark.parametrize("file", sorted(FIGURES))
def test_quoted_figures_equal_the_json(file: str) -> None:
    missing = [
        f"{where}: {expected!r}"
        for where, expected in FIGURES[file](latest(file))
        if " ".join(expected.split()) not in readme(where)
    ]
    assert not missing, f"figures of {file} not quoted as the JSON has them:\n" + "\n".join(missing)


@pytest.mark.parametrize("file", PROBE_TUNING)
def test_each_probe_tuning_run_names_the_command_that_saved_it(file: str) -> None:
    commands = named_commands(file)
    assert len(commands) == 1, f"no (or several) `benchmarks/{file}`, written by `...`"
    run = latest(file)
    assert run["command"] == commands[0]
    args = parse(commands[0])
    assert args.task == "probe-tuning" and args.save == Path("benchmarks") / file
    assert args.microscope == run["microscope"]
    first, last = run["seeds"]
    assert (first, last - first + 1) == (args.seed * 100_000, args.episodes)
    methods = list(TUNING_POLICIES) if "all" in args.method else args.method
    assert list(run["methods"]) == methods
    least = MULTISLICE_EPISODES if "fidelity=multislice" in args.microscope else 100
    assert all(f["episodes"] == args.episodes >= least for f in run["methods"].values())


@pytest.mark.parametrize("file", ROBUSTNESS)
def test_each_robustness_run_names_the_command_that_saved_it(file: str) -> None:
    commands = named_commands(file)
    assert len(commands) == 1, f"no (or several) `benchmarks/{file}`, written by `...`"
    run = latest(file)
    assert run["command"] == commands[0]
    args = parse(commands[0])
    assert args.task == "robustness" and args.save == Path("benchmarks") / file
    assert run["seeds"] == [args.seed * 100_000, args.seed * 100_000 + args.episodes - 1]
    assert all(
        list(methods) == args.methods
        and all(f["episodes"] == args.episodes for f in methods.values())
        for methods in run["results"].values()
    )


@pytest.mark.parametrize("file", SCRIPTS)
def test_each_experiment_file_names_its_script(file: str) -> None:
    name = re.escape(file)
    pattern = (
        rf"`benchmarks/{name}`, written by "
        rf"`python (benchmarks/experiments/\S+\.py)[^`]*> benchmarks/{name}`"
    )
    found = re.findall(pattern, readmes())
    assert len(found) == 1, f"no `python benchmarks/experiments/... > benchmarks/{file}`"
    assert (ROOT / found[0]).is_file()


def test_probe_tuning_headline_figures_match_the_json() -> None:
    figures = latest("probe-tuning-latest.json")["methods"]
    shift = figures["shift"]
    low, high = shift["success"]["ci95"]
    text = readmes()
    assert f"aligned in {pct(shift['success']['rate'], 0)} %" in text
    assert f"({pct(low, 0)}-{pct(high, 0)} %" in text
    assert f"{pct(shift['false_done']['rate'], 0)} % false dones" in text
    assert f"`cnn_shift` {pct(figures['cnn_shift']['success']['rate'], 0)} %" in text
    assert f"score {pct(shift['oracle_success']['rate'], 0)} %" in text
    bo = latest("probe-tuning-measuring-optimisers-latest.json")["methods"]["bo"]
    low, high = bo["success"]["ci95"]
    assert f"aligned (Strehl >= 0.8) in {pct(bo['success']['rate'], 0)} % of 100" in text
    assert f"interval {pct(low, 0)}-{pct(high, 0)} %)" in text


# ------------------------------------------------------- figures from shipped model files


def test_training_times_quoted_equal_the_shipped_files_metadata() -> None:
    """Training times are not benchmarks: the README quotes them from the model file."""
    from emauto.models.weights import read_weights_file, shipped_path

    estimator = read_weights_file(
        shipped_path("ronchigram_estimator.pt"), "emauto-ronchigram-estimator/1", "missing"
    )
    validation = json.loads(estimator["metadata"])["validation"]
    text = readme("README.md")
    assert f"`validation.generate_seconds` {validation['generate_seconds']} s" in text
    assert f"`validation.train_seconds` {validation['train_seconds']} s" in text
