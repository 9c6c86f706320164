"""`emauto bench calibration`: the calibration recovers hidden parameters of twins.

Each twin's instrument parameters are drawn at random (`draw_hidden`) from a seed of one of
two disjoint seed sets: ``dev`` (for developing the estimators) and ``report`` (the figures
reported; never used to choose anything). The calibration plan is recorded on the twin
into a session folder, `emauto.calibration.fit.fit_session` fits it, and each fitted value
is compared with the hidden one. `TOLERANCES` were fixed before the report seeds were run:
the issue's goals (camera scale 1 %, rotation 1 degree, lens time constant 10 %) and, for
the rest, what the twin's use of each parameter needs.

Figures per parameter: median and maximum error over the twins, and the fraction within
tolerance; the axis signs: the fraction of twins whose every checked axis was called right.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from emauto.bench.calibration_seeds import SEED_SETS
from emauto.calibration.fit import fit_session
from emauto.calibration.plan import DEFAULT_SIGN_STEPS, CalibrationPlan, record_calibration
from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.probe import RonchigramGrid
from emauto.drivers.sim.specimens import load_specimen
from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.errors import ConfigError

#: name -> (tolerance, kind): ``relative`` (fraction), ``absolute`` (in the unit) or
#: ``degrees``.
TOLERANCES: dict[str, tuple[float, str]] = {
    "camera_scale": (0.01, "relative"),
    "camera_rotation_deg": (1.0, "absolute"),
    "lens_tau": (0.10, "relative"),
    "gain": (0.05, "relative"),
    "read_noise": (0.10, "relative"),
    "dark_offset_counts": (1.0, "absolute"),
    "contrast": (0.02, "absolute"),
    "beam_current": (0.05, "relative"),
    "drift_speed": (0.25, "relative"),
    "aperture_offset_mrad": (0.2, "absolute"),
}

#: Corrector axes a hidden twin may have flipped (C10 never: the plan's over-focus would
#: become under-focus and read as a camera turned by 180 degrees).
FLIPPABLE = tuple(DEFAULT_SIGN_STEPS)


def draw_hidden(seed: int) -> dict[str, Any]:
    """Hidden instrument parameters of one twin (a partial SimConfig), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    flipped = tuple(k for k in FLIPPABLE if rng.random() < 0.2)
    return {
        "seed": int(seed),
        "beam_current_A": float(rng.uniform(10e-12, 40e-12)),
        "aperture_offset_rad": [float(v) for v in rng.uniform(-3e-3, 3e-3, size=2)],
        "flipped_knobs": list(flipped),
        "ronchigram": {
            "rotation_rad": float(math.radians(rng.uniform(-10.0, 10.0))),
            "pixel_angle_error": float(rng.uniform(-0.10, 0.10)),
            "gain_counts_per_e": float(math.exp(rng.uniform(math.log(0.5), math.log(4.0)))),
            "read_noise_counts": float(rng.uniform(0.5, 10.0)),
            "dark_offset_counts": float(rng.uniform(0.0, 100.0)),
            "contrast_scale": float(rng.uniform(0.3, 1.0)),
        },
        "effects": {
            "lens_tau_s": float(math.exp(rng.uniform(math.log(0.01), math.log(0.5)))),
            "drift_speed_m_per_s": float(math.exp(rng.uniform(math.log(2e-12), math.log(5e-11)))),
        },
    }


def _config(hidden: dict[str, Any]) -> SimConfig:
    base = SimConfig().model_dump()
    for key, value in hidden.items():
        if isinstance(value, dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return SimConfig.model_validate(base)


def _errors(config: SimConfig, true_pixel_rad: float, fitted: Any) -> dict[str, float]:
    """Fitted minus true, per parameter (relative ones as fractions)."""
    e = fitted.estimates
    cam = config.ronchigram
    out: dict[str, float] = {}

    def rel(name: str, truth: float) -> float:
        return e[name].value / truth - 1.0 if name in e else math.nan

    def get(name: str) -> float:
        return e[name].value if name in e else math.nan

    out["camera_scale"] = rel("camera_pixel_rad", true_pixel_rad)
    out["camera_rotation_deg"] = math.degrees(get("camera_rotation_rad") - cam.rotation_rad)
    out["lens_tau"] = rel("lens_tau_s", config.effects.lens_tau_s)
    out["gain"] = rel("gain_counts_per_e", cam.gain_counts_per_e)
    out["read_noise"] = rel("read_noise_counts", cam.read_noise_counts)
    out["dark_offset_counts"] = get("dark_offset_counts") - cam.dark_offset_counts
    out["contrast"] = get("contrast_scale") - cam.contrast_scale
    out["beam_current"] = rel("beam_current_A", config.beam_current_A)
    out["drift_speed"] = rel("drift_speed_m_per_s", config.effects.drift_speed_m_per_s)
    offset = config.aperture_offset_rad
    out["aperture_offset_mrad"] = 1e3 * math.hypot(
        get("aperture_offset_x_rad") - offset[0], get("aperture_offset_y_rad") - offset[1]
    )
    return out


def run_calibration_benchmark(
    seeds: str = "report", twins: int = 20, folder: Path | None = None
) -> dict[str, Any]:
    """Record and fit the calibration on ``twins`` hidden-parameter twins of the seed set
    ``seeds``; return the figures (see the module docstring)."""
    if seeds not in SEED_SETS:
        raise ConfigError(f"unknown seed set {seeds!r}; expected one of {list(SEED_SETS)}")
    if not 1 <= twins <= 1000:
        raise ConfigError(f"twins must be within [1, 1000], got {twins}")
    plan = CalibrationPlan()
    base = SimConfig()
    grid_sampling = RonchigramGrid.requested_sampling(base.ronchigram, base.energy_eV)
    specimen = load_specimen(base.specimen, sampling_m=grid_sampling, n_slabs=base.fast_slabs)
    per_twin: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        for index in range(twins):
            seed = SEED_SETS[seeds] + index
            hidden = draw_hidden(seed)
            config = _config(hidden)
            twin = SimulatedMicroscope(config, specimen=specimen)
            true_pixel = twin.grid.camera_pixel_rad
            path = Path(scratch) / f"twin-{seed}"
            frames = record_calibration(twin, path, plan, metadata={"bench_seed": seed})
            fitted = fit_session(path)
            errors = _errors(config, true_pixel, fitted)
            expected = {k: (-1 if k in config.flipped_knobs else 1) for k in fitted.signs}
            signs_right = all(fitted.signs[k] == expected[k] for k in fitted.signs)
            per_twin.append(
                {
                    "seed": seed,
                    "frames": frames,
                    "errors": errors,
                    "signs_right": signs_right,
                    "signs": dict(fitted.signs),
                    "flipped": list(config.flipped_knobs),
                    "hidden": hidden,
                }
            )
            print(
                f"[bench calibration] twin {index + 1}/{twins} seed {seed}: "
                + ", ".join(f"{k} {v:+.3g}" for k, v in errors.items())
                + f", signs {'ok' if signs_right else 'WRONG'}",
                file=sys.stderr,
                flush=True,
            )
    figures: dict[str, Any] = {}
    for name, (tolerance, _kind) in TOLERANCES.items():
        values = [abs(t["errors"][name]) for t in per_twin]
        finite = [v for v in values if math.isfinite(v)]
        figures[name] = {
            "tolerance": tolerance,
            "median_abs_error": statistics.median(finite) if finite else math.nan,
            "max_abs_error": max(finite) if finite else math.nan,
            "within_tolerance": sum(v <= tolerance for v in finite) / len(values),
            "not_fitted": len(values) - len(finite),
        }
    figures["axis_signs"] = {
        "all_right_fraction": sum(t["signs_right"] for t in per_twin) / len(per_twin),
        "twins_with_a_flipped_axis": sum(bool(t["flipped"]) for t in per_twin),
    }
    return {
        "benchmark": "calibration",
        "seed_set": seeds,
        "seed_base": SEED_SETS[seeds],
        "twins": twins,
        "frames_per_session": per_twin[0]["frames"] if per_twin else 0,
        "wall_s": round(time.perf_counter() - started, 1),
        "figures": figures,
        "goals_met": all(
            figures[n]["within_tolerance"] == 1.0
            for n in ("camera_scale", "camera_rotation_deg", "lens_tau")
        ),
        "per_twin": per_twin,
    }
