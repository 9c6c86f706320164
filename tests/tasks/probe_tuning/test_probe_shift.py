"""The probe-shift measurement reads the aberrations (defocus with its sign) from shifted frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import emauto
from emauto.drivers.sim.config import RonchigramCameraConfig
from emauto.microscope import ImageRequest, RasterScan, RonchigramRequest
from emauto.tasks.probe_tuning.policies.probe_shift import (
    DEFAULT_DELTA_M,
    MIN_SPECKLE_SNR,
    _basis_hessians,
    fit_aberrations,
    measure,
    patch_shift,
    shift_jacobians,
    speckle_snr,
)

NAMES = ("C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b")


def test_patch_shift_recovers_a_subpixel_shift() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64))
    from scipy import ndimage

    image = ndimage.gaussian_filter(image, 2.0)
    moved = ndimage.shift(image, (1.3, -2.6), order=3, mode="wrap")
    rows, cols = patch_shift(moved[16:48, 16:48], image[16:48, 16:48])
    assert rows == pytest.approx(1.3, abs=0.1) and cols == pytest.approx(-2.6, abs=0.1)


@pytest.mark.parametrize("defocus_m", [40e-9, -40e-9])
def test_probe_shifts_measure_defocus_and_astigmatism(
    carbon: emauto.microscope.Microscope, defocus_m: float
) -> None:
    """40 nm of over- or underfocus with 3 nm of A1: C10 within 10 % (sign included), A1
    within 3 nm, from frames at the probe position and 0.1 nm along x and y."""
    setpoints = dict.fromkeys(NAMES, 0.0)
    setpoints.update(C10=defocus_m, C12a=3e-9)
    carbon.set(setpoints)
    base, delta = (20e-9, 10e-9), 1e-10
    frames = []
    for position in (base, (base[0] + delta, base[1]), (base[0], base[1] + delta)):
        request = RonchigramRequest(exposure_s=1e-2, wait_s=0.1, probe_position_m=position)
        frames.append(carbon.acquire(request))
    pixel = frames[0].calibrations[0].scale
    theta, jacobians = shift_jacobians(
        *(f.data.astype(np.float64) for f in frames), pixel, delta, 0.029
    )
    fit, _ = fit_aberrations(theta, jacobians, NAMES)
    assert fit["C10"] == pytest.approx(defocus_m, rel=0.1)
    assert fit["C12a"] == pytest.approx(3e-9, abs=3e-9)
    assert abs(fit["C12b"]) < 3e-9


def test_measure_with_every_twin_effect_on(carbon: emauto.microscope.Microscope) -> None:
    """Noise, drift, lens lag, hysteresis and scan jitter on: three frames at 40 nm of
    overfocus with 4 nm of A1 and 100 nm of B2 give C10 and A1 within 2 nm (about 3x the RMS
    measured over random states, README)."""
    setpoints = dict.fromkeys(NAMES, 0.0)
    setpoints.update(C10=40e-9, C12b=-4e-9, C21a=100e-9)
    carbon.set(setpoints)
    carbon.acquire(RonchigramRequest(exposure_s=1e-3, wait_s=0.2))  # lenses settle
    fit, frames = measure(carbon, (20e-9, 10e-9))
    assert len(frames) == 3 and all(f.dose_e > 0 for f in frames)
    truth = carbon.true_aberrations()  # type: ignore[attr-defined]
    assert fit["C10"] == pytest.approx(truth.C10, abs=2e-9)
    assert fit["C12b"] == pytest.approx(truth.C12b, abs=2e-9)
    assert fit["C21a"] > 30e-9  # the right sign; B2 is read 20-45 % low (module docstring)


def test_measure_reuses_a_reference_frame(carbon: emauto.microscope.Microscope) -> None:
    """Given the env's frame at the probe position, the measurement takes two frames only
    (the moved ones) and reads as well; a frame of another kind is refused."""
    setpoints = dict.fromkeys(NAMES, 0.0)
    setpoints.update(C10=40e-9, C12a=2e-9)
    carbon.set(setpoints)
    position = (-30e-9, 40e-9)
    reference = carbon.acquire(
        RonchigramRequest(exposure_s=5e-3, wait_s=0.2, probe_position_m=position)
    )
    fit, frames = measure(carbon, position, reference=reference)
    assert len(frames) == 2
    assert [f.request.probe_position_m for f in frames] == [
        (position[0] + DEFAULT_DELTA_M, position[1]),
        (position[0], position[1] + DEFAULT_DELTA_M),
    ]
    truth = carbon.true_aberrations()  # type: ignore[attr-defined]
    assert fit["C10"] == pytest.approx(truth.C10, abs=2e-9)
    assert fit["C12a"] == pytest.approx(truth.C12a, abs=2e-9)
    image = carbon.acquire(ImageRequest(scan=RasterScan(shape=(8, 8)), dwell_s=1e-6))
    before = carbon.read()
    with pytest.raises(ValueError, match="Ronchigram"):
        measure(carbon, position, reference=image)
    with pytest.raises(ValueError, match="not at the probe position"):
        measure(carbon, (0.0, 0.0), reference=reference)
    with pytest.raises(ValueError, match="delta_m"):
        measure(carbon, position, delta_m=float("nan"))
    with pytest.raises(ValueError, match="patches disagree"):  # no fit is that good
        measure(carbon, position, reference=reference, max_misfit_m=1e-15)
    assert carbon.read().knobs == before.knobs


def test_measure_does_not_depend_on_the_camera_pixel_count(
    carbon_uri: str, specimen_cache: Path
) -> None:
    """Patch size and spacing are angles: a 256-pixel camera over the same angles reads C10
    and A1 as the 128-pixel one does (with patches set in pixels it was off by microns)."""
    camera = RonchigramCameraConfig(shape=(256, 256), oversample=1)
    scope = emauto.connect(carbon_uri + "?seed=3", cache_dir=specimen_cache, ronchigram=camera)
    setpoints = dict.fromkeys(NAMES, 0.0)
    setpoints.update(C10=40e-9, C12b=3e-9)
    scope.set(setpoints)
    scope.acquire(RonchigramRequest(exposure_s=1e-3, wait_s=0.2))  # lenses settle
    fit, frames = measure(scope, (0.0, 0.0))
    assert frames[0].data.shape == (256, 256)
    truth = scope.true_aberrations()  # type: ignore[attr-defined]
    assert fit["C10"] == pytest.approx(truth.C10, abs=2e-9)
    assert fit["C12b"] == pytest.approx(truth.C12b, abs=2e-9)
    scope.close()


def test_fit_rejects_patches_that_locked_onto_the_wrong_peak() -> None:
    """Exact Jacobians of a known probe (C1 40 nm, B2 80 nm, A2 -60 nm) on a grid of
    patches, a fifth of them replaced by garbage (as when a patch's cross-correlation locks
    onto the wrong peak): the fit recovers every coefficient within 1 nm, and its misfit
    stays that of the good patches."""

    names = ("C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b")
    truth = np.array([40e-9, 0.0, 0.0, 80e-9, 0.0, 0.0, -60e-9])
    axis = np.linspace(-0.02, 0.02, 7)
    theta = np.array([[x, y] for x in axis for y in axis])
    hessians = np.einsum("nkij,k->nij", _basis_hessians(theta, names), truth)
    jacobians = -np.linalg.inv(hessians)
    rng = np.random.default_rng(0)
    bad = rng.choice(len(theta), size=len(theta) // 5, replace=False)
    jacobians[bad] = rng.normal(0, 3e8, (len(bad), 2, 2))
    fit, misfit = fit_aberrations(theta, jacobians, names)
    assert np.allclose([fit[k] for k in names], truth, atol=1e-9)
    assert misfit < 1e-10


def _faint_carbon(specimen_cache: Path, contrast: float) -> emauto.microscope.Microscope:
    scope = emauto.connect(
        "sim://?seed=7",
        cache_dir=specimen_cache,
        ronchigram=RonchigramCameraConfig(contrast_scale=contrast),
    )
    scope.set({"C10": 40e-9})
    return scope


def test_speckle_snr_grows_with_exposure_and_falls_with_contrast(
    carbon_uri: str, specimen_cache: Path
) -> None:
    """About linear in exposure (shot noise); a tenth of the contrast needs far longer."""
    bright, faint = _faint_carbon(specimen_cache, 1.0), _faint_carbon(specimen_cache, 0.1)

    def snr(scope: emauto.microscope.Microscope, exposure_s: float) -> float:
        frame = scope.acquire(RonchigramRequest(exposure_s=exposure_s, wait_s=0.3))
        return speckle_snr(frame, 0.03)

    short, long = snr(bright, 2e-3), snr(bright, 10e-3)
    assert MIN_SPECKLE_SNR <= short < long
    assert 3.0 < long / short < 7.0  # 5x the exposure
    assert snr(faint, 2e-3) < 0.3 < MIN_SPECKLE_SNR
    assert snr(faint, 50e-3) > 2 * snr(faint, 2e-3)


def test_auto_exposure_measures_a_faint_ronchigram(carbon_uri: str, specimen_cache: Path) -> None:
    """A tenth of the contrast at 2 ms: refused at the env's exposure; with auto-exposure
    the meter retakes its frames longer (one frame more) and reads C1 within 2 nm."""
    from emauto.errors import MeasurementRefusedError
    from emauto.tasks.probe_tuning.policies.objective import AberrationMeter

    scope = _faint_carbon(specimen_cache, 0.1)
    env_frame = scope.acquire(RonchigramRequest(exposure_s=2e-3, wait_s=0.3))
    with pytest.raises(MeasurementRefusedError):
        measure(scope, (0.0, 0.0), exposure_s=2e-3, reference=env_frame)
    plain = AberrationMeter(NAMES, scope, last_frame=lambda: env_frame)
    auto = AberrationMeter(NAMES, scope, last_frame=lambda: env_frame, max_exposure_s=1.0)
    assert (plain.evaluation_frames(), auto.evaluation_frames()) == (3, 4)
    assert plain.measure() is None
    reading = auto.measure()
    assert reading is not None
    truth = scope.true_aberrations()  # type: ignore[attr-defined]
    assert reading[0] == pytest.approx(truth.C10, abs=2e-9)
