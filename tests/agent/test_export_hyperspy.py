"""`emauto export` of a session recorded with the twin opens with HyperSpy's ``hs.load``,
with HyperSpy's metadata (beam energy, convergence angle, detector, dwell or exposure) and
calibrated axes (mrad for a Ronchigram, nm for an image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emauto.cli import main
from emauto.sessions.reader import Session

hs = pytest.importorskip(
    "hyperspy.api", reason="HyperSpy is optional: pip install 'emauto[hyperspy]' (in dev)"
)


@pytest.mark.parametrize("fmt", ["hdf5", "zspy"])
def test_export_opens_with_hs_load_with_metadata_and_units(
    recorded_session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    session = Session(recorded_session)
    out = tmp_path / "export"
    assert main(["export", str(recorded_session), "--format", fmt, "--out", str(out)]) == 0
    written = [Path(p) for p in json.loads(capsys.readouterr().out)["written"]]
    assert {p.suffix for p in written} == {".hspy" if fmt == "hdf5" else ".zspy"}
    by_kind = {p.name.split("_")[0]: p for p in written}
    assert set(by_kind) == {"ronchigram", "adf"}
    for kind, unit, factor in (("ronchigram", "mrad", 1e3), ("adf", "nm", 1e9)):
        signal = hs.load(by_kind[kind])
        steps = [s for s in session.acquisitions() if session.frame(s).detector == kind]
        frame = session.frame(steps[-1])
        assert signal.data.shape == (len(steps), *frame.data.shape)
        assert np.array_equal(signal.data[-1], frame.data)
        tem = signal.metadata.Acquisition_instrument.TEM
        assert tem.beam_energy == pytest.approx(session.description.energy_eV / 1e3)  # keV
        assert tem.convergence_angle == pytest.approx(frame.state.knobs["convergence_angle"] * 1e3)
        assert tem.beam_current == pytest.approx(session.description.beam_current_A * 1e9)
        assert tem.Detector.name == kind
        if kind == "ronchigram":
            assert tem.Camera.exposure == pytest.approx(frame.exposure_s)
        else:
            assert tem.Detector.inner_angle == pytest.approx(80.0)  # mrad
            assert tem.dwell_time > 0
        assert signal.metadata.General.date and signal.metadata.General.time
        for axis, calibration in zip(
            signal.axes_manager.signal_axes, reversed(frame.calibrations), strict=True
        ):
            assert (axis.name, axis.units) == (calibration.name, unit)
            assert axis.scale == pytest.approx(calibration.scale * factor)
            assert axis.offset == pytest.approx(calibration.offset * factor)
