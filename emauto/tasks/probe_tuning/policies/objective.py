"""The image-derived objective that the optimisers (BO, simplex) maximise.

``score = -ln(variance + VARIANCE_FLOOR)`` where ``variance`` (rad^2) is the phase variance
over the probe-forming aperture of the aberrations the CNN estimator reads from the latest
Ronchigram pair. It is smooth far from the optimum (where the Strehl ratio is flat at 0) and
Marechal's ``S ~ exp(-variance)`` links it to the success criterion: S >= 0.8 is about
``variance <= 0.22``, a score >= 1.4. Measured from images only: usable on hardware.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from emauto import optics
from emauto.models.estimator import RonchigramEstimator

VARIANCE_FLOOR = 0.01


class RonchigramObjective:
    """Score a Ronchigram pair (uint8 (2, S, S)) and the knob change (m) between its frames."""

    def __init__(self, estimator: RonchigramEstimator, aperture_rad: float | None = None) -> None:
        self.estimator = estimator
        self.aperture_rad = aperture_rad or estimator.metadata.convergence_rad
        self._wavelength = optics.wavelength(estimator.metadata.energy_eV)

    def __call__(self, pair: np.ndarray, change_m: Mapping[str, float]) -> float:
        estimate = self.estimator.estimate(pair, change_m)
        coefficients = np.array([[estimate.mean_m[k] for k in self.estimator.knobs]])
        variance = optics.phase_variance_batch(
            coefficients, self.estimator.knobs, self._wavelength, self.aperture_rad
        )[0]
        return -math.log(float(variance) + VARIANCE_FLOOR)
