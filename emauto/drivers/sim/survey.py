"""A specimen worth searching: a large field of Au nanoparticles on holey amorphous carbon.

`SurveyField` is an *image-level* model of a field many times the high-resolution frame
(default 307 nm square, 16 x 16 high-resolution frames of 19.2 nm), with ground truth:

- an amorphous carbon film (3 nm, slowly varying thickness, atomic-scale texture fixed in
  space) with circular **holes** (vacuum);
- **contamination**: smooth domes of hydrocarbon, up to 15 nm thick;
- **Au particles** (2-12 nm, spheres or faceted hexagonal projections), partly clustered:
  ``random`` orientation (no fringes or one set of {111} fringes), on the **[110] zone
  axis** (the projected column lattice: {111} and {002} fringes) and **twinned** on the zone
  axis (the lattice mirrored across a twin boundary through the particle).

The ADF signal is ``1 - exp(-sum_i k_i t_i)`` with the projected thickness ``t_i`` of carbon,
contamination and Au (Au per nm ~40x carbon, roughly the Z^1.7 and density ratio), the
zone-axis lattice as a cosine modulation of the Au signal (contrast attenuated by the probe
and pixel transfer, dropped above Nyquist), channelling as a 1.3x brighter zone-axis
particle, and Poisson counting of the electrons a pixel receives.

What it simplifies, against the abTEM twin (`sim://?specimen=au_on_carbon`, which builds
the same kind of specimen atom by atom over 20 nm): no atoms, no probe aberrations (the
probe is a Gaussian of ``probe_sigma_m``), no multiple scattering beyond the exponential,
lattice images are ideal fringe patterns. It exists so that a field of a few hundred
nanometres can be surveyed, zoomed into and searched in milliseconds; the atomistic twin
is the reference for what one frame at atomic resolution looks like.

`SurveyMicroscope` puts the field behind the Microscope contract (stage moves and the scan
field of view are the knobs; `ImageRequest` over a raster or positions on the ``adf``
detector) and keeps a simulated clock: stage moves cost ``distance / stage speed + settle``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from emauto.errors import BeamBlankedError, ClosedError, InvalidRequestError
from emauto.microscope import (
    Calibration,
    DetectorSpec,
    Frame,
    ImageRequest,
    KnobSpec,
    MicroscopeDescription,
    MicroscopeState,
    PositionsScan,
    RasterScan,
    RonchigramRequest,
    ScanLimits,
    validate_setpoints,
)
from emauto.units import ELECTRON_CHARGE_C, StrictModel

#: Patch classes, in the order of the classifiers' outputs.
CLASSES = ("vacuum", "support", "contamination", "particle", "zone_axis", "defect")
#: Particle kinds in `SurveyField.kinds`.
RANDOM, ZONE_AXIS, TWINNED = 0, 1, 2
_D111_M = 2.355e-10
_D002_M = 2.039e-10
_ZONE_ANGLE = math.radians(54.74)  # between {111} and {002} traces in [110]
_K_CARBON = 1.0e6  # 1/m: signal per metre of carbon (3 nm -> 0.3 %)
_K_GOLD = 4.0e7  # 1/m: per metre of Au
_TEXTURE_M = 0.15e-9  # correlation length of the amorphous texture


class SurveyConfig(StrictModel):
    """The survey field (`SurveyField`) and its microscope (`SurveyMicroscope`), SI units."""

    seed: int = Field(default=0, ge=0)
    field_m: float = Field(default=307.2e-9, gt=10e-9, le=100e-6, description="field side")
    n_particles: int = Field(default=80, ge=0, le=5000)
    n_clusters: int = Field(default=4, ge=1, le=100)
    cluster_fraction: float = Field(default=0.7, ge=0, le=1)
    cluster_sigma_m: float = Field(default=20e-9, gt=0)
    diameter_range_m: tuple[float, float] = (2e-9, 12e-9)
    zone_axis_fraction: float = Field(default=0.3, ge=0, le=1)
    twinned_fraction: float = Field(default=0.3, ge=0, le=1, description="of zone-axis ones")
    n_holes: int = Field(default=2, ge=0, le=100)
    hole_radius_range_m: tuple[float, float] = (20e-9, 50e-9)
    n_contamination: int = Field(default=5, ge=0, le=1000)
    contamination_radius_range_m: tuple[float, float] = (4e-9, 20e-9)
    carbon_thickness_m: float = Field(default=3e-9, gt=0, le=100e-9)
    probe_sigma_m: float = Field(default=0.04e-9, gt=0, le=10e-9)
    beam_current_A: float = Field(default=20e-12, gt=0, le=1e-6)
    stage_speed_m_per_s: float = Field(default=20e-6, gt=0)
    stage_settle_s: float = Field(default=0.5, ge=0)
    poisson: bool = True
    read_noise_counts: float = Field(default=0.2, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> SurveyConfig:
        for name in ("diameter_range_m", "hole_radius_range_m", "contamination_radius_range_m"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(
                    f"{name}: expected (min, max) with 0 < min <= max, got {(low, high)}"
                )
        return self


@dataclass(frozen=True)
class SurveyField:
    """Ground truth of one field; coordinates (x, y) in metres, origin at the field centre."""

    config: SurveyConfig
    centres_m: np.ndarray  # (n, 2) particle centres
    radii_m: np.ndarray  # (n,)
    kinds: np.ndarray  # (n,) RANDOM, ZONE_AXIS or TWINNED
    faceted: np.ndarray  # (n,) bool: hexagonal projection
    lattice_angle_rad: np.ndarray  # (n,) in-plane rotation of the lattice / facets
    fringe_amplitude: np.ndarray  # (n,) contrast of the lattice (0: none)
    twin_angle_rad: np.ndarray  # (n,) direction of the twin boundary (twinned only)
    twin_offset_m: np.ndarray  # (n,) signed distance of the boundary from the centre
    holes_m: np.ndarray  # (h, 3): x, y, radius
    contamination_m: np.ndarray  # (c, 4): x, y, radius, peak thickness
    film_waves: np.ndarray  # (w, 3): kx, ky (1/m), phase

    @classmethod
    def generate(cls, config: SurveyConfig | None = None) -> SurveyField:
        """Draw a field from ``config.seed`` (same seed, same field)."""
        cfg = config or SurveyConfig()
        rng = np.random.default_rng(cfg.seed)
        half = cfg.field_m / 2
        n = cfg.n_particles
        low, high = cfg.diameter_range_m
        radii = np.exp(rng.uniform(math.log(low), math.log(high), size=n)) / 2
        cluster_centres = rng.uniform(-0.75 * half, 0.75 * half, size=(cfg.n_clusters, 2))
        centres = np.zeros((n, 2))
        placed = 0
        for _attempt in range(200 * max(n, 1)):
            if placed == n:
                break
            if rng.uniform() < cfg.cluster_fraction:
                c = cluster_centres[rng.integers(cfg.n_clusters)]
                xy = c + rng.normal(0, cfg.cluster_sigma_m, size=2)
            else:
                xy = rng.uniform(-half, half, size=2)
            r = radii[placed]
            if np.any(np.abs(xy) > half - r):
                continue
            gaps = np.hypot(*(centres[:placed] - xy).T) - radii[:placed] - r
            if placed and gaps.min() < 0.5e-9:
                continue
            centres[placed] = xy
            placed += 1
        centres, radii = centres[:placed], radii[:placed]
        n = placed
        kinds = np.full(n, RANDOM)
        zone = rng.uniform(size=n) < cfg.zone_axis_fraction
        kinds[zone] = ZONE_AXIS
        kinds[zone & (rng.uniform(size=n) < cfg.twinned_fraction)] = TWINNED
        fringes = np.where(kinds == RANDOM, np.where(rng.uniform(size=n) < 0.5, 0.3, 0.0), 0.8)
        hole_r = rng.uniform(*cfg.hole_radius_range_m, size=cfg.n_holes)
        holes = np.column_stack([rng.uniform(-half, half, size=(cfg.n_holes, 2)), hole_r])
        c_r = rng.uniform(*cfg.contamination_radius_range_m, size=cfg.n_contamination)
        contamination = np.column_stack(
            [
                rng.uniform(-half, half, size=(cfg.n_contamination, 2)),
                c_r,
                rng.uniform(5e-9, 15e-9, size=cfg.n_contamination),
            ]
        )
        k = rng.uniform(1 / 200e-9, 1 / 40e-9, size=6)
        angle = rng.uniform(0, 2 * math.pi, size=6)
        waves = np.column_stack([k * np.cos(angle), k * np.sin(angle), rng.uniform(0, 6.3, 6)])
        return cls(
            config=cfg,
            centres_m=centres,
            radii_m=radii,
            kinds=kinds,
            faceted=rng.uniform(size=n) < 0.5,
            lattice_angle_rad=rng.uniform(0, math.pi, size=n),
            fringe_amplitude=fringes,
            twin_angle_rad=rng.uniform(0, math.pi, size=n),
            twin_offset_m=rng.uniform(-0.3, 0.3, size=n) * radii,
            holes_m=holes,
            contamination_m=contamination,
            film_waves=waves,
        )

    # ------------------------------------------------------------------ ground truth

    @property
    def targets(self) -> np.ndarray:
        """Indices of the target particles: those on a zone axis (twinned or not)."""
        return np.flatnonzero(self.kinds != RANDOM)

    @staticmethod
    def _overlaps(points: np.ndarray, centres: np.ndarray, reach: np.ndarray) -> np.ndarray:
        """Which discs (centres (n, 2), reach (n,)) touch the bounding box of ``points``."""
        if len(points) == 0:
            return np.zeros(len(centres), dtype=bool)
        low, high = points.min(axis=0), points.max(axis=0)
        return np.all(
            (centres + reach[:, None] >= low) & (centres - reach[:, None] <= high), axis=1
        )

    def _in_hole(self, points: np.ndarray) -> np.ndarray:
        inside = np.zeros(len(points), dtype=bool)
        touching = self._overlaps(points, self.holes_m[:, :2], self.holes_m[:, 2])
        for x, y, r in self.holes_m[touching]:
            inside |= np.hypot(points[:, 0] - x, points[:, 1] - y) < r
        return inside

    def _contamination(self, points: np.ndarray) -> np.ndarray:
        thickness = np.zeros(len(points))
        c = self.contamination_m
        for x, y, r, h in c[self._overlaps(points, c[:, :2], c[:, 2])]:
            d2 = ((points[:, 0] - x) ** 2 + (points[:, 1] - y) ** 2) / r**2
            thickness += h * np.sqrt(np.clip(1 - d2, 0, None))
        return thickness

    def _particle_distance(self, index: int, points: np.ndarray) -> np.ndarray:
        """Normalised distance (1 = edge) of ``points`` from particle ``index``'s centre."""
        rel = points - self.centres_m[index]
        r = self.radii_m[index]
        if not self.faceted[index]:
            return np.hypot(rel[:, 0], rel[:, 1]) / r
        angles = self.lattice_angle_rad[index] + np.arange(6) * math.pi / 3
        normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return np.max(rel @ normals.T, axis=1) / (r * math.cos(math.pi / 6))

    def labels_at(self, points_m: np.ndarray, defect_radius_m: float = 0.6e-9) -> np.ndarray:
        """Class index (see `CLASSES`) at each point (N, 2): particle classes win over
        contamination (> 2 nm), vacuum (a hole) and support. ``defect``: inside a twinned
        particle within ``defect_radius_m`` of its twin boundary."""
        points = np.asarray(points_m, dtype=np.float64).reshape(-1, 2)
        labels = np.full(len(points), CLASSES.index("support"))
        labels[self._in_hole(points)] = CLASSES.index("vacuum")
        labels[self._contamination(points) > 2e-9] = CLASSES.index("contamination")
        touching = self._overlaps(points, self.centres_m, 1.2 * self.radii_m)
        for i in (int(k) for k in np.flatnonzero(touching)):
            near = np.all(np.abs(points - self.centres_m[i]) <= 1.2 * self.radii_m[i], axis=1)
            if not np.any(near):
                continue
            idx = np.flatnonzero(near)
            inside = self._particle_distance(i, points[idx]) < 0.9
            if self.kinds[i] == RANDOM:
                labels[idx[inside]] = CLASSES.index("particle")
                continue
            labels[idx[inside]] = CLASSES.index("zone_axis")
            if self.kinds[i] == TWINNED:
                boundary = np.abs(self._twin_side(i, points[idx]))
                labels[idx[inside & (boundary < defect_radius_m)]] = CLASSES.index("defect")
        return labels

    def _twin_side(self, index: int, points: np.ndarray) -> np.ndarray:
        """Signed distance (m) of points from particle ``index``'s twin boundary."""
        a = self.twin_angle_rad[index]
        normal = np.array([-math.sin(a), math.cos(a)])
        return (points - self.centres_m[index]) @ normal - self.twin_offset_m[index]

    # ------------------------------------------------------------------ signal

    def signal(self, points_m: np.ndarray, pixel_m: float) -> np.ndarray:
        """Fraction of beam electrons reaching the ADF detector at each point (N, 2), for a
        probe of ``probe_sigma_m`` sampled with pixels of ``pixel_m`` (m)."""
        cfg = self.config
        points = np.asarray(points_m, dtype=np.float64).reshape(-1, 2)
        film = np.ones(len(points))
        for kx, ky, phase in self.film_waves:
            film += 0.04 * np.cos(2 * math.pi * (kx * points[:, 0] + ky * points[:, 1]) + phase)
        texture_gain = 0.3 * min(1.0, _TEXTURE_M / max(pixel_m, 1e-12))
        film *= 1 + texture_gain * self._texture(points)
        carbon = cfg.carbon_thickness_m * film * ~self._in_hole(points)
        exponent = _K_CARBON * (carbon + self._contamination(points))
        exponent += _K_GOLD * self._gold(points, pixel_m)
        return 1.0 - np.exp(-exponent)

    def _texture(self, points: np.ndarray) -> np.ndarray:
        """Amorphous texture in [-1, 1], fixed in space: hashed value noise, bilinear."""
        u = points / _TEXTURE_M
        i0 = np.floor(u).astype(np.int64)
        f = u - i0
        f = f * f * (3 - 2 * f)

        def hashed(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
            h = np.sin(ix * 12.9898 + iy * 78.233 + self.config.seed * 0.917) * 43758.5453
            return 2 * (h - np.floor(h)) - 1

        x0, y0 = i0[:, 0], i0[:, 1]
        top = hashed(x0, y0) * (1 - f[:, 0]) + hashed(x0 + 1, y0) * f[:, 0]
        bottom = hashed(x0, y0 + 1) * (1 - f[:, 0]) + hashed(x0 + 1, y0 + 1) * f[:, 0]
        return top * (1 - f[:, 1]) + bottom * f[:, 1]

    def _gold(self, points: np.ndarray, pixel_m: float) -> np.ndarray:
        """Effective projected Au thickness (m) with lattice contrast and channelling."""
        blur2 = self.config.probe_sigma_m**2 + pixel_m**2 / 12
        thickness = np.zeros(len(points))
        touching = self._overlaps(points, self.centres_m, self.radii_m + 2 * pixel_m)
        for i in (int(k) for k in np.flatnonzero(touching)):
            r = self.radii_m[i]
            near = np.all(np.abs(points - self.centres_m[i]) <= r + 2 * pixel_m, axis=1)
            if not np.any(near):
                continue
            idx = np.flatnonzero(near)
            rho = self._particle_distance(i, points[idx])
            profile = 2 * r * np.sqrt(np.clip(1 - rho**2, 0, None))
            if self.fringe_amplitude[i] > 0:
                profile *= 1 + self._lattice(i, points[idx], pixel_m, blur2)
            if self.kinds[i] != RANDOM:
                profile *= 1.3  # channelling on the zone axis
            thickness[idx] += profile
        return thickness

    def _lattice(self, index: int, points: np.ndarray, pixel_m: float, blur2: float) -> np.ndarray:
        rel = points - self.centres_m[index]
        theta = np.full(len(points), self.lattice_angle_rad[index])
        if self.kinds[index] == TWINNED:
            mirror = 2 * self.twin_angle_rad[index] - self.lattice_angle_rad[index]
            theta = np.where(self._twin_side(index, points) > 0, mirror, theta)
        if self.kinds[index] == RANDOM:
            sets = [(0.0, _D111_M)]
        else:
            sets = [(_ZONE_ANGLE, _D111_M), (-_ZONE_ANGLE, _D111_M), (0.0, _D002_M)]
        pattern = np.zeros(len(points))
        for offset, spacing in sets:
            g = 1 / spacing
            if g > 1 / (2 * pixel_m):
                continue  # above Nyquist: not resolved at this magnification
            transfer = math.exp(-2 * math.pi**2 * blur2 * g**2)
            phase = rel[:, 0] * np.cos(theta + offset) + rel[:, 1] * np.sin(theta + offset)
            pattern += transfer * np.cos(2 * math.pi * g * phase)
        return self.fringe_amplitude[index] * pattern / len(sets)


def _knobs(field_m: float) -> dict[str, KnobSpec]:
    half = field_m / 2
    specs = [
        KnobSpec(name="stage_x", unit="m", lower=-half, upper=half, max_step=field_m,
                 description="stage position x: the field point at the scan centre"),
        KnobSpec(name="stage_y", unit="m", lower=-half, upper=half, max_step=field_m,
                 description="stage position y"),
        KnobSpec(name="scan_fov", unit="m", lower=1e-9, upper=field_m, max_step=field_m,
                 description="scan field of view along x (the magnification)"),
        KnobSpec(name="scan_rotation", unit="rad", lower=-math.pi, upper=math.pi,
                 max_step=2 * math.pi, description="scan rotation, counter-clockwise"),
        KnobSpec(name="scan_dwell", unit="s", lower=1e-7, upper=1e-3, max_step=1e-3,
                 description="default dwell time per scan position"),
        KnobSpec(name="beam_blank", unit="", lower=0.0, upper=1.0, max_step=1.0, binary=True,
                 description="1 = beam blanked"),
    ]  # fmt: skip
    return {s.name: s for s in specs}


class SurveyMicroscope:
    """The survey field behind the Microscope contract (a twin for region finding)."""

    def __init__(self, config: SurveyConfig | None = None, field: SurveyField | None = None):
        self.config = config or (field.config if field is not None else SurveyConfig())
        self.field = field or SurveyField.generate(self.config)
        knobs = _knobs(self.config.field_m)
        self._description = MicroscopeDescription(
            backend="sim:survey",
            energy_eV=200e3,
            beam_current_A=self.config.beam_current_A,
            knobs=knobs,
            detectors={
                "adf": DetectorSpec(
                    name="adf", kind="scan", inner_angle_rad=0.08, outer_angle_rad=0.2,
                    gain_counts_per_e=1.0, read_noise_counts=self.config.read_noise_counts,
                )
            },
            scan=ScanLimits(
                max_fov_m=self.config.field_m, max_offset_m=self.config.field_m,
                min_dwell_s=1e-7, max_dwell_s=1e-3, max_positions=2048 * 2048,
                min_exposure_s=1e-4, max_exposure_s=10.0, settle_s=2e-6, flyback_s=20e-6,
            ),
        )  # fmt: skip
        self._closed = False
        self.restart(self.config.seed)

    def restart(self, seed: int) -> None:
        """Start clock, dose, stage and noise again from ``seed`` (the field is kept)."""
        self._rng = np.random.default_rng(seed)
        self._knobs = {"stage_x": 0.0, "stage_y": 0.0, "scan_fov": 20e-9, "scan_rotation": 0.0,
                       "scan_dwell": 2e-6, "beam_blank": 0.0}  # fmt: skip
        self._time_s = 0.0
        self._dose_e = 0.0

    def describe(self) -> MicroscopeDescription:
        """Knobs (stage, scan field of view, rotation, dwell, blank), the ADF detector."""
        return self._description

    def read(self) -> MicroscopeState:
        """Knob setpoints, simulated time (s) and delivered dose (electrons)."""
        self._check_open()
        return MicroscopeState(
            knobs=dict(self._knobs),
            beam_blanked=self._knobs["beam_blank"] == 1.0,
            time_s=self._time_s,
            dose_e=self._dose_e,
        )

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        """Apply absolute setpoints atomically; a stage move costs travel and settle time."""
        self._check_open()
        checked = validate_setpoints(self._description, self._knobs, setpoints)
        move = math.hypot(
            checked.get("stage_x", self._knobs["stage_x"]) - self._knobs["stage_x"],
            checked.get("stage_y", self._knobs["stage_y"]) - self._knobs["stage_y"],
        )
        if move > 0:
            self._time_s += move / self.config.stage_speed_m_per_s + self.config.stage_settle_s
        self._time_s += 1e-3
        self._knobs.update(checked)
        return self.read()

    def safe(self) -> None:
        """Blank the beam."""
        if not self._closed:
            self._knobs["beam_blank"] = 1.0

    def close(self) -> None:
        """Go safe and release the field."""
        self.safe()
        self._closed = True

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        """An ADF image over a raster or explicit positions (scan frame, m)."""
        self._check_open()
        if not isinstance(request, ImageRequest) or request.detector != "adf":
            raise InvalidRequestError(
                f"the survey twin has one scanned detector 'adf'; got {type(request).__name__}"
                f" for {getattr(request, 'detector', '?')!r}"
            )
        if self._knobs["beam_blank"] == 1.0:
            raise BeamBlankedError("the beam is blanked; set beam_blank to 0 to acquire")
        dwell = request.dwell_s if request.dwell_s is not None else self._knobs["scan_dwell"]
        limits = self._description.scan
        if not limits.min_dwell_s <= dwell <= limits.max_dwell_s:
            raise InvalidRequestError(
                f"dwell {dwell:g} s outside [{limits.min_dwell_s:g}, {limits.max_dwell_s:g}] s"
            )
        fov = self._knobs["scan_fov"]
        scan = request.scan
        if isinstance(scan, RasterScan):
            ny, nx = scan.shape
            pixel = fov / nx
            positions = scan.positions(fov)
        elif isinstance(scan, PositionsScan):
            positions = np.asarray(scan.positions_m)
            pixel = fov / 256
        else:
            raise InvalidRequestError("the survey twin scans rasters and positions, not segments")
        if positions.shape[0] > limits.max_positions:
            raise InvalidRequestError(
                f"{positions.shape[0]} positions requested, at most {limits.max_positions}"
            )
        state = self.read()
        rotation = self._knobs["scan_rotation"]
        c, s = math.cos(rotation), math.sin(rotation)
        points = positions @ np.array([[c, s], [-s, c]])
        points = points + np.array([self._knobs["stage_x"], self._knobs["stage_y"]])
        fraction = self._supersampled_signal(points, pixel)
        per_position_e = self.config.beam_current_A * dwell / ELECTRON_CHARGE_C
        expected = fraction * per_position_e
        counts = self._rng.poisson(expected).astype(np.float64) if self.config.poisson else expected
        if self.config.read_noise_counts > 0:
            counts = counts + self._rng.normal(0, self.config.read_noise_counts, counts.shape)
        data = counts.astype(np.float32)
        n = len(positions)
        duration = n * dwell + (
            scan.shape[0] * limits.flyback_s if isinstance(scan, RasterScan) else 0
        )
        self._time_s += duration
        self._dose_e += per_position_e * n
        if isinstance(scan, RasterScan):
            data = data.reshape(scan.shape)
            area = fov * fov * scan.shape[0] / scan.shape[1]
            calibrations: tuple[Calibration, ...] = (
                Calibration(name="y", units="m", scale=pixel, offset=-(ny - 1) / 2 * pixel),
                Calibration(name="x", units="m", scale=pixel, offset=-(nx - 1) / 2 * pixel),
            )
            frame_positions = None
        else:
            area = max(pixel**2 * n, 1e-30)
            calibrations = (Calibration(name="index", units="", scale=1.0),)
            frame_positions = positions
        return Frame(
            kind="image",
            detector="adf",
            data=data,
            calibrations=calibrations,
            positions_m=frame_positions,
            dose_e=per_position_e * n,
            dose_e_per_m2=per_position_e * n / area,
            exposure_s=n * dwell,
            duration_s=duration,
            state=state,
            request=request,
        )

    def _supersampled_signal(self, points: np.ndarray, pixel: float) -> np.ndarray:
        """The signal averaged over the pixel (2x2 sub-samples when pixels exceed 0.5 nm)."""
        if pixel <= 0.5e-9:
            return self.field.signal(points, pixel)
        offsets = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]]) * pixel / 4
        return np.mean([self.field.signal(points + o, pixel / 2) for o in offsets], axis=0)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this survey microscope has been closed")
