"""`emauto export SESSION --format hdf5|zspy`: HyperSpy files of a session.

- ``hdf5``: HyperSpy's HDF5 format (``.hspy``, written by rosettasciio): one signal per
  group of frames of the same kind and shape, stacked along a ``step`` navigation axis, with
  calibrated signal axes (nm in real space, mrad for a Ronchigram); HyperSpy's metadata
  (``Acquisition_instrument.TEM``: beam energy in keV, beam current in nA, convergence angle
  in mrad, stage, detector, exposure or dwell time; ``General.date`` / ``time``, see
  `instrument_metadata`); the session's start document and each frame's step, knobs and dose
  as JSON text in ``original_metadata`` (``emauto_start_json``, ``emauto_frames_json``).
  ``hs.load`` opens it (``pip install emauto[hyperspy]``).
- ``zspy``: the same signals in HyperSpy's Zarr format. rosettasciio's own zspy writer needs
  zarr 2 while abTEM needs zarr 3, so emauto drives rosettasciio's `ZspyWriter` on a group
  opened in Zarr format 2 by zarr 3: the layout on disk is the one HyperSpy reads.
- ``minari`` (a Minari dataset for offline RL, made by replaying the probe-tuning env)
  lives with that task: `emauto.tasks.probe_tuning.minari`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emauto.errors import SessionError
from emauto.microscope import Frame
from emauto.sessions.reader import Session, Step
from emauto.version import __version__


def _signal(session: Session, name: str, steps: list[Step], frames: list[Frame]) -> dict[str, Any]:
    """A rosettasciio signal dictionary for frames of one kind and shape."""
    first = frames[0]
    data = np.stack([np.asarray(f.data, dtype=np.float32) for f in frames])
    axes: list[dict[str, Any]] = [
        {
            "name": "step",
            "units": "",
            "scale": 1.0,
            "offset": 0.0,
            "size": len(frames),
            "navigate": True,
        }
    ]
    if first.data.ndim == 2:
        for calibration, size in zip(first.calibrations, first.data.shape, strict=True):
            factor, units = _AXIS_UNITS.get(calibration.units, (1.0, calibration.units))
            axes.append(
                {
                    "name": calibration.name,
                    "units": units,
                    "scale": calibration.scale * factor,
                    "offset": calibration.offset * factor,
                    "size": int(size),
                    "navigate": False,
                }
            )
    else:
        axes.append(
            {
                "name": "position",
                "units": "",
                "scale": 1.0,
                "offset": 0.0,
                "size": int(first.data.shape[0]),
                "navigate": False,
            }
        )
    per_frame = [
        {
            "seq": s.seq,
            "task": s.task,
            "dose_e": f.dose_e,
            "exposure_s": f.exposure_s,
            "timestamp": f.timestamp,
            "knobs": dict(f.state.knobs),
            "request": f.request.model_dump(mode="json"),
        }
        for s, f in zip(steps, frames, strict=True)
    ]
    return {
        "data": data,
        "axes": axes,
        "metadata": {
            "General": {
                "title": name,
                "original_filename": session.path.name,
                **_date_time(first.timestamp),
            },
            "Signal": {"signal_type": "", "quantity": "Counts"},
            "Acquisition_instrument": {"TEM": instrument_metadata(session, first)},
        },
        # JSON text: lists inside metadata would become one tiny dataset per entry
        "original_metadata": {
            "emauto_start_json": json.dumps(session.start),
            "emauto_frames_json": json.dumps(per_frame),
        },
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "models": {},
        "learning_results": {},
        "package_info": {"name": "emauto", "version": __version__},
    }


#: HyperSpy axis units of an SI calibration: (factor, unit): nm for m, mrad for rad.
_AXIS_UNITS = {"m": (1e9, "nm"), "rad": (1e3, "mrad")}


def _date_time(timestamp: float) -> dict[str, str]:
    """HyperSpy's ``General.date`` and ``General.time`` (ISO, UTC) of a Unix time (s)."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return {"date": when.date().isoformat(), "time": when.time().isoformat(timespec="seconds"),
            "time_zone": "UTC"}  # fmt: skip


def instrument_metadata(session: Session, frame: Frame) -> dict[str, Any]:
    """HyperSpy's ``Acquisition_instrument.TEM`` node for a frame, in HyperSpy's units:
    beam energy (keV), beam current (nA), convergence angle (mrad, the knob's value when the
    frame was taken), stage x, y (mm), the detector (name, kind; collection angles in mrad)
    and the camera exposure or the scan's dwell time (s)."""
    description = session.description
    knobs = frame.state.knobs
    tem: dict[str, Any] = {
        "microscope": description.backend,
        "acquisition_mode": "STEM",
        "beam_energy": description.energy_eV / 1e3,
        "beam_current": description.beam_current_A * 1e9,
    }
    if "convergence_angle" in knobs:
        tem["convergence_angle"] = knobs["convergence_angle"] * 1e3
    stage = {axis: knobs[f"stage_{axis}"] * 1e3 for axis in ("x", "y") if f"stage_{axis}" in knobs}
    if stage:
        tem["Stage"] = stage
    detector: dict[str, Any] = {"name": frame.detector}
    spec = description.detectors.get(frame.detector)
    if spec is not None:
        detector["kind"] = spec.kind
        for field in ("pixel_angle", "inner_angle", "outer_angle"):
            value = getattr(spec, f"{field}_rad")
            if value is not None:
                detector[field] = value * 1e3  # mrad
    tem["Detector"] = detector
    if frame.kind == "ronchigram":
        tem["Camera"] = {"name": frame.detector, "exposure": frame.exposure_s}
    else:
        dwell = getattr(frame.request, "dwell_s", None)
        if dwell is None:
            dwell = knobs.get("scan_dwell")
        if dwell is not None:
            tem["dwell_time"] = float(dwell)
    return tem


def frame_groups(session: Session) -> dict[str, tuple[list[Step], list[Frame]]]:
    """Acquired frames grouped by detector and shape, e.g. ``ronchigram_128x128``."""
    groups: dict[str, tuple[list[Step], list[Frame]]] = defaultdict(lambda: ([], []))
    for step in session.acquisitions():
        frame = session.frame(step)
        detector = re.sub(r"[^A-Za-z0-9_-]", "_", frame.detector)[:64]  # a file name: no '/'
        name = f"{detector}_{'x'.join(str(n) for n in frame.data.shape)}"
        groups[name][0].append(step)
        groups[name][1].append(frame)
    return dict(groups)


def export_hyperspy(session: Session, out: Path, fmt: Literal["hdf5", "zspy"]) -> list[Path]:
    """Write one ``.hspy`` or ``.zspy`` file per frame group into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (steps, frames) in frame_groups(session).items():
        signal = _signal(session, name, steps, frames)
        if fmt == "hdf5":
            from rsciio.hspy import file_writer

            path = out / f"{name}.hspy"
            file_writer(str(path), signal, show_progressbar=False)
        else:
            path = out / f"{name}.zspy"
            _write_zspy(path, signal)
        written.append(path)
    if not written:
        raise SessionError(f"{session.path}: no frames to export")
    return written


def _write_zspy(path: Path, signal: dict[str, Any]) -> None:
    import zarr
    from rsciio.zspy._api import ZspyWriter, version

    root = zarr.open_group(store=zarr.storage.LocalStore(str(path)), mode="w", zarr_format=2)
    root.attrs["file_format"] = "ZSpy"
    root.attrs["file_format_version"] = version
    group = root.require_group("Experiments").require_group(signal["metadata"]["General"]["title"])
    with warnings.catch_warnings():  # rosettasciio calls zarr 2 names zarr 3 still accepts
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="rsciio")
        warnings.filterwarnings("ignore", message=".*require_array.*")
        ZspyWriter(
            root,
            signal,
            group,
            chunks=None,
            compressor=None,
            write_dataset=True,
            show_progressbar=False,
        ).write()


def export_hdf5(session: Session, out: Path) -> list[Path]:
    """HyperSpy ``.hspy`` files (HDF5), one calibrated stack per frame kind, in ``out``."""
    return export_hyperspy(session, out, "hdf5")


def export_zspy(session: Session, out: Path) -> list[Path]:
    """HyperSpy ``.zspy`` stores (Zarr), one calibrated stack per frame kind, in ``out``."""
    return export_hyperspy(session, out, "zspy")


def export_into(out: str | Path, write: Callable[[Path], list[Path]]) -> list[Path]:
    """Run ``write(folder)`` on a new temporary folder beside ``out`` and rename it to ``out``
    at the end: ``out`` appears whole or not at all (an interrupted or failed export leaves
    nothing behind). ``out`` is made absolute first (a relative one is relative to the
    current folder) and must not exist yet, not even as a symlink. Returns the written paths
    under ``out``."""
    out = Path(os.path.abspath(out))
    if out.exists() or out.is_symlink():
        raise SessionError(f"{out} exists; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(temporary, 0o755)
        paths = write(temporary)
        os.rename(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return [out / Path(path).relative_to(temporary) for path in paths]
