"""``bo``: Bayesian optimisation of the probe on the measured aberration VECTOR.

Each evaluation is a probe-shift measurement (`objective.AberrationMeter`, three
Ronchigrams, counted at the Microscope boundary) at a known knob offset ``x`` from the
episode's start (m; the env's actual changes). The surrogate is multi-output and linear,
one output per knob ``k`` (a GP with a linear kernel, in closed form):

    measured_k(x) = c_k + g_j x_k + noise,    g_j the gain of k's aberration group j

``g`` (C1, A1, B2, A2) is the measurement's gain (prior: B2 read about 30 % and A2 15-20 %
low, `GAIN_PRIOR`) times the knobs' own calibration; ``c_k / g_j`` is the aberration at the
start. Noise: `NOISE_BASE_M` plus `NOISE_RELATIVE` of the reading (it is worse far from
alignment). For known ``x`` the model is linear in (c, g), so their posterior is Gaussian
and exact; its samples give the aligned point ``x* = -c / g`` and the Strehl ratio
expected there (the acquisition value: phase variance of the residual ``c / g + x*``
averaged over the posterior). The next evaluation is at the posterior's aligned point with
the probe over-focused (pure exploitation: near ``x*`` the gain's uncertainty hardly
matters, and every evaluation there averages the measurement's noise down).

**Stop**: when the expected Strehl ratio at ``x*`` reaches `STOP_STREHL` (declared aligned,
that expectation as its confidence), or when the budget has no room for another
evaluation (not declared). The final move (no frame) goes to ``x*`` with the probe defocus
off.

Choices, measured on tuning episodes 7000-7019 (success = true Strehl >= 0.8 at the end;
`shift` on the same: 12/20, 8 false dones): this surrogate with every measurement 16/20;
with the gain prior three times wider 12/20; with only the last three measurements 16/20
(and the wider prior 13/20); with only the last one (measure-and-correct with the prior's
gains) 7/20; with a noise model growing with the reading's phase variance 16/20, its
failures further from 0.8. Not tried: a GP on the scalar measured phase variance (ten
three-frame points in 7-D; the previous BoTorch GP on the CNN's estimate aligned none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emauto.tasks.probe_tuning.policies.objective import AberrationMeter, MeasuringOptimiser

#: Stop when the posterior expects at least this Strehl ratio at the aligned point. On the
#: tuning episodes the expectation reached 0.80-0.82 within 31 frames (true 0.62-0.98), so
#: it rarely fires within the benchmark's budget; set above the one episode that would have
#: been a false done (expected 0.805, true 0.62).
STOP_STREHL = 0.85
#: Prior mean and standard deviation of each group's gain (measured / true), by knob prefix.
GAIN_PRIOR = {"C10": (1.0, 0.03), "C12": (1.0, 0.1), "C21": (0.7, 0.15), "C23": (0.83, 0.15)}
#: Noise of a reading (m): this plus `NOISE_RELATIVE` of its magnitude (readings err more
#: far from alignment). Chosen on tuning episodes 7000-7019 against a noise model calibrated
#: on 7020-7039 (base C1 1.2, A1 0.9, B2 25, A2 20 nm, growing with the reading's phase
#: variance): 16/20 successes each, this one's failures closer to 0.8.
NOISE_BASE_M = {"C10": 1e-9, "C12": 1e-9, "C21": 20e-9, "C23": 10e-9}
NOISE_RELATIVE = {"C10": 0.02, "C12": 0.1, "C21": 0.15, "C23": 0.15}
#: Posterior samples for the expected Strehl ratio and the aligned point.
SAMPLES = 256


class BayesOptPolicy(MeasuringOptimiser):
    """Multi-output linear-Gaussian surrogate of the measured aberrations: ``name = "bo"``."""

    name = "bo"

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        meter: AberrationMeter,
        stop_strehl: float = STOP_STREHL,
        seed: int = 0,
        samples: int = SAMPLES,
    ) -> None:
        super().__init__(knobs, step_limits_m, meter, stop_strehl)
        self.seed = seed
        self.samples = samples
        prefixes = [k[:3] for k in self.knobs]
        groups = list(dict.fromkeys(prefixes))
        self._group = np.array([groups.index(p) for p in prefixes])
        self._gain_mean = np.array([GAIN_PRIOR.get(g, (1.0, 0.2))[0] for g in groups])
        self._gain_sd = np.array([GAIN_PRIOR.get(g, (1.0, 0.2))[1] for g in groups])
        self._base = np.array([NOISE_BASE_M.get(p, 1e-9) for p in prefixes])
        self._relative = np.array([NOISE_RELATIVE.get(p, 0.1) for p in prefixes])
        self._scale = 1.5 * self.step_limits_m  # prior sd of each intercept (m)
        self._xs: list[np.ndarray] = []
        self._ms: list[np.ndarray] = []
        self._aligned: np.ndarray | None = None
        self._confidence: float | None = None
        #: Posterior samples of the aberrations at the episode's start (samples, K) (m).
        self.start_samples: np.ndarray | None = None
        self._rng = np.random.default_rng(seed)
        self.memory: int | None = None  # use only the latest this many (None: all)
        self.gain_sd_scale = 1.0  # widens the gain prior (for the experiments above)

    def start(self) -> None:
        self._xs, self._ms = [], []
        self._aligned, self._confidence = None, None
        self.start_samples = None
        self._rng = np.random.default_rng(self.seed)

    def observe(self, x: np.ndarray, measured: np.ndarray) -> None:
        self._xs.append(x)
        self._ms.append(measured)
        self._update()

    def aligned_point(self) -> np.ndarray | None:
        return None if self._aligned is None else self._aligned.copy()

    def confidence(self) -> float | None:
        return self._confidence

    # ------------------------------------------------------------------ the surrogate

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the parameters ``[c (K, m), g (G,)]``, scaled: c in units
        of its prior sd, g as is."""
        n_knobs, n_groups = len(self.knobs), len(self._gain_mean)
        size = n_knobs + n_groups
        precision = np.zeros((size, size))
        vector = np.zeros(size)
        precision[:n_knobs, :n_knobs] = np.eye(n_knobs)  # c / scale ~ N(0, 1)
        gain_precision = 1 / (self.gain_sd_scale * self._gain_sd) ** 2
        precision[n_knobs:, n_knobs:] = np.diag(gain_precision)
        vector[n_knobs:] = gain_precision * self._gain_mean
        start = 0 if self.memory is None else max(0, len(self._xs) - self.memory)
        for x, m in zip(self._xs[start:], self._ms[start:], strict=True):
            sigma = self._base + self._relative * np.abs(m)
            for k in range(n_knobs):
                row = np.zeros(size)
                row[k] = self._scale[k]
                row[n_knobs + self._group[k]] = x[k]
                weight = 1 / sigma[k] ** 2
                precision += weight * np.outer(row, row)
                vector += weight * row * m[k]
        covariance = np.linalg.inv(precision)
        covariance = 0.5 * (covariance + covariance.T)
        return covariance @ vector, covariance

    def _update(self) -> None:
        mean, covariance = self.posterior()
        n_knobs = len(self.knobs)
        draws = self._rng.multivariate_normal(mean, covariance, size=self.samples)
        c = draws[:, :n_knobs] * self._scale
        g = np.maximum(draws[:, n_knobs:][:, self._group], 0.2)
        start = c / g  # the aberrations at the episode's start (m), one row per sample
        aligned = -np.median(start, axis=0)
        self.start_samples = start
        self._aligned = aligned
        self._confidence = float(np.mean(self.meter.strehl(start + aligned)))
