"""`emauto bench sparse-scan`, `emauto scan`: as a user runs them, on files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emauto.cli import main


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["bench", "sparse-scan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_on_a_user_file(
    tmp_path: Path, smooth_image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.npy"
    np.save(path, 5.0 + 100.0 * smooth_image)  # any units: normalised by the benchmark
    result = _bench(
        capsys,
        "--image", str(path),
        "--coverage", "0.05",
        "--dose", "1000",
        "--strategies", "raster", "random", "spiral", "uncertainty",
        "--reconstruction", "linear",
        "--reconstructions", "linear", "tv",
        "--out", str(tmp_path / "pictures"),
    )  # fmt: skip
    assert sorted(result) == ["random", "raster", "spiral", "uncertainty"]
    for name, figures in result.items():
        assert figures["reconstruction"] == "linear"
        # a smooth image: points spread over the field recover it well, a spiral's 20-pixel
        # arm spacing (on 64 x 64 pixels) much less so
        assert 0 < figures["rms_error_pct"] < (15 if name == "spiral" else 5)
        error = figures["rms_error_pct"] / 100
        assert figures["psnr_db"] == pytest.approx(-20 * np.log10(error), abs=0.01)
        assert 0 < figures["ssim"] <= 1
        assert figures["dose_fraction"] == pytest.approx(0.05, abs=1e-3)
        assert 0.04 < figures["scan_time_fraction"] < 1
        # the computing between an adaptive scan's batches is charged on top, nothing else
        image = figures["per_image"]["mine.npy"]
        assert (figures["time_fraction"] > figures["scan_time_fraction"]) == (name == "uncertainty")
        assert image["batches"] == (5 if name == "uncertainty" else 1)
        assert image["time_fraction"] * image["time_s"] > 0
        assert set(figures["rms_error_pct_by_reconstruction"]) == {"linear", "tv"}
        assert figures["per_image"]["mine.npy"]["positions"] == round(0.05 * 64 * 64)
    assert (tmp_path / "pictures" / "sparse_scan_mine.png").is_file()


def test_bench_saves_each_result_under_its_command(
    tmp_path: Path, smooth_image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    image, saved = tmp_path / "mine.npy", tmp_path / "sparse-scan-latest.json"
    np.save(image, smooth_image)
    common = ["bench", "sparse-scan", "--image", str(image), "--strategies", "jittered"]
    common += ["--reconstruction", "linear", "--reconstructions", "linear", "--json"]
    printed = {}
    for coverage in ("0.1", "0.2"):
        assert main([*common[:2], "--coverage", coverage, *common[2:], "--save", str(saved)]) == 0
        printed[coverage] = json.loads(capsys.readouterr().out)
    document = json.loads(saved.read_text())
    assert list(document) == [
        f"emauto bench sparse-scan --coverage {c} {' '.join(common[2:])}" for c in ("0.1", "0.2")
    ]  # the command as typed, less --save; the earlier entry kept
    assert list(document.values()) == [printed["0.1"], printed["0.2"]]


def test_noise_at_low_dose_costs_accuracy(
    tmp_path: Path, smooth_image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.npy"
    np.save(path, smooth_image)
    common = ["--image", str(path), "--coverage", "0.1", "--strategies", "jittered"]
    common += ["--reconstruction", "linear", "--reconstructions", "linear"]
    clean = _bench(capsys, *common)["jittered"]["rms_error_pct"]
    noisy = _bench(capsys, *common, "--dose", "20")["jittered"]["rms_error_pct"]
    assert noisy > 2 * clean


@pytest.mark.parametrize("coverage", ["0", "1.5", "-0.2", "abc"])
def test_bench_refuses_coverage_outside_unit_interval(
    coverage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "sparse-scan", "--coverage", coverage, "--json"])
    assert exit_info.value.code == 2
    assert "coverage" in capsys.readouterr().err or "fraction" in capsys.readouterr().err


def test_bench_refuses_unreadable_and_non_2d_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((4, 16, 16)))
    assert (
        main(["bench", "sparse-scan", "--image", str(tmp_path / "cube.npy"), "--coverage", "0.1"])
        == 2
    )
    assert "expected a 2-D image" in capsys.readouterr().err
    (tmp_path / "x.tif").write_bytes(b"not a tiff")
    assert (
        main(["bench", "sparse-scan", "--image", str(tmp_path / "x.tif"), "--coverage", "0.1"]) == 2
    )
    assert "cannot read it as a .tif image" in capsys.readouterr().err


def test_scan_on_the_twin_writes_png_and_array(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scan"
    args = ["scan", "--microscope", "sim://?specimen=srtio3&effects=none", "--coverage", "0.1"]
    args += ["--strategy", "line_hop", "--size", "64", "--fov", "2e-9"]
    assert main([*args, "--reconstruction", "linear", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    image = np.load(out / "reconstruction.npy")
    assert image.shape == (64, 64)
    assert (out / "reconstruction.png").is_file()
    assert summary["positions"] == np.load(out / "mask.npy").sum() == round(0.1 * 64 * 64)
    assert summary["dose_e"] > 0 and summary["backend_duration_s"] > 0
    assert summary["strategy"] == "line_hop"


def test_adaptive_scan_is_charged_its_computing_between_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scan"
    args = ["scan", "--microscope", "sim://?specimen=srtio3&effects=none", "--coverage", "0.1"]
    args += ["--strategy", "uncertainty", "--size", "64", "--fov", "2e-9"]
    assert main([*args, "--reconstruction", "linear", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["acquisitions"] == 5  # the initial grid and four batches
    assert summary["compute_s"] > 0
    full = summary["model_time_s"] / summary["scan_time_fraction"]
    assert summary["time_fraction"] == pytest.approx(
        (summary["model_time_s"] + summary["compute_s"]) / full
    )
