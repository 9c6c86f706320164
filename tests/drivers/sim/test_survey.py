"""The survey twin: a seeded field with ground truth behind the Microscope contract."""

from __future__ import annotations

import numpy as np
import pytest

from emauto.analysis.lattice import find_lattice
from emauto.drivers.sim.survey import (
    CLASSES,
    RANDOM,
    ZONE_AXIS,
    SurveyConfig,
    SurveyField,
    SurveyMicroscope,
)
from emauto.errors import BeamBlankedError, NoLatticeError, OutOfLimitsError, UnknownKnobError
from emauto.microscope import ImageRequest, Microscope, RasterScan


def test_same_seed_same_field_and_frames() -> None:
    a, b = SurveyMicroscope(SurveyConfig(seed=3)), SurveyMicroscope(SurveyConfig(seed=3))
    assert np.array_equal(a.field.centres_m, b.field.centres_m)
    request = ImageRequest(scan=RasterScan(shape=(32, 32)), dwell_s=1e-6)
    assert np.array_equal(a.acquire(request).data, b.acquire(request).data)
    other = SurveyField.generate(SurveyConfig(seed=4))
    assert not np.array_equal(a.field.centres_m, other.centres_m[: len(a.field.centres_m)])


def test_contract_and_bad_setpoints_change_nothing() -> None:
    scope = SurveyMicroscope(SurveyConfig(seed=1))
    assert isinstance(scope, Microscope)
    before = scope.read()
    with pytest.raises(OutOfLimitsError, match="stage_x"):
        scope.set({"stage_x": 1.0, "scan_fov": 10e-9})
    with pytest.raises(UnknownKnobError):
        scope.set({"C10": 1e-9})
    assert scope.read().knobs == before.knobs
    moved = scope.set({"stage_x": 100e-9})
    assert moved.time_s - before.time_s >= scope.config.stage_settle_s  # a stage move costs
    scope.safe()
    with pytest.raises(BeamBlankedError):
        scope.acquire(ImageRequest(scan=RasterScan(shape=(16, 16))))


def test_ground_truth_labels() -> None:
    field = SurveyField.generate(SurveyConfig(seed=2))
    labels = field.labels_at(field.centres_m)
    particle_classes = {CLASSES.index(c) for c in ("particle", "zone_axis", "defect")}
    assert set(labels.tolist()) <= particle_classes
    assert np.all((labels == CLASSES.index("particle")) == (field.kinds == RANDOM))
    holes = field.holes_m[:, :2]
    covered = field.labels_at(holes)
    assert np.all(np.isin(covered, [CLASSES.index(c) for c in CLASSES]))
    assert len(field.targets) == int(np.sum(field.kinds != RANDOM))


def test_zone_axis_particles_show_a_lattice_at_high_magnification() -> None:
    scope = SurveyMicroscope(SurveyConfig(seed=5, diameter_range_m=(8e-9, 12e-9)))
    field = scope.field
    zone = int(np.flatnonzero(field.kinds == ZONE_AXIS)[0])
    plain = np.flatnonzero((field.kinds == RANDOM) & (field.fringe_amplitude == 0))
    request = ImageRequest(scan=RasterScan(shape=(48, 48)), dwell_s=20e-6)
    scope.set({"scan_fov": 48 * 0.075e-9})
    x, y = field.centres_m[zone]
    scope.set({"stage_x": float(x), "stage_y": float(y)})
    lattice = find_lattice(scope.acquire(request).data)
    assert min(lattice.spacings_px) * 0.075e-9 == pytest.approx(2.2e-10, rel=0.15)
    x, y = field.centres_m[int(plain[0])]
    scope.set({"stage_x": float(x), "stage_y": float(y)})
    with pytest.raises(NoLatticeError):
        find_lattice(scope.acquire(request).data)
