"""``simplex``: Nelder-Mead (scipy) over the correction gain of each aberration group,
scored by the probe-shift measurement.

Each evaluation is one round of measure-and-correct (`objective.MeasuringOptimiser`, three
Ronchigrams counted at the Microscope boundary): from the latest reading ``r`` (m, the
probe defocus off) at the knob offset ``x`` the probe goes to ``x - g r`` (``g`` the gains
of C1/A1, B2 and A2, one per knob of the group), over-focused again, and is measured there.
The evaluation's score, which Nelder-Mead minimises, is how much the correction shrank the
measured phase variance, ``ln(v_after + floor) - ln(v_before + floor)`` (rad^2, `objective.
VARIANCE_FLOOR`). The probe improves whatever gains are tried (each round corrects), and
the simplex finds the gains that undo the measurement's low reading of B2 and A2 (starts
at `START_GAINS`, simplex steps `INITIAL_STEP`). A refused measurement scores
`REFUSED_SCORE`; the next evaluation corrects from the last accepted reading.

scipy's Nelder-Mead wants to call the objective itself; here it runs in a worker thread
whose objective hands each gain vector to the policy and waits for the measured score:
scipy's algorithm, the policy interface's ask/tell. When it has converged the best gains
are used from then on.

**Stop**: the latest reading, scaled by the best gains (the true aberrations as measured),
predicts a Strehl ratio of at least `STOP_STREHL` (declared aligned, that prediction as its
confidence); or the budget has no room for another evaluation (not declared). The final
move (no frame) goes to the mean of the aligned points the last `AVERAGE` readings give
with the best gains (each reading's noise averaged down), the probe defocus off.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from emauto.tasks.probe_tuning.policies.objective import (
    AberrationMeter,
    MeasuringOptimiser,
    log_variance,
)

#: Gains Nelder-Mead starts from (C1/A1, B2, A2): the inverse of the measurement's reading
#: (B2 about 30 % low, A2 15-20 %).
START_GAINS = (1.0, 1.4, 1.2)
INITIAL_STEP = 0.25
GAIN_BOUNDS = (0.3, 2.5)
#: Score of an evaluation whose measurement was refused (the phase variance grew e-fold).
REFUSED_SCORE = 1.0
#: Stop once the latest reading, gain-corrected, predicts at least this Strehl ratio.
STOP_STREHL = 0.9
#: The final move goes to the mean of the aligned points of this many latest readings.
AVERAGE = 4
#: The longest the policy waits for the optimiser thread's next gains (s).
ASK_TIMEOUT_S = 60.0
#: Knob prefix of each gain group.
GROUPS = (("C10", "C12"), ("C21",), ("C23",))


class _StopOptimisationError(Exception):
    """Ends the optimiser thread when an episode ends."""


class NelderMeadPolicy(MeasuringOptimiser):
    """Nelder-Mead over correction gains, scored by measurements: ``name = "simplex"``."""

    name = "simplex"

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        meter: AberrationMeter,
        stop_strehl: float = STOP_STREHL,
        start_gains: Sequence[float] = START_GAINS,
        initial_step: float = INITIAL_STEP,
        max_evaluations: int = 1000,
    ) -> None:
        super().__init__(knobs, step_limits_m, meter, stop_strehl)
        group_of = {p: i for i, prefixes in enumerate(GROUPS) for p in prefixes}
        self._group = np.array([group_of.get(k[:3], 0) for k in self.knobs])
        self.start_gains = np.asarray(start_gains, dtype=np.float64)
        self.initial_step = initial_step
        self.max_evaluations = max_evaluations
        self._asks: queue.Queue[np.ndarray | None] = queue.Queue()
        self._tells: queue.Queue[float | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._reading: np.ndarray | None = None  # latest accepted reading, defocus off (m)
        self._at: np.ndarray | None = None  # the parked-probe offset it was taken at (m)
        self._trial: np.ndarray | None = None  # gains of the evaluation in progress
        self._history: list[tuple[np.ndarray, np.ndarray]] = []
        self._finished = False
        self.best_gains = self.start_gains.copy()
        self._best_score = np.inf

    # ------------------------------------------------------------------ MeasuringOptimiser

    def start(self) -> None:
        self.close()
        self._reading, self._at, self._trial = None, None, None
        self._history = []
        self._asks, self._tells = queue.Queue(), queue.Queue()
        self._error, self._finished = None, False
        self.best_gains, self._best_score = self.start_gains.copy(), np.inf
        self._thread = threading.Thread(target=self._optimise, daemon=True)
        self._thread.start()

    def observe(self, x: np.ndarray, measured: np.ndarray) -> None:
        reading = measured.copy()
        reading[self._c1] -= self.defocus_m
        at = x.copy()
        at[self._c1] -= self.defocus_m
        if self._trial is not None and self._reading is not None:
            score = log_variance(self.meter, reading) - log_variance(self.meter, self._reading)
            self._tell(score)
        self._reading, self._at = reading, at
        self._history.append((at, reading))

    def refused(self, x: np.ndarray) -> None:
        if self._trial is not None and self._reading is not None:
            self._tell(REFUSED_SCORE)

    def aligned_point(self) -> np.ndarray | None:
        """The mean of the aligned points the last `AVERAGE` readings give with the best
        gains (each reading's noise averaged down)."""
        if not self._history:
            return None
        gains = self.best_gains[self._group]
        points = [at - gains * reading for at, reading in self._history[-AVERAGE:]]
        return np.mean(points, axis=0)

    def next_point(self) -> np.ndarray | None:
        if self._reading is None:
            return None
        self._trial = self._ask()
        return self._corrected(self._trial)

    def confidence(self) -> float | None:
        if self._reading is None:
            return None
        return float(self.meter.strehl(self.best_gains[self._group] * self._reading))

    # ------------------------------------------------------------------ the optimiser

    def close(self) -> None:
        """Stop the optimiser thread (called on every reset)."""
        if self._thread is not None and self._thread.is_alive():
            self._tells.put(None)
            self._thread.join(timeout=5)
        self._thread = None

    def _corrected(self, gains: np.ndarray) -> np.ndarray | None:
        if self._reading is None or self._at is None:
            return None
        return self._at - gains[self._group] * self._reading

    def _ask(self) -> np.ndarray:
        if self._finished:
            return self.best_gains.copy()
        gains = self._asks.get(timeout=ASK_TIMEOUT_S)
        if self._error is not None:
            raise RuntimeError("the Nelder-Mead optimiser failed") from self._error
        if gains is None:  # converged: the best gains from now on
            self._finished = True
            return self.best_gains.copy()
        return gains

    def _tell(self, score: float) -> None:
        assert self._trial is not None
        if score < self._best_score:
            self._best_score, self.best_gains = score, self._trial.copy()
        self._trial = None
        if not self._finished:
            self._tells.put(score)

    def _optimise(self) -> None:
        low, high = GAIN_BOUNDS

        def score(gains: np.ndarray) -> float:
            self._asks.put(np.clip(np.asarray(gains, dtype=np.float64), low, high))
            value = self._tells.get()
            if value is None:
                raise _StopOptimisationError
            return value

        start = self.start_gains
        simplex = np.vstack([start, start + self.initial_step * np.eye(len(start))])
        try:
            minimize(
                score,
                start,
                method="Nelder-Mead",
                options={
                    "initial_simplex": simplex,
                    "maxfev": self.max_evaluations,
                    "xatol": 0.02,
                    "fatol": 0.02,
                },
            )
        except _StopOptimisationError:
            return
        except Exception as exc:  # handed to the policy, which raises it in the caller
            self._error = exc
        self._asks.put(None)
