"""The architecture holds: layers and task independence (import-linter), no import cycle
(imports inside functions included), and every name registered once (CLI choices and config
literals come from the registries; no module restates a registry's names)."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

from emauto.agent.plans import STEP_KINDS, DaemonConfig
from emauto.cli import COMMAND_MODULES, _parser
from emauto.cli.agent import EXPORTERS
from emauto.drivers import SCHEMES
from emauto.drivers.vendors import BACKENDS
from emauto.drivers.zmq.config import ServerConfig
from emauto.registry import Registry
from emauto.tasks import ENVS
from emauto.tasks.probe_tuning.plan import AlignProbeTask
from emauto.tasks.probe_tuning.policies.registry import POLICIES as TUNING_POLICIES
from emauto.tasks.region_search.policies import POLICIES as REGION_POLICIES
from emauto.tasks.sparse_scan.registry import (
    ADAPTIVE_STRATEGIES,
    RECONSTRUCTIONS,
    STATIC_STRATEGIES,
    STRATEGIES,
)

PACKAGE = Path(__file__).resolve().parents[1] / "emauto"
REGISTRIES = {
    "emauto/tasks/__init__.py": ENVS,
    "emauto/tasks/probe_tuning/policies/registry.py": TUNING_POLICIES,
    "emauto/tasks/region_search/policies/__init__.py": REGION_POLICIES,
    "emauto/tasks/sparse_scan/registry.py": STRATEGIES,
    "emauto/drivers/__init__.py": SCHEMES,
    "emauto/drivers/vendors/__init__.py": BACKENDS,
    "emauto/agent/plans.py": STEP_KINDS,
    "emauto/cli/agent.py": EXPORTERS,
}


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint)], cwd=PACKAGE.parent, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_not_even_through_imports_inside_functions() -> None:
    graph = grimp.build_graph("emauto", include_external_packages=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    assert _cycles(graph) == [["a.b", "a.c"]]


def _choices(parser: argparse.ArgumentParser, *path: str, option: str) -> list[str]:
    """The ``choices`` of ``option`` in the subcommand at ``path``."""
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    action = next(a for a in parser._actions if option in a.option_strings or a.dest == option)
    assert action.choices is not None
    return list(action.choices)


def test_cli_choices_come_from_the_registries() -> None:
    parser = _parser()
    methods = TUNING_POLICIES.names()
    assert _choices(parser, "bench", "probe-tuning", option="--method") == [*methods, "all"]
    assert _choices(parser, "evaluate", option="--method") == list(methods)
    assert _choices(parser, "replay", option="--policy") == list(methods)
    region = REGION_POLICIES.names()
    assert _choices(parser, "bench", "region-search", option="--method") == [*region, "all"]
    assert _choices(parser, "bench", "sparse-scan", option="--strategies") == list(STRATEGIES)
    assert _choices(parser, "scan", option="--strategy") == list(STRATEGIES)
    assert _choices(parser, "scan", option="--reconstruction") == list(RECONSTRUCTIONS)
    assert _choices(parser, "serve", option="--backend") == list(BACKENDS)
    assert _choices(parser, "export", option="--format") == list(EXPORTERS)


def test_config_literals_come_from_the_registries() -> None:
    policy = AlignProbeTask.model_json_schema()["properties"]["policy"]
    assert policy["enum"] == list(TUNING_POLICIES)
    backend = ServerConfig.model_json_schema()["properties"]["backend"]
    assert backend["enum"] == list(BACKENDS)
    kinds = DaemonConfig.model_json_schema()["$defs"]
    assert {d["properties"]["kind"]["const"] for d in kinds.values() if "kind" in d.get(
        "properties", {})} == set(STEP_KINDS)  # fmt: skip
    assert set(STRATEGIES) == {*STATIC_STRATEGIES, *ADAPTIVE_STRATEGIES}


def test_every_registry_entry_loads() -> None:
    for registry in (*REGISTRIES.values(), RECONSTRUCTIONS, STATIC_STRATEGIES):
        for name in registry:
            if registry is BACKENDS and name != "sim":
                continue  # the vendor adapters need their vendor's optional packages
            assert registry.load(name) is not None, (registry.kind, name)


def test_every_command_module_adds_commands_and_benchmarks() -> None:
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        assert callable(module.add_commands) and callable(module.add_bench), name


def _string_collections(tree: ast.AST) -> Iterator[tuple[int, set[str]]]:
    """Every tuple, list or set literal of two or more strings, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and len(node.elts) >= 2:
            values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if len(values) == len(node.elts) and all(isinstance(v, str) for v in values):
                yield node.lineno, set(values)


def restated_names(source: str, registries: list[Registry]) -> list[str]:
    """Collections in ``source`` made only of names of one registry: three or more of them,
    or all of a smaller registry's."""
    found = []
    for line, values in _string_collections(ast.parse(source)):
        for registry in registries:
            hits = values & set(registry)
            if hits == values and (len(hits) >= 3 or hits == set(registry)):
                found.append(f"line {line}: {sorted(hits)} ({registry.kind})")
    return found


def test_no_module_restates_a_registry() -> None:
    registries = [*REGISTRIES.values(), RECONSTRUCTIONS]
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for problem in restated_names(path.read_text(encoding="utf-8"), registries):
            problems.append(f"{path.relative_to(PACKAGE.parent)} {problem}")
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        'METHODS = ("shift", "cnn", "rl")',
        'choices = ["raster", "spiral", "lissajous"]',
        'if name in {"sim", "tcp", "replay"}: pass',
    ],
)
def test_the_restatement_check_finds_a_copied_list(source: str) -> None:
    registries = [*REGISTRIES.values(), RECONSTRUCTIONS]
    assert restated_names(source, registries)
