"""The documentation builds with every warning an error, and its examples run.

`mkdocs build --strict` (mkdocs.yml: the guides in docs/, the worked examples in
docs/examples/, an API reference from the docstrings) runs into a temporary folder; it is
skipped, saying why, when MkDocs, Material or mkdocstrings is not installed (`pip install -e
'.[dev]'`). Every page with Python code (docs/index.md and docs/examples/*.md) has its
```python blocks run in order as one script, in a subprocess in a fresh folder with a
timeout, so the docs cannot rot.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.md"))
PAGES_WITH_CODE = [DOCS / "index.md", *EXAMPLES]
#: The packages the API reference documents, one page each (docs/api/NAME.md).
API_PAGES = {
    "microscope": "emauto.microscope",
    "optics": "emauto.optics",
    "drivers": "emauto.drivers",
    "wrappers": "emauto.wrappers",
    "sessions": "emauto.sessions",
    "probe_tuning": "emauto.tasks.probe_tuning",
    "sparse_scan": "emauto.tasks.sparse_scan",
    "region_search": "emauto.tasks.region_search",
    "analysis": "emauto.analysis",
    "agent": "emauto.agent",
    "models": "emauto.models",
    "io": "emauto.io",
}
MKDOCS_BUILD = (sys.executable, "-m", "mkdocs", "build", "--strict")
BUILD_TIMEOUT_S = 300
EXAMPLE_TIMEOUT_S = 300
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


#: What the build needs: module -> the package that installs it.
BUILD_NEEDS = {
    "mkdocs": "mkdocs",
    "material": "mkdocs-material",
    "mkdocstrings": "mkdocstrings",
    "mkdocstrings_handlers": "mkdocstrings-python",
}


def _needs_mkdocs() -> None:
    missing = [
        pkg for module, pkg in BUILD_NEEDS.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        pytest.skip(
            f"the docs build needs {', '.join(missing)} (pip install -e '.[dev]'): not installed"
        )


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MKDOCS_BUILD, "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's end-of-life banner
    )


def python_blocks(page: Path) -> list[str]:
    """The page's ```python blocks, in order."""
    return PYTHON_BLOCK.findall(page.read_text())


@pytest.mark.slow  # about 20 s on 2 shared cores
def test_the_docs_build_strict_with_an_api_page_per_package(tmp_path: Path) -> None:
    _needs_mkdocs()
    site = tmp_path / "site"
    started = time.perf_counter()
    built = _mkdocs_build(ROOT / "mkdocs.yml", site)
    seconds = time.perf_counter() - started
    assert built.returncode == 0, built.stderr[-4000:]
    print(f"mkdocs build --strict: {seconds:.1f} s")
    for page, package in API_PAGES.items():
        html = (site / "api" / page / "index.html").read_text()
        assert f'id="{package}"' in html, f"api/{page}.md does not document {package}"
    reference = (site / "api" / "microscope" / "index.html").read_text()
    assert 'id="emauto.microscope.Microscope"' in reference
    assert "absolute setpoints" in reference  # a docstring, rendered
    for example in EXAMPLES:
        assert (site / "examples" / example.stem / "index.html").is_file()


def test_every_docs_page_and_example_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    listed: set[str] = set()

    def walk(items: object) -> None:
        if isinstance(items, list):
            for item in items:
                walk(item)
        elif isinstance(items, dict):
            for value in items.values():
                walk(value)
        elif isinstance(items, str):
            listed.add(items)

    walk(config["nav"])
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == listed
    assert {f"api/{page}.md" for page in API_PAGES} <= listed
    assert len(EXAMPLES) >= 3


def test_a_warning_fails_the_strict_build(tmp_path: Path) -> None:
    """The same Markdown and mkdocstrings settings as mkdocs.yml: a broken link, or an API
    reference to an object that does not exist, fails the build instead of warning."""
    _needs_mkdocs()
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (plugin,) = (p["mkdocstrings"] for p in config["plugins"] if isinstance(p, dict))
    handler = plugin["handlers"]["python"]
    handler["paths"] = [str(ROOT)]
    for broken in ("[a page](no-such-page.md)", "::: emauto.no_such_module"):
        docs = tmp_path / "docs"
        docs.mkdir(exist_ok=True)
        (docs / "index.md").write_text(f"# Broken\n\n{broken}\n")
        small = {**config, "docs_dir": str(docs), "nav": [{"Home": "index.md"}]}
        path = tmp_path / "mkdocs.yml"
        path.write_text(yaml.safe_dump(small))
        built = _mkdocs_build(path, tmp_path / "site")
        assert built.returncode != 0, f"{broken!r} did not fail the strict build"


@pytest.mark.slow  # 10-20 s each on 2 shared cores
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_docs_python_blocks_run(
    page: Path, tmp_path: Path, carbon_uri: str, specimen_cache: Path
) -> None:
    """The page's Python, as a reader would paste it, in a fresh folder (the twin's default
    specimen comes from the test session's cache, built once by ``carbon_uri``)."""
    blocks = python_blocks(page)
    assert blocks, f"{page.name} has no ```python block"
    script = tmp_path / "example.py"
    script.write_text("\n\n".join(blocks))
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "EMAUTO_CACHE_DIR": str(specimen_cache),
        "MPLBACKEND": "Agg",
    }
    started = time.perf_counter()
    # its own process group: a server the example started goes too, however the run ends
    script_run = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = script_run.communicate(timeout=EXAMPLE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(script_run.pid, signal.SIGKILL)
        stdout, stderr = script_run.communicate()
        pytest.fail(
            f"{page.name} ran past {EXAMPLE_TIMEOUT_S} s:\n{stdout[-3000:]}\n{stderr[-3000:]}"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script_run.pid, signal.SIGKILL)
    seconds = time.perf_counter() - started
    assert script_run.returncode == 0, f"{page.name}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    print(f"{page.name}: {seconds:.1f} s\n{stdout}")
