"""Perturbed twins: one imperfection of a real instrument at a time, by name.

Each name in `PERTURBATIONS` is one file ``configs/robustness/NAME.yaml``: a partial
`SimConfig` (the fields it changes, nothing else), so a perturbed twin is also
``sim://?config=configs/robustness/NAME.yaml``. ``none`` changes nothing: the reference on
the same seeds. `perturbed_config` lays a perturbation over any base configuration (the
robustness suite's default twin, or a training twin that randomises over them).

Names are registered here once; the files, the CLI's choices and the tests derive from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.uri import specimen_beside
from emauto.errors import ConfigError
from emauto.units import validate_model

#: name -> what the perturbation does (its file: ``configs/robustness/NAME.yaml``).
PERTURBATIONS: dict[str, str] = {
    "none": "no perturbation: the twin as benchmarked (the reference on the same seeds)",
    "camera_rotated": "Ronchigram camera turned 5 degrees from the corrector's axes",
    "camera_scale_error": "the camera's mrad/pixel reported 10 % larger than it is",
    "aperture_off_centre": "probe-forming aperture 3 mrad off the optic axis (10 % of 30 mrad)",
    "contrast_10x_lower": "a tenth of the Ronchigram's contrast, the rest a flat background",
    "contrast_100x_lower": "a hundredth of the Ronchigram's contrast, the rest flat",
    "detector_noise": "camera dark offset of 100 counts and 10 counts rms read noise (20x)",
    "gain_nonuniform": "camera pixel gains 10 % rms non-uniform (4 px correlation)",
    "specimen_coarse": "coarser texture: 2.5-4.5 nm Au particles on the carbon film",
    "specimen_crystalline": "a crystal: SrTiO3 [001], 6 nm thick",
    "c12a_sign_flipped": "corrector axis C12a with the wrong sign in the driver's calibration",
    "lens_lag_10x_slower": "lens time constant 10x the default (0.2 s)",
    "drift_10x_faster": "specimen drift 10x the default (50 pm/s)",
}


def perturbation_dir() -> Path:
    """``configs/robustness`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[3] / "configs" / "robustness"


def perturbation_path(name: str, directory: str | Path | None = None) -> Path:
    """The YAML file of a registered perturbation (in ``directory``, default
    `perturbation_dir`); a `ConfigError` for an unknown name or a missing file."""
    if name not in PERTURBATIONS:
        raise ConfigError(f"unknown perturbation {name!r}; expected one of {list(PERTURBATIONS)}")
    folder = Path(directory) if directory is not None else perturbation_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such perturbation file (run from an emauto checkout, or give the "
            "folder of the robustness configs)"
        )
    return path


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def perturbed_config(
    name: str, base: SimConfig | None = None, directory: str | Path | None = None
) -> SimConfig:
    """``base`` (default `SimConfig()`) with the perturbation ``name`` laid over it.

    Only the fields the perturbation's file sets change (nested ones key by key); a
    relative specimen recipe path in the file is taken from the file's folder.
    """
    path = perturbation_path(name, directory)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of SimConfig fields, got {raw!r}")
    if isinstance(raw.get("specimen"), str):
        raw["specimen"] = specimen_beside(raw["specimen"], path)
    merged = _merge((base or SimConfig()).model_dump(), raw)
    return validate_model(merged, SimConfig, source=str(path))


def perturbed_uri(name: str, directory: str | Path | None = None) -> str:
    """``sim://?config=PATH`` of the perturbation over the default twin."""
    return f"sim://?config={perturbation_path(name, directory)}"
