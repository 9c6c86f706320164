"""The wheel: built from the checkout, installed (not editable) in a fresh venv, run from
outside the checkout. It ships every module and its package data (specimen recipes, model
weights), no caches, tests or other checkout files, and `emauto demo` runs from it.

The fresh venv sees the test interpreter's site-packages through a ``.pth`` file, so the
dependencies (torch, abTEM, ...) are not installed again and nothing is downloaded; that
site-packages holds no importable ``emauto`` (an editable install there works through a
``.pth`` of its own, which a plain path entry does not run), and pip installs the wheel with
``--ignore-installed`` so it never touches another environment's copy.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import emauto

ROOT = Path(__file__).resolve().parents[1]
#: Files the build needs besides the package; copied so the build writes nothing here.
_BUILD_FILES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg", "setup.py")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    python: Path
    cwd: Path  # a folder outside the checkout
    env: dict[str, str]  # no PYTHONPATH: the checkout cannot be imported by accident


def _run(
    command: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _shipped_sources() -> set[str]:
    """The files under emauto/ that a wheel must hold: tracked or new, not ignored, present."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "emauto"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode == 0:
        names = listed.stdout.splitlines()
    else:  # not a git checkout: everything but caches
        names = [
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / "emauto").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ]
    return {name for name in names if (ROOT / name).is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, specimen_cache: Path) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    assert not base.resolve().is_relative_to(ROOT), f"{base} is inside the checkout {ROOT}"
    # build from a copy of the checkout: setuptools writes build/ and *.egg-info next to the
    # sources, and a stale build/ would put deleted modules into the wheel
    source = base / "source"
    source.mkdir()
    for name in _BUILD_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "emauto", source / "emauto")  # __pycache__ too: must not ship
    dist = base / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "-q", "-w", dist, source],
        cwd=base,
    )  # fmt: skip
    (wheel,) = dist.glob("emauto-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    purelib = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        .stdout.strip()
    )  # fmt: skip
    # the test interpreter's dependencies (and pip), after the venv's own site-packages
    (purelib / "_emauto_test_dependencies.pth").write_text(
        "".join(f"{path}\n" for path in site.getsitepackages())
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }
    env.update(
        PYTHONNOUSERSITE="1",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        EMAUTO_CACHE_DIR=str(specimen_cache),
    )
    cwd = base / "elsewhere"
    cwd.mkdir()
    _run(
        [python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel],
        cwd=cwd,
        env=env,
    )
    return Installed(wheel=wheel, venv=venv, python=python, cwd=cwd, env=env)


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_its_data_only(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = archive.namelist()
    dist_info = f"emauto-{emauto.__version__}.dist-info/"
    outside = [n for n in names if not n.startswith(("emauto/", dist_info))]
    assert not outside, f"the wheel holds files outside the package: {outside}"
    caches = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert not caches, f"the wheel holds caches: {caches}"
    assert not [n for n in names if str(ROOT) in n]
    shipped = {n for n in names if n.startswith("emauto/")}
    missing = sorted(_shipped_sources() - shipped)
    assert not missing, f"missing from the wheel (pyproject's package-data?): {missing}"
    extra = sorted(shipped - _shipped_sources())
    assert not extra, f"in the wheel but not in the checkout: {extra}"
    for data in ("emauto/drivers/sim/recipes/au_on_carbon.yaml",
                 "emauto/tasks/sparse_scan/recipes/srtio3_seed1.yaml",
                 "emauto/models/weights/ronchigram_estimator.pt",
                 "emauto/models/weights/probe_tuning_ppo/policy.pt"):  # fmt: skip
        assert data in shipped


@pytest.mark.slow
def test_the_installed_package_is_imported_and_finds_its_data(installed: Installed) -> None:
    script = (
        "import json, emauto\n"
        "from emauto.bench.sim import ADF_REFERENCE\n"
        "from emauto.drivers.sim.specimens import builtin_recipes\n"
        "from emauto.models.weights import shipped_path\n"
        "print(json.dumps({'file': emauto.__file__, 'adf_reference': ADF_REFERENCE.is_file(),\n"
        "    'recipes': builtin_recipes(),\n"
        "    'estimator': shipped_path('ronchigram_estimator.pt').is_file()}))\n"
    )
    result = _run([installed.python, "-c", script], cwd=installed.cwd, env=installed.env)
    found = json.loads(result.stdout)
    module = Path(found["file"]).resolve()
    assert module.is_relative_to(installed.venv.resolve()), module
    assert not module.is_relative_to(ROOT), f"imported the checkout: {module}"
    assert found["adf_reference"] and found["estimator"]
    assert {"amorphous_carbon", "au_on_carbon", "srtio3"} <= set(found["recipes"])


@pytest.mark.slow
def test_the_installed_demo_runs_end_to_end(installed: Installed) -> None:
    out = installed.cwd / "demo"
    result = subprocess.run(
        [installed.venv / "bin" / "emauto", "demo", "--out", out],
        cwd=installed.cwd,
        env=installed.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout)
    assert summary["exit_status"] == "success", summary
    assert summary["microscope_left_safe"] is True, summary
    assert all(Path(name).is_file() for name in summary["files"])
