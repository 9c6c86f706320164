"""CountingMicroscope: acquisitions and dose counted at the Microscope boundary."""

from __future__ import annotations

import pytest

from emauto.bench.driver import StaticMicroscope
from emauto.errors import AcquisitionBudgetError, BeamBlankedError
from emauto.microscope import RonchigramRequest
from emauto.wrappers.counting import CountingMicroscope


def test_counts_acquisitions_and_dose_and_resets() -> None:
    backend = StaticMicroscope((16, 16))
    counter = CountingMicroscope(backend)
    frames = [counter.acquire(RonchigramRequest(exposure_s=1e-3)) for _ in range(3)]
    counter.set({"C10": 1e-9})
    counter.read()
    assert counter.acquisitions == 3
    assert counter.dose_e == pytest.approx(sum(f.dose_e for f in frames)) and counter.dose_e > 0
    assert backend.read().knobs["C10"] == 1e-9
    counter.reset_counts()
    assert (counter.acquisitions, counter.dose_e) == (0, 0.0)


def test_a_refused_acquisition_is_not_counted() -> None:
    counter = CountingMicroscope(StaticMicroscope((16, 16)))
    counter.safe()
    with pytest.raises(BeamBlankedError):
        counter.acquire(RonchigramRequest(exposure_s=1e-3))
    assert counter.acquisitions == 0 and counter.dose_e == 0.0


def test_an_acquisition_past_the_limit_is_refused_before_the_backend() -> None:
    backend = CountingMicroscope(StaticMicroscope((16, 16)))  # counts what reaches it
    counter = CountingMicroscope(backend, limit=2)
    for _ in range(2):
        counter.acquire(RonchigramRequest(exposure_s=1e-3))
    with pytest.raises(AcquisitionBudgetError):
        counter.acquire(RonchigramRequest(exposure_s=1e-3))
    assert counter.acquisitions == backend.acquisitions == 2
