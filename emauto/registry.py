"""Names registered once: name -> ``"module:attribute"`` of what the name stands for.

A registry holds strings, so listing its names (CLI choices, config literals, ``--help``)
imports nothing; `Registry.load` imports the one entry asked for. Every kind of named thing
(each task's policies, microscope URI schemes, ``serve`` backends, scan strategies,
reconstructions, the daemon's plan steps) has exactly one registry; everything else derives
its names from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from emauto.errors import ConfigError


class Registry(Mapping[str, str]):
    """An ordered, read-only map of names to ``"package.module:attribute"`` entry points."""

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        for name, target in entries.items():
            module, _, attribute = target.partition(":")
            if not (name and module and attribute):
                raise ValueError(f"{kind} {name!r}: entry {target!r} is not 'module:attribute'")
        self.kind = kind
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def check(self, name: str) -> str:
        """``name`` if registered; otherwise a `ConfigError` that lists the names."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; expected one of {self.names()}")
        return name

    def load(self, name: str) -> Any:
        """Import and return what ``name`` stands for."""
        module, _, attribute = self._entries[self.check(name)].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self._entries!r})"
