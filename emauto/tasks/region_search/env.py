"""`emauto/RegionSearch-v0`: find the targets of a specimen field with as little area, dose
and time as possible.

The field (`emauto.drivers.sim.survey`, default 307 nm square) is divided into ``grid x
grid`` cells, each the size of one high-resolution frame (19.2 nm at 0.075 nm pixels).
An episode starts with a low-magnification survey of the whole field. Each step moves the
stage to a cell and acquires, at one of two magnifications (the zoom):

- ``zoom > 0``: a high-resolution frame of the cell. Its patches go through the patch CNN
  (`emauto.models.classifier`), which fills the cell in the classifier map with the
  highest probability of a target class (``zone_axis`` or ``defect``). A target particle
  (on a zone axis, twinned or not; ground truth) whose centre lies in the cell is *found*.
- ``zoom <= 0``: a medium-magnification overview of the 4 x 4 cells around it (same pixel
  count, 16x the area, 1/16 the dose per area); it refines the survey channel there.

Observation: uint8 (3, S, S), channels first: the survey map (log-scaled ADF), the visited
mask (255: high resolution, 128: overview) and the classifier map. Action: Box[-1, 1]^3:
cell x, cell y, zoom. Reward: ``targets found - dose_cost x dose / dose of a
high-resolution frame - time_cost x time / time of a reference step`` (targets per dose
and time). Terminated when every target is found; truncated after ``max_steps``.
Ground truth (targets) comes from the twin, so this env needs the survey twin.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pydantic import Field

from emauto.drivers.sim.survey import RANDOM, SurveyConfig, SurveyMicroscope
from emauto.microscope import Frame, ImageRequest, RasterScan
from emauto.models.patches import PATCH_PX, frame_features
from emauto.units import ELECTRON_CHARGE_C, StrictModel

TARGET_CLASSES = ("zone_axis", "defect")


class RegionSearchConfig(StrictModel):
    """The region-search task (`RegionSearchEnv`); lengths in m, times in s."""

    survey: SurveyConfig = SurveyConfig()
    field_seeds: tuple[int, int] = Field(
        default=(0, 50_000), description="[low, high) of the field seeds reset draws from"
    )
    grid: int = Field(default=16, ge=2, le=64)
    frame_px: int = Field(default=256, ge=32, le=2048)
    survey_px: int = Field(default=128, ge=16, le=2048)
    observation_px: int = Field(default=64, ge=36, le=256)
    overview_cells: int = Field(default=4, ge=2, le=16)
    dwell_s: float = Field(default=2e-6, gt=0)
    survey_dwell_s: float = Field(default=2e-6, gt=0)
    max_steps: int = Field(default=128, ge=1)
    dose_cost: float = Field(default=0.05, ge=0)
    time_cost: float = Field(default=0.05, ge=0)
    classifier: str | None = Field(default=None, description="weights path (None: shipped)")


class RegionSearchEnv(gym.Env[np.ndarray, np.ndarray]):
    """Region finding on the survey twin (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        config: RegionSearchConfig | dict[str, Any] | None = None,
        *,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = RegionSearchConfig.model_validate(config)
        self.config = config or RegionSearchConfig()
        self.render_mode = render_mode
        from emauto.models.classifier import load_classifier

        self.classifier = load_classifier(self.config.classifier)
        self._target_columns = [self.classifier.classes.index(c) for c in TARGET_CLASSES]
        g, s = self.config.grid, self.config.observation_px
        self.observation_space = spaces.Box(0, 255, (3, s, s), dtype=np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
        self.cell_m = self.config.survey.field_m / g
        self.visited = np.zeros((g, g), dtype=np.uint8)  # 0 none, 1 overview, 2 high-res
        self.classifier_map = np.zeros((g, g), dtype=np.float32)
        self.survey = np.zeros((self.config.survey_px, self.config.survey_px), dtype=np.float32)
        self.scope = SurveyMicroscope(self.config.survey)
        self._target_cells = np.zeros((0, 2), dtype=np.int64)
        self._found = np.zeros(0, dtype=bool)
        self._steps = 0
        self._reference_dose = 1.0
        self._reference_time = 1.0
        self.last_frame: Frame | None = None
        self.field_seed: int | None = None
        self.dose_e = 0.0
        self.time_s = 0.0
        self.high_res_frames = 0
        n = self.config.frame_px // PATCH_PX
        self.patch_target_probability = np.zeros((n, n), dtype=np.float32)

    @property
    def reference_dose_e(self) -> float:
        """Electrons of one high-resolution frame (the unit of the dose cost)."""
        return self._reference_dose

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new field (``options={"field_seed": N}`` picks one), then the survey."""
        super().reset(seed=seed)
        low, high = self.config.field_seeds
        field_seed = int(self.np_random.integers(low, high))
        if options and "field_seed" in options:
            field_seed = int(options["field_seed"])
        survey_config = self.config.survey.model_copy(update={"seed": field_seed})
        self.scope = SurveyMicroscope(survey_config)
        self.field_seed = field_seed
        self.visited[:] = 0
        self.classifier_map[:] = 0.0
        self._steps = 0
        self.dose_e = 0.0
        field = self.scope.field
        targets = field.centres_m[field.kinds != RANDOM]
        self._target_cells = self.cell_of(targets)
        self._found = np.zeros(len(targets), dtype=bool)
        frame = self._acquire((0.0, 0.0), self.config.survey.field_m, self.config.survey_px,
                              self.config.survey_dwell_s)  # fmt: skip
        self.survey = self._log_map(frame)
        per_frame_e = self.config.survey.beam_current_A * self.config.dwell_s / ELECTRON_CHARGE_C
        self._reference_dose = per_frame_e * self.config.frame_px**2
        self._reference_time = (
            self.config.frame_px**2 * self.config.dwell_s + self.config.survey.stage_settle_s
        )
        self.time_s = frame.duration_s
        self.high_res_frames = 0
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move to the cell at ``action[:2]``, acquire at the zoom ``action[2]``."""
        action = np.asarray(action, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"non-finite action {action}")
        action = np.clip(action, -1.0, 1.0)
        g = self.config.grid
        col = min(int((action[0] + 1) / 2 * g), g - 1)
        row = min(int((action[1] + 1) / 2 * g), g - 1)
        start_time = self.scope.read().time_s
        dose_before = self.dose_e
        new = self.acquire_cell(row, col) if action[2] > 0 else self.overview(row, col)
        self._steps += 1
        step_time = self.scope.read().time_s - start_time
        self.time_s += step_time
        reward = (
            new
            - self.config.dose_cost * (self.dose_e - dose_before) / self._reference_dose
            - self.config.time_cost * step_time / self._reference_time
        )
        terminated = bool(self._found.all()) if len(self._found) else True
        truncated = not terminated and self._steps >= self.config.max_steps
        return self._observation(), float(reward), terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        """The observation as an RGB image (S, S, 3): survey grey, visits red, classes green."""
        obs = self._observation()
        return np.ascontiguousarray(np.stack([obs[1], obs[2], obs[0]], axis=2))

    # ------------------------------------------------------------------ actions

    def cell_centre(self, row: int, col: int) -> tuple[float, float]:
        """Centre (x, y) in m of cell (row, col); row 0 at the smallest y."""
        half = self.config.survey.field_m / 2
        return (-half + (col + 0.5) * self.cell_m, -half + (row + 0.5) * self.cell_m)

    def cell_of(self, points_m: np.ndarray) -> np.ndarray:
        """(row, col) of the cells holding points (N, 2)."""
        half = self.config.survey.field_m / 2
        index = np.floor((np.asarray(points_m).reshape(-1, 2) + half) / self.cell_m).astype(int)
        index = np.clip(index, 0, self.config.grid - 1)
        return np.stack([index[:, 1], index[:, 0]], axis=1)

    def acquire_cell(self, row: int, col: int) -> int:
        """High-resolution frame of a cell; classify its patches; return new targets found."""
        frame = self._acquire(self.cell_centre(row, col), self.cell_m, self.config.frame_px,
                              self.config.dwell_s)  # fmt: skip
        self.high_res_frames += 1
        features = frame_features(frame)
        n = self.config.frame_px // PATCH_PX
        patches = (
            features[: n * PATCH_PX, : n * PATCH_PX]
            .reshape(n, PATCH_PX, n, PATCH_PX)
            .transpose(0, 2, 1, 3)
            .reshape(-1, PATCH_PX, PATCH_PX)
        )
        p = self.classifier.predict_proba(patches)[:, self._target_columns].sum(axis=1)
        self.patch_target_probability = p.reshape(n, n)
        self.classifier_map[row, col] = float(p.max())
        self.visited[row, col] = 2
        hit = (self._target_cells[:, 0] == row) & (self._target_cells[:, 1] == col) & ~self._found
        self._found |= hit
        return int(hit.sum())

    def overview(self, row: int, col: int) -> int:
        """Medium-magnification frame of the ``overview_cells`` square around a cell."""
        k, g = self.config.overview_cells, self.config.grid
        r0 = min(max(row - k // 2, 0), g - k)
        c0 = min(max(col - k // 2, 0), g - k)
        x0, y0 = self.cell_centre(r0, c0)
        centre = (x0 + (k - 1) / 2 * self.cell_m, y0 + (k - 1) / 2 * self.cell_m)
        frame = self._acquire(centre, k * self.cell_m, self.config.frame_px, self.config.dwell_s)
        s = self.config.survey_px // g
        block = self._log_map(frame)
        zoomed = block.reshape(k * s, block.shape[0] // (k * s), k * s, -1).mean(axis=(1, 3))
        self.survey[r0 * s : (r0 + k) * s, c0 * s : (c0 + k) * s] = zoomed
        region = self.visited[r0 : r0 + k, c0 : c0 + k]
        region[region == 0] = 1
        return 0

    # ------------------------------------------------------------------ internals

    def _acquire(self, centre: tuple[float, float], fov: float, px: int, dwell: float) -> Frame:
        half = self.config.survey.field_m / 2
        x = float(np.clip(centre[0], -half, half))
        y = float(np.clip(centre[1], -half, half))
        before = self.scope.read().dose_e
        self.scope.set({"stage_x": x, "stage_y": y, "scan_fov": fov})
        frame = self.scope.acquire(ImageRequest(scan=RasterScan(shape=(px, px)), dwell_s=dwell))
        self.dose_e += self.scope.read().dose_e - before
        self.last_frame = frame
        return frame

    @staticmethod
    def _log_map(frame: Frame) -> np.ndarray:
        """Scattered fraction on a log scale in [0, 1] (1e-3 .. 1)."""
        features = frame_features(frame)  # log10(f + 1e-3) + 2, in [-1, 2]
        return np.clip((features + 1.0) / 3.0, 0.0, 1.0).astype(np.float32)

    def _observation(self) -> np.ndarray:
        s = self.config.observation_px
        survey = _resize(self.survey, s)
        visited = _resize(self.visited.astype(np.float32) / 2, s)
        classes = _resize(self.classifier_map, s)
        stack = np.stack([survey, visited, classes])
        return np.round(np.clip(stack, 0, 1) * 255).astype(np.uint8)

    def _info(self) -> dict[str, Any]:
        g = self.config.grid
        return {
            "targets": len(self._found),
            "targets_found": int(self._found.sum()),
            "found_fraction": float(self._found.mean()) if len(self._found) else 1.0,
            "area_fraction": float((self.visited == 2).sum()) / (g * g),
            "dose_e": self.dose_e,
            "time_s": self.time_s,
            "steps": self._steps,
            "field_seed": self.field_seed,
        }


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square map to (size, size)."""
    n = image.shape[0]
    index = np.minimum((np.arange(size) * n / size).astype(int), n - 1)
    return image[np.ix_(index, index)]


def cell_action(row: int, col: int, grid: int, zoom: float = 1.0) -> np.ndarray:
    """The action (x, y, zoom) in [-1, 1] that selects cell (row, col)."""
    return np.array([(2 * col + 1) / grid - 1, (2 * row + 1) / grid - 1, zoom], dtype=np.float32)


__all__ = ["RegionSearchConfig", "RegionSearchEnv", "cell_action"]
