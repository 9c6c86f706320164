"""On-the-fly analysis: atom columns, lattice, resolution, drift, the CLI.

Reading image files (and their pixel size) is tested in ``tests/io/test_images.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import emauto
from emauto.analysis.analyze import analyze_image
from emauto.analysis.atoms import find_atom_columns
from emauto.analysis.drift import measure_drift
from emauto.analysis.lattice import find_lattice
from emauto.analysis.resolution import estimate_resolution
from emauto.bench.analysis import (
    OXYGEN,
    cation_columns_px,
    columns_px,
    drop_found_on,
    match,
    settle_stage,
)
from emauto.cli import main
from emauto.errors import AnalysisError, NoLatticeError
from emauto.microscope import ImageRequest, RasterScan

DATA = Path(__file__).parents[1] / "data"


def lattice_image(
    shape: tuple[int, int] = (96, 96),
    spacing_px: float = 8.3,
    angle_rad: float = 0.3,
    sigma_px: float = 1.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian columns on a square lattice (x, y known to sub-pixel), light noise."""
    ny, nx = shape
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    a1, a2 = spacing_px * np.array([c, s]), spacing_px * np.array([-s, c])
    n = int(max(shape) / spacing_px) + 3
    ij = np.array([(i, j) for i in range(-n, n + 1) for j in range(-n, n + 1)], dtype=float)
    points = np.array([nx / 2 + 0.37, ny / 2 - 0.21]) + ij[:, :1] * a1 + ij[:, 1:] * a2
    points = points[(points[:, 0] > -5) & (points[:, 0] < nx + 5)]
    points = points[(points[:, 1] > -5) & (points[:, 1] < ny + 5)]
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = np.zeros(shape)
    for x, y in points:
        image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_px**2))
    rng = np.random.default_rng(seed)
    inside = (points[:, 0] >= 0) & (points[:, 0] <= nx - 1)
    inside &= (points[:, 1] >= 0) & (points[:, 1] <= ny - 1)
    return image + 0.02 * rng.normal(size=shape), points[inside]


def test_atoms_subpixel_on_a_known_lattice() -> None:
    image, truth = lattice_image()
    found = find_atom_columns(image, 0.36 * 8.3).xy_px
    tp, n_found, n_truth, errors = match(found, truth, 2.0, 3.0, image.shape)
    assert tp == n_truth == n_found
    assert float(np.sqrt(np.mean(errors**2))) < 0.1  # pixels


def test_lattice_spacing_and_orientation() -> None:
    image, _ = lattice_image(spacing_px=8.3, angle_rad=0.3)
    lattice = find_lattice(image)
    assert lattice.spacings_px == pytest.approx((8.3, 8.3), rel=0.03)
    angles = sorted(a % (math.pi / 2) for a in lattice.angles_rad)
    # y points down in the image: a lattice rotated by +0.3 rad appears at -0.3 rad (mod pi/2)
    assert angles[0] == pytest.approx((-0.3) % (math.pi / 2), abs=0.03)


def test_no_lattice_is_a_clear_error_and_analysis_goes_on() -> None:
    noise = np.random.default_rng(1).poisson(5.0, size=(64, 64)).astype(float)
    with pytest.raises(NoLatticeError, match="no lattice"):
        find_lattice(noise)
    result = analyze_image(noise)
    assert result.lattice is None and not result.resolved and result.atoms_xy_px == []
    assert "no lattice" in result.evidence["reason"]
    assert "no resolved atomic columns" in result.notes[0]


def test_resolution_follows_the_blur() -> None:
    sharp, _ = lattice_image(sigma_px=1.0, spacing_px=4.3)
    blurred, _ = lattice_image(sigma_px=2.5, spacing_px=4.3)
    assert estimate_resolution(sharp).resolution_px < estimate_resolution(blurred).resolution_px


def test_drift_recovers_a_known_shift() -> None:
    image, _ = lattice_image(shape=(96, 96), spacing_px=9.1, angle_rad=0.1)
    moved = np.roll(image, (2, -3), axis=(0, 1))
    drift = measure_drift(image, moved, pixel_m=1e-11, dt_s=2.0)
    assert drift.shift_px == pytest.approx((-3.0, 2.0), abs=0.05)
    assert drift.velocity_m_per_s == pytest.approx((-1.5e-11, 1e-11), abs=1e-12)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((64, 64)), np.ones((5, 5)), np.ones((4, 64, 64)), np.full((32, 32), np.nan)],
)
def test_bad_images_raise_analysis_error(bad: np.ndarray) -> None:
    with pytest.raises(AnalysisError, match="expected"):
        analyze_image(bad)


@pytest.fixture(scope="module")
def srtio3_frame(specimen_cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A twin HAADF image of SrTiO3, its cation columns and its O columns in pixels."""
    scope = emauto.connect(
        f"sim://?specimen={DATA / 'small_srtio3.yaml'}&seed=2&effects=poisson",
        cache_dir=specimen_cache,
    )
    scope.set({"scan_fov": 2.5e-9, "stage_x": 0.4e-9, "stage_y": 0.9e-9})
    settle_stage(scope)
    frame = scope.acquire(ImageRequest(scan=RasterScan(shape=(80, 80)), dwell_s=16e-6))
    knobs = frame.state.knobs
    return (
        frame.data,
        cation_columns_px(scope, knobs, (80, 80)),
        columns_px(scope, knobs, (80, 80), OXYGEN),
    )


def test_atom_columns_on_the_twin_match_ground_truth(
    srtio3_frame: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Cation columns found (O columns, visible at this dose in the average cell, are real
    columns: found ones are not scored), the cell and the A/B sublattices."""
    image, truth, oxygen = srtio3_frame
    result = analyze_image(image, pixel_m=2.5e-9 / 80)
    found = np.asarray(result.atoms_xy_px)
    found = found[drop_found_on(found, oxygen, truth, 70 / 31.25)]
    tp, n_found, n_truth, errors = match(found, truth, 70 / 31.25, 3.0, image.shape)
    assert tp >= 0.97 * n_truth and tp >= 0.97 * n_found
    assert float(np.sqrt(np.mean(errors**2))) * 31.25 < 10.0  # pm
    assert result.lattice is not None
    assert result.lattice["cell_m"] == pytest.approx([3.905e-10] * 2, rel=0.01)
    assert "centred" in result.lattice["basis"] or "4-site" in result.lattice["basis"]
    names = [s["name"] for s in result.sublattices]
    assert names[:2] == ["A", "B"]
    assert 0.25 < result.sublattices[1]["relative_intensity"] < 0.6  # Ti-O against Sr


def test_cli_analyze_prints_json_and_writes_the_overlay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, truth = lattice_image()
    np.save(tmp_path / "frame.npy", image)
    assert main(["analyze", str(tmp_path / "frame.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(len(p) == 2 for p in out["atoms_xy_px"])
    found = np.asarray(out["atoms_xy_px"])
    tp, n_found, n_truth, _ = match(found, truth, 2.0, 3.0, image.shape)
    assert tp == n_truth == n_found
    assert out["lattice"]["spacings_px"][0] == pytest.approx(8.3, rel=0.03)
    assert "resolution_px" in out["resolution"]
    assert (tmp_path / "frame_overlay.png").stat().st_size > 0
    (tmp_path / "bad.emd").write_bytes(b"\x00" * 64)
    assert main(["analyze", str(tmp_path / "bad.emd")]) == 2
    assert "bad.emd: cannot read it as a .emd image" in capsys.readouterr().err
