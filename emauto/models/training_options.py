"""The options every training command shares, and their overrides of a training config.

``--seed``, ``--n-envs``, ``--device`` and repeatable ``--hyperparams KEY=VALUE`` override
fields of the task's pydantic training config (a dotted key reaches into a nested model:
``env.max_steps=10``); the result is validated by that config, so an unknown key or a bad
value is a `ConfigError` naming the key, raised before anything trains. ``--tensorboard`` /
``--no-tensorboard``: TensorBoard logs in ``OUT/tensorboard``, on by default when the
``tensorboard`` package is installed. Importing this module imports no torch and no SB3.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from emauto.errors import ConfigError
from emauto.units import validate_model

#: Where TensorBoard logs go, inside a training's output folder.
TENSORBOARD_DIR = "tensorboard"
#: ``--device`` choices (torch's; ``auto``: CUDA when there is one).
DEVICES = ("cpu", "cuda", "auto")

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--seed``, ``--n-envs``, ``--device``, ``--hyperparams`` and ``--tensorboard``."""
    parser.add_argument(
        "--seed", type=int, help="override the training config's seed (default: the config's)"
    )
    parser.add_argument(
        "--n-envs", type=int, help="override n_envs: envs stepped in parallel (RL training)"
    )
    parser.add_argument(
        "--device", choices=DEVICES, help="override the torch device (auto: CUDA if present)"
    )
    parser.add_argument(
        "--hyperparams",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field of the training config, value in YAML (e.g. "
        "learning_rate=1e-4, net_arch=[64,64], env.max_steps=10); repeatable; an unknown "
        "key or a bad value is an error before anything trains",
    )
    parser.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"TensorBoard logs in OUT/{TENSORBOARD_DIR} (default: on when tensorboard is "
        "installed)",
    )


def tensorboard_installed() -> bool:
    """Whether the ``tensorboard`` package can be imported (SB3 needs it to log there)."""
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_wanted(flag: bool | None) -> bool:
    """``--tensorboard`` / ``--no-tensorboard``, or by default: whether it is installed.
    `ConfigError` when asked for and not installed."""
    if flag is None:
        return tensorboard_installed()
    if flag and not tensorboard_installed():
        raise ConfigError("--tensorboard: the tensorboard package is not installed")
    return flag


def tensorboard_log(out: str | Path, flag: bool | None) -> Path | None:
    """The TensorBoard folder of a training written to ``out`` (a folder, or a file whose
    folder is used), or None when TensorBoard is off (see `tensorboard_wanted`)."""
    if not tensorboard_wanted(flag):
        return None
    out = Path(out)
    return (out.parent if out.suffix else out) / TENSORBOARD_DIR


def tensorboard_field(config: BaseModel, flag: bool | None) -> dict[str, bool]:
    """For a config with a ``tensorboard`` field: the override ``--tensorboard`` /
    ``--no-tensorboard`` asks for, else on when installed unless the config file set the
    field itself (``{}``: leave it as the file has it)."""
    if flag is None and "tensorboard" in config.model_fields_set:
        return {}
    return {"tensorboard": tensorboard_wanted(flag)}


def no_tensorboard(flag: bool | None, what: str) -> None:
    """`ConfigError` for ``--tensorboard`` on a training that does not log there (``what``)."""
    if flag:
        raise ConfigError(f"--tensorboard: {what} does not log to TensorBoard")


def parse_hyperparams(items: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "env.b=[2, 3]"]`` -> ``{"a": 1, "env.b": [2, 3]}`` (values read as YAML;
    one that is not YAML stays a string). `ConfigError` for an item without ``=``."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--hyperparams: expected KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        parsed[key] = value
    return parsed


def _check_key(model: type[BaseModel], key: str, flag: str) -> None:
    """`ConfigError` unless ``key`` (dotted) names a field of ``model``."""
    current: type[BaseModel] = model
    parts = key.split(".")
    for index, part in enumerate(parts):
        field = current.model_fields.get(part)
        if field is None:
            where = ".".join(parts[:index]) or current.__name__
            known = ", ".join(current.model_fields)
            raise ConfigError(
                f"{flag}: {key!r}: {where} has no field {part!r} (its fields: {known})"
            )
        if index < len(parts) - 1:
            annotation = field.annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise ConfigError(f"{flag}: {key!r}: {part!r} is a value, not a section")
            current = annotation


def _nest(updates: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in updates.items():
        *sections, last = key.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[last] = value
    return nested


def _merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(
    config: ConfigT,
    *,
    seed: int | None = None,
    n_envs: int | None = None,
    device: str | None = None,
    hyperparams: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> ConfigT:
    """``config`` with the command line's overrides, validated by its own model.

    A flag whose field the config lacks (``--n-envs`` for a model trained without envs), an
    unknown ``--hyperparams`` key or a value the model rejects is a `ConfigError` naming the
    flag and the key. ``extra``: further field overrides (e.g. ``--timesteps``), applied
    before the hyperparameters."""
    model = type(config)
    updates: dict[str, Any] = {}
    for flag, name, value in (("--seed", "seed", seed), ("--n-envs", "n_envs", n_envs),
                              ("--device", "device", device)):  # fmt: skip
        if value is None:
            continue
        if name not in model.model_fields:
            raise ConfigError(f"{flag}: this training ({model.__name__}) has no {name} to set")
        updates[name] = value
    for name, value in (extra or {}).items():
        _check_key(model, name, "override")
        updates[name] = value
    for key, value in parse_hyperparams(hyperparams).items():
        _check_key(model, key, "--hyperparams")
        updates[key] = value
    if not updates:
        return config
    data = _merge(config.model_dump(mode="json"), _nest(updates))
    flags = ", ".join(f"{key}={value!r}" for key, value in updates.items())
    return validate_model(data, model, source=f"the command line's overrides ({flags})")
