"""Shared basics: physical constants (SI) and the strict pydantic base of every config.

Every configuration model and every validated file format derives from `StrictModel`:
unknown fields are errors, instances are frozen, and NaN or infinity is rejected. YAML
files are read with `load_yaml`, which names the file and the bad field on failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from scipy import constants

from emauto.errors import ConfigError

#: Elementary charge (C): electrons = current (A) x time (s) / ELECTRON_CHARGE_C.
ELECTRON_CHARGE_C: float = constants.e
#: Electron rest mass (kg).
ELECTRON_MASS_KG: float = constants.m_e
#: Planck constant (J s).
PLANCK_J_S: float = constants.h
#: Speed of light in vacuum (m/s).
SPEED_OF_LIGHT_M_S: float = constants.c

#: The configuration of `StrictModel`, for models that must add to it.
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown fields, is frozen and rejects NaN/inf."""

    model_config = STRICT


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_yaml(path: str | Path, model: type[ModelT]) -> ModelT:
    """Load and validate a YAML file; errors name the file and the bad field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate_model(raw if raw is not None else {}, model, source=str(path))


def validate_model(data: Any, model: type[ModelT], *, source: str) -> ModelT:
    """Validate ``data`` into ``model``; a failure becomes one readable `ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            problems.append(f"  {where}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigError(f"{source}: invalid {model.__name__}:\n" + "\n".join(problems)) from exc
