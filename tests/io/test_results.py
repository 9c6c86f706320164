"""Command results: `save` (plain, or keyed by command) and `command_line`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emauto.io.results import command_line, save


def test_save_writes_the_result(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "x-latest.json"
    save({"a": 1.5}, out)
    assert json.loads(out.read_text()) == {"a": 1.5} and out.read_text().endswith("}\n")
    save({"a": 1.5}, None)  # no --save: nothing written, nothing raised


def test_keyed_save_keeps_the_other_commands(tmp_path: Path) -> None:
    out = tmp_path / "keyed.json"
    save({"x": 1}, out, key="emauto bench a")
    save({"x": 2}, out, key="emauto bench b")
    save({"x": 3}, out, key="emauto bench a")  # a re-run replaces its own entry only
    assert json.loads(out.read_text()) == {"emauto bench a": {"x": 3}, "emauto bench b": {"x": 2}}
    out.write_text("[1, 2]")
    with pytest.raises(ValueError, match="keyed by command"):
        save({"x": 1}, out, key="emauto bench a")


def test_command_line_drops_only_save() -> None:
    argv = ["bench", "sparse-scan", "--coverage", "0.05", "--save", "f.json", "--json"]
    assert command_line(argv) == "emauto bench sparse-scan --coverage 0.05 --json"
    assert command_line(["bench", "sim", "--save=f.json"]) == "emauto bench sim"
