"""Random probe states shared by the benchmark and the fidelity tests."""

from __future__ import annotations

import numpy as np

from emauto import optics
from emauto.drivers.sim.probe import ProbeOptics


def random_probe(rng: np.random.Generator, convergence_rad: float = 0.03) -> ProbeOptics:
    """A probe with aberrations drawn like the probe-tuning task's starting states."""
    values = {
        "C10": rng.uniform(-50e-9, 50e-9),
        "C12a": rng.uniform(-20e-9, 20e-9),
        "C12b": rng.uniform(-20e-9, 20e-9),
        "C21a": rng.uniform(-300e-9, 300e-9),
        "C21b": rng.uniform(-300e-9, 300e-9),
        "C23a": rng.uniform(-300e-9, 300e-9),
        "C23b": rng.uniform(-300e-9, 300e-9),
        "C30": rng.uniform(-1e-6, 1e-6),
    }
    coefficients = tuple(values.get(name, 0.0) for name in optics.ABERRATION_NAMES)
    return ProbeOptics(coefficients, convergence_rad, (0.0, 0.0))
