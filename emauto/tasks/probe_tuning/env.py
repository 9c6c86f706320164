"""`emauto/ProbeTuning-v0`: correct a probe's aberrations from Ronchigrams.

An episode starts from the aligned state detuned by random aberrations (`ProbeTuningConfig.
start`); each step moves the chosen corrector knobs by ``action x step limit`` (absolute
setpoints sent through the Microscope contract) and takes one Ronchigram. The episode
succeeds, for every method alike, when the Strehl ratio over the probe-forming aperture
reaches ``success_strehl`` (0.8); success and the ``strehl`` and ``wavefront`` rewards use
the twin's ground truth (`GroundTruth`: `SimulatedMicroscope.strehl_ratio`,
`true_aberrations`, below any wrappers), which only a twin has; ``wavefront`` (the change of
``-ln(phase variance + 0.01)``) stays informative far from the optimum, where the Strehl
ratio is flat at zero. On an in-process twin, ``reset(seed=...)`` also restarts the twin's
noise and drift from that seed (`Restartable`: `SimulatedMicroscope.restart`). On hardware
use ``reward="estimator"``: the Strehl ratio predicted from the Ronchigram pair by the CNN
estimator (`emauto.models.estimator`).

Observation (a Dict): ``ronchigram`` uint8 (2, S, S), channels first: the previous and the
latest Ronchigram (the same frame twice after a reset), so a policy sees how the last action
changed the pattern (the sign of defocus is ambiguous in a single frame); ``history`` float32
(H x n_knobs,), the last H actions flattened, oldest first (zeros before the first).
Action: Box[-1, 1]^n_knobs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from emauto import optics
from emauto.errors import ConfigError
from emauto.microscope import (
    Frame,
    GroundTruth,
    Microscope,
    Restartable,
    RonchigramRequest,
    SettlingGroundTruth,
)
from emauto.tasks.probe_tuning.config import TUNING_KNOB_GROUPS, ProbeTuningConfig
from emauto.tasks.probe_tuning.observations import (
    aperture_crop_px,
    background_counts,
    ronchigram_image,
)
from emauto.wrappers.base import unwrap

if TYPE_CHECKING:
    from emauto.wrappers.recording import RecordingMicroscope

Observation = dict[str, np.ndarray]


def scoring_wait_s(twin: object, config: ProbeTuningConfig) -> float:
    """How long (s) after the last command the state an episode leaves is scored: the
    frames' wait, or the twin's lens settling time (``settling_time_s``, an in-process
    twin's) if longer. The default twin settles in the frames' 0.1 s; a slow lens (the
    robustness suite's 0.2 s time constant) is not scored halfway through the last move."""
    settling = getattr(twin, "settling_time_s", None)
    return max(config.lens_wait_s, float(settling()) if callable(settling) else 0.0)


#: Predicts the Strehl ratio from the observation's Ronchigram pair (uint8 (2, S, S)) and the
#: knob change (m) made between its two frames.
StrehlFromImage = Callable[[np.ndarray, Mapping[str, float]], float]


def draw_start(config: ProbeTuningConfig, rng: np.random.Generator) -> dict[str, float]:
    """Random aberration offsets (m) for every tuned and untuned aberration of `config.start`."""
    offsets: dict[str, float] = {}
    for name, knobs in TUNING_KNOB_GROUPS.items():
        width = float(getattr(config.start, name))
        if len(knobs) == 1:
            offsets[knobs[0]] = float(rng.uniform(-width, width))
        else:
            magnitude = width * math.sqrt(float(rng.uniform()))  # uniform over the disc
            angle = float(rng.uniform(0, 2 * math.pi))
            offsets[knobs[0]] = magnitude * math.cos(angle)
            offsets[knobs[1]] = magnitude * math.sin(angle)
    return offsets


class ProbeTuningEnv(gym.Env[Observation, np.ndarray]):
    """Probe tuning on any Microscope backend (default: the twin, ``sim://``)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        microscope: str | Microscope = "sim://",
        config: ProbeTuningConfig | dict[str, Any] | None = None,
        *,
        strehl_from_image: StrehlFromImage | None = None,
        render_mode: str | None = None,
        record: str | Path | None = None,
    ) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = ProbeTuningConfig.model_validate(config)
        self.config = config or ProbeTuningConfig()
        if isinstance(microscope, str):
            from emauto.drivers import connect

            self.microscope: Microscope = connect(microscope)
            self._owns_microscope = True
        else:
            self.microscope = microscope
            self._owns_microscope = False
        self._recording: RecordingMicroscope | None = None
        if record is not None:  # every command and every env step, into a new session folder
            from emauto.wrappers.recording import RecordingMicroscope

            metadata = {
                "env": "emauto/ProbeTuning-v0",
                "config": self.config.model_dump(mode="json"),
            }
            self._recording = RecordingMicroscope.open(self.microscope, record, metadata)
            self.microscope = self._recording
        self.render_mode = render_mode
        description = self.microscope.describe()
        self.knobs = self.config.knobs()
        unknown = [knob for knob in self.knobs if knob not in description.knobs]
        if unknown:
            raise ConfigError(f"the microscope has no knob(s) {unknown} for probe tuning")
        self._limits = {
            k: (description.knobs[k].lower, description.knobs[k].upper) for k in self.knobs
        }
        self.step_limits = np.array(self.config.step_limits(), dtype=np.float64)
        self._all_knobs = [
            k for ks in TUNING_KNOB_GROUPS.values() for k in ks if k in description.knobs
        ]
        self._wavelength = optics.wavelength(description.energy_eV)
        twin = unwrap(self.microscope)  # ground truth below the wrappers, for scoring only
        self._ground_truth: Callable[[], float] | None = None
        self._true_aberrations: Callable[[], optics.Aberrations] | None = None
        if isinstance(twin, GroundTruth):
            self._ground_truth, self._true_aberrations = twin.strehl_ratio, twin.true_aberrations
        if self.config.reward != "estimator" and (
            self._ground_truth is None or self._true_aberrations is None
        ):
            raise ConfigError(
                f"reward={self.config.reward!r} needs a twin's ground truth; "
                "use reward='estimator' on hardware"
            )
        if self.config.reward == "estimator" and strehl_from_image is None:
            from emauto.models.estimator import load_default_strehl_predictor

            strehl_from_image = load_default_strehl_predictor()
        self._strehl_from_image = strehl_from_image
        self.reference = {k: self.microscope.read().knobs[k] for k in self._all_knobs}

        size, n = self.config.observation_size, len(self.knobs)
        self.observation_space = spaces.Dict(  # type: ignore[assignment]
            {
                "ronchigram": spaces.Box(0, 255, (2, size, size), dtype=np.uint8),
                "history": spaces.Box(
                    -1.0, 1.0, (self.config.history_length * n,), dtype=np.float32
                ),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        self._history = np.zeros((self.config.history_length, n), dtype=np.float32)
        self._exposure_s = self.config.exposure_s[0]
        self._position = (0.0, 0.0)
        self._last_frame: Frame | None = None
        self._last_image: np.ndarray | None = None
        self._strehl = 0.0
        self._potential = 0.0
        self._last_change = dict.fromkeys(self.knobs, 0.0)
        self._steps = 0
        self.acquisitions = 0
        self.dose_e = 0.0

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        """Detune from the aligned state, pick a region and a dose, take the first frame."""
        super().reset(seed=seed)
        rng = self.np_random
        if seed is not None:  # drawn on every backend, so the episode is the same on all
            twin_seed = int(rng.integers(2**31))
            twin = unwrap(self.microscope)
            if isinstance(twin, Restartable):
                twin.restart(twin_seed)  # an in-process twin: same seed, same noise and drift
        offsets = draw_start(self.config, rng)
        if options and "offsets" in options:
            unknown = sorted(set(options["offsets"]) - set(self._all_knobs))
            if unknown:
                raise ConfigError(f"options['offsets']: unknown knob(s) {unknown}")
            offsets.update({k: float(v) for k, v in options["offsets"].items()})
        setpoints = {k: self.reference[k] + offsets.get(k, 0.0) for k in self._all_knobs}
        description = self.microscope.describe()
        if "convergence_angle" in description.knobs:
            setpoints["convergence_angle"] = self.config.convergence_rad
        self.microscope.set(setpoints)
        low, high = self.config.exposure_s
        self._exposure_s = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        reach = min(self.config.max_probe_offset_m, description.scan.max_offset_m)
        self._position = (float(rng.uniform(-reach, reach)), float(rng.uniform(-reach, reach)))
        self._history[:] = 0.0
        self._steps = 0
        self.acquisitions = 0
        self.dose_e = 0.0
        self._last_image = None
        self._last_change = dict.fromkeys(self.knobs, 0.0)
        observation = self._observe()
        self._strehl = self._measure_strehl(observation)
        if self.config.reward == "wavefront":
            self._potential = self._wavefront_potential()
        return observation, self._info()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Move the knobs by ``action x step limit``, take a Ronchigram, score it.

        The episode is never terminated by the score (ground truth trains, it does not
        steer); it is truncated at ``max_steps``. ``config.success_bonus`` is added to the
        reward of every step that leaves the true Strehl ratio above ``success_strehl``.
        """
        action, clipped = self._move(action)
        self._history = np.roll(self._history, -1, axis=0)
        self._history[-1] = action
        self._steps += 1
        observation = self._observe()
        previous, self._strehl = self._strehl, self._measure_strehl(observation)
        terminated = False
        truncated = self._steps >= self.config.max_steps
        if self.config.reward == "wavefront":
            previous, self._potential = self._potential, self._wavefront_potential()
            reward = self._potential - previous - self.config.step_penalty
        else:
            reward = self._strehl - previous - self.config.step_penalty
        if self._strehl >= self.config.success_strehl:
            reward += self.config.success_bonus
        info = self._info()
        info["clipped"] = clipped
        if self._recording is not None:
            self._recording.recorder.record_episode_step(
                action, reward, terminated, truncated, self._strehl
            )
        return observation, float(reward), bool(terminated), bool(truncated), info

    def settle(self, action: np.ndarray) -> None:
        """Move the knobs by ``action x step limit`` and take no frame: a policy's last move
        at the end of an episode (`TuningPolicy.final_action`)."""
        self._move(action)

    def true_strehl(self) -> float | None:
        """The twin's true Strehl ratio of the state the knobs are left in, once the lenses
        have settled (`scoring_wait_s` after the last command), for scoring once an episode
        is over; None without ground truth (a real microscope). A twin that cannot look
        ahead (over the wire, a replay) is read as it is now."""
        twin = unwrap(self.microscope)
        if isinstance(twin, SettlingGroundTruth):
            return float(twin.strehl_ratio_after(scoring_wait_s(twin, self.config)))
        return None if self._ground_truth is None else float(self._ground_truth())

    def true_phase_variance(self) -> float | None:
        """The twin's true phase variance (rad^2) over the aperture of the state the knobs
        are left in, settled like `true_strehl`; None without a twin that looks ahead."""
        twin = unwrap(self.microscope)
        if not isinstance(twin, SettlingGroundTruth):
            return None
        aberrations = twin.aberrations_after(scoring_wait_s(twin, self.config))
        return optics.phase_variance(aberrations, self._wavelength, self.config.convergence_rad)

    def render(self) -> np.ndarray | None:
        """The last observation as an RGB image (S, S, 3)."""
        if self._last_frame is None:
            return None
        image = self._image(self._last_frame)[0]
        return np.repeat(image[:, :, None], 3, axis=2)

    def close(self) -> None:
        """Leave the microscope safe; close it if this env opened it."""
        try:
            self.microscope.safe()
        finally:
            if self._owns_microscope:
                self.microscope.close()  # a recording closes its session too
            elif self._recording is not None:
                self._recording.recorder.close()
        super().close()

    # ------------------------------------------------------------------ internals

    @property
    def strehl(self) -> float:
        """The Strehl ratio after the last frame (ground truth or estimate, per `reward`)."""
        return self._strehl

    @property
    def last_frame(self) -> Frame | None:
        """The latest Ronchigram the env took (full camera frame), None before a reset."""
        return self._last_frame

    @property
    def last_change(self) -> dict[str, float]:
        """The knob change (m) made before the latest frame (zeros after a reset)."""
        return dict(self._last_change)

    def _move(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        """Set the knobs to now + ``action x step limit`` within their limits; the clipped
        action and whether a knob limit clipped it."""
        action = np.asarray(action, dtype=np.float32).reshape(self.action_space.shape)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"non-finite action {action}")
        action = np.clip(action, -1.0, 1.0)
        current = self.microscope.read().knobs
        targets: dict[str, float] = {}
        clipped = False
        for knob, delta in zip(
            self.knobs, action.astype(np.float64) * self.step_limits, strict=True
        ):
            lower, upper = self._limits[knob]
            value = current[knob] + float(delta)
            targets[knob] = min(max(value, lower), upper)
            clipped |= targets[knob] != value
        self.microscope.set(targets)
        self._last_change = {knob: targets[knob] - current[knob] for knob in self.knobs}
        return action, clipped

    def _observe(self) -> Observation:
        request = RonchigramRequest(
            exposure_s=self._exposure_s,
            probe_position_m=self._position,
            wait_s=self.config.lens_wait_s,
        )
        frame = self.microscope.acquire(request)
        self._last_frame = frame
        self.acquisitions += 1
        self.dose_e += frame.dose_e
        image = self._image(frame)
        previous = image if self._last_image is None else self._last_image
        self._last_image = image
        pair = np.concatenate([previous, image], axis=0)
        return {"ronchigram": pair, "history": self._history.ravel().copy()}

    def _image(self, frame: Frame) -> np.ndarray:
        aperture = self.config.convergence_rad
        crop = aperture_crop_px(frame, aperture, self.config.observation_margin)
        background = background_counts(frame, aperture)
        return ronchigram_image(frame.data, self.config.observation_size, crop, background)

    def _wavefront_potential(self) -> float:
        """``-ln(phase variance + 0.01) / ln(100)`` of the true aberrations: about -1 for a
        badly aberrated probe, 1 for a perfect one, and smooth where the Strehl ratio is flat."""
        assert self._true_aberrations is not None
        variance = optics.phase_variance(
            self._true_aberrations(), self._wavelength, self.config.convergence_rad
        )
        return -math.log(variance + 0.01) / math.log(100.0)

    def _measure_strehl(self, observation: Observation) -> float:
        if self.config.reward != "estimator" and self._ground_truth is not None:
            return float(self._ground_truth())
        assert self._strehl_from_image is not None
        return float(self._strehl_from_image(observation["ronchigram"], self._last_change))

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "strehl": self._strehl,
            "acquisitions": self.acquisitions,
            "dose_e": self.dose_e,
            "is_success": self._strehl >= self.config.success_strehl,
            "change_m": dict(self._last_change),
            "probe_position_m": self._position,
        }
        if self.config.reward != "estimator" and self._true_aberrations is not None:
            # ground truth, for scoring and curves only; never read with an estimator reward
            info["phase_variance_rad2"] = optics.phase_variance(
                self._true_aberrations(), self._wavelength, self.config.convergence_rad
            )
        return info
