"""Perturbed twins: one imperfection of a real instrument at a time, by name.

Each name in `PERTURBATIONS` is one file ``configs/robustness/NAME.yaml``: a partial
`SimConfig` (the fields it changes, nothing else), so a perturbed twin is also
``sim://?config=configs/robustness/NAME.yaml``. ``none`` changes nothing: the reference on
the same seeds. `perturbed_config` lays a perturbation over any base configuration (the
robustness suite's default twin, or a training twin that randomises over them).

Names are registered here once; the files, the CLI's choices and the tests derive from it.

`randomised_config` draws a training twin from *ranges* that cover the suite
(`PerturbationRanges`), not from its exact files: each imperfection on or off at random,
its size drawn from its range, seeded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field, model_validator

from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.uri import specimen_beside
from emauto.errors import ConfigError
from emauto.units import StrictModel, validate_model

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


# ------------------------------------------------------------------ randomised twins

Range = tuple[float, float]


class PerturbationRanges(StrictModel):
    """Ranges a randomised training twin is drawn from (`randomised_config`), SI units.

    Each imperfection is present with probability ``probability`` (independently of the
    others; the specimen with ``specimen_probability``); when present its size is drawn
    from its range, else the base twin's value stays. ``(low, high)`` ranges marked
    log-uniform are drawn log-uniformly (both > 0), the others uniformly; a ``*_max`` is
    drawn uniformly over ``[-max, max]`` (rotation, residual camera-scale error) or over
    the disc of that radius (aperture offset).

    The defaults cover the robustness suite's perturbations (contrast 10x lower, 20x read
    noise with a 100-count dark offset, 10 % gain non-uniformity, 10x drift, 10x lens lag,
    5 degrees of camera rotation, a 3 mrad aperture offset, a coarser specimen) and the
    residual errors a calibration leaves (``pixel_angle_error_max``: 1 % of camera scale;
    the lens-settling residual is the caller's, see `belief_training`), not their exact
    files: another Au-on-carbon recipe than the suite's, other gain maps.
    """

    probability: float = Field(default=0.5, ge=0.0, le=1.0)
    contrast_scale: Range = (0.1, 1.0)  # log-uniform
    read_noise_counts: Range = (0.5, 10.0)  # log-uniform
    dark_offset_counts: Range = (0.0, 100.0)
    gain_nonuniformity_rms: Range = (0.0, 0.1)
    gain_correlation_px: Range = (1.0, 8.0)
    drift_speed_m_per_s: Range = (5e-12, 5e-11)  # log-uniform
    lens_tau_s: Range = (0.02, 0.2)  # log-uniform
    rotation_rad_max: float = Field(default=0.1, ge=0.0, le=math.pi)
    pixel_angle_error_max: float = Field(default=0.01, ge=0.0, lt=0.5)
    aperture_offset_rad_max: float = Field(default=0.004, ge=0.0, le=0.05)
    specimens: tuple[str, ...] = Field(
        default=("au_on_carbon",), description="drawn from (uniformly) when the specimen changes"
    )
    specimen_probability: float = Field(
        default=0.25, ge=0.0, le=1.0, description="the specimen's own (not ``probability``)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> PerturbationRanges:
        for name in (
            "contrast_scale",
            "read_noise_counts",
            "dark_offset_counts",
            "gain_nonuniformity_rms",
            "gain_correlation_px",
            "drift_speed_m_per_s",
            "lens_tau_s",
        ):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name}: expected 0 <= low <= high, got {(low, high)}")
            if name in _LOG_UNIFORM and low <= 0.0:
                raise ValueError(f"{name}: a log-uniform range needs low > 0, got {low}")
        return self


#: Ranges drawn log-uniformly (the others uniformly).
_LOG_UNIFORM = frozenset(
    {"contrast_scale", "read_noise_counts", "drift_speed_m_per_s", "lens_tau_s"}
)


def _draw(rng: np.random.Generator, name: str, bounds: Range) -> float:
    low, high = bounds
    if name in _LOG_UNIFORM:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def randomised_config(
    rng: np.random.Generator | int,
    ranges: PerturbationRanges | None = None,
    base: SimConfig | None = None,
) -> SimConfig:
    """A training twin: ``base`` (default `SimConfig()`) with imperfections drawn from
    ``ranges`` (default `PerturbationRanges()`), by ``rng`` (a generator, or a seed).

    The same seed gives the same twin. Every imperfection takes the same number of draws
    whether it is present or not, so adding one to the ranges does not reshuffle the others.
    """
    ranges = ranges or PerturbationRanges()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    config = (base or SimConfig()).model_dump()
    camera, effects = config["ronchigram"], config["effects"]

    def present() -> bool:
        return bool(rng.uniform() < ranges.probability)

    # one (present, size...) group per imperfection, always drawn in this order
    on, value = present(), _draw(rng, "contrast_scale", ranges.contrast_scale)
    if on:
        camera["contrast_scale"] = value
    on = present()
    noise = _draw(rng, "read_noise_counts", ranges.read_noise_counts)
    dark = _draw(rng, "dark_offset_counts", ranges.dark_offset_counts)
    if on:
        camera["read_noise_counts"], camera["dark_offset_counts"] = noise, dark
    on = present()
    gain = _draw(rng, "gain_nonuniformity_rms", ranges.gain_nonuniformity_rms)
    correlation = _draw(rng, "gain_correlation_px", ranges.gain_correlation_px)
    gain_seed = int(rng.integers(0, 2**31))
    if on:
        camera["gain_nonuniformity_rms"] = gain
        camera["gain_correlation_px"] = correlation
        camera["gain_map_seed"] = gain_seed
    on, value = present(), _draw(rng, "drift_speed_m_per_s", ranges.drift_speed_m_per_s)
    if on:
        effects["drift_speed_m_per_s"] = value
    on, value = present(), _draw(rng, "lens_tau_s", ranges.lens_tau_s)
    if on:
        effects["lens_tau_s"] = value
    on = present()
    value = float(rng.uniform(-ranges.rotation_rad_max, ranges.rotation_rad_max))
    if on:
        camera["rotation_rad"] = value
    on = present()
    value = float(rng.uniform(-ranges.pixel_angle_error_max, ranges.pixel_angle_error_max))
    if on:
        camera["pixel_angle_error"] = value
    on = present()
    radius = ranges.aperture_offset_rad_max * math.sqrt(float(rng.uniform()))
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    if on:
        config["aperture_offset_rad"] = (radius * math.cos(angle), radius * math.sin(angle))
    on = bool(rng.uniform() < ranges.specimen_probability)
    index = int(rng.integers(len(ranges.specimens))) if ranges.specimens else -1
    if on and index >= 0:
        config["specimen"] = ranges.specimens[index]
    return validate_model(config, SimConfig, source="randomised_config")
