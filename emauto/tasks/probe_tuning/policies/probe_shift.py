"""Aberrations from probe shifts: the classical Ronchigram measurement.

In the geometric (shadow-image) picture a specimen point ``x`` appears in the Ronchigram at
the angle ``theta`` where ``x = p + grad W(theta)``; ``p`` is the probe position and
``W = chi lambda / 2 pi`` the aberration function in length units (Krivanek Cartesian
coefficients, `emauto.optics.chi_basis`). Moving the probe by a small ``delta`` moves the
pattern near ``theta`` by ``-H(theta)^-1 delta``, ``H`` the Hessian of ``W``. Cross-
correlating patches of Ronchigrams taken before and after probe shifts along x and y gives
``H`` on a grid of angles; ``H`` is linear in the coefficients, so a least-squares fit
returns them, the sign of defocus included. Unlike a pattern taken at another defocus, a
shifted pattern keeps its Fresnel contrast, so the patches match.

Scan noise limits the measurement: the probe lands a few pm off each commanded position
(the twin: 5 pm rms per axis), and a displacement error reads as defocus and astigmatism of
about ``C1 x error / shift``. The defaults were chosen on the twin for that reason: a 0.3 nm
shift (about 7.5 mrad of pattern shift at 40 nm over-focus) and patches 30 mrad wide (the
pattern must stay within a patch), set in mrad so that they do not depend on the camera's
pixel count. Measured on 40 random near-aligned states at 40 nm over-focus with every twin
effect on (`benchmarks/experiments/probe_shift_accuracy.py`): C1 0.7 nm RMS, A1 0.6-0.9 nm,
B2 15-22 nm, A2 8-10 nm (0.15 nm shifts and 19 mrad patches: C1 and A1 about 1.2 nm). B2
reads about 30 % low and A2 15-20 % low on the twin's wave-optical Ronchigram (the fast path
and, in 12 trials, abTEM multislice alike; 4 % on a purely geometric shadow image), so a
closed loop converges on them in a few rounds rather than one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from emauto import optics
from emauto.errors import MeasurementRefusedError
from emauto.microscope import Frame, Microscope, RonchigramRequest

#: Finite-difference step of the Hessian of the polynomial basis (rad).
_HESSIAN_STEP_RAD = 1e-4
#: Patches whose Hessian misfit exceeds this many times the median are refitted without
#: (a patch whose cross-correlation locked onto the wrong peak), for up to OUTLIER_PASSES.
OUTLIER_FACTOR = 3.0
OUTLIER_PASSES = 3
#: A fit whose Hessian misfit (RMS over the patches kept) exceeds this is refused. On the
#: twin good fits misfit 0.1-1.1 nm; fits over a gold particle, or from a random start too
#: close to focus for its aberrations (the pattern folds), 17-360 nm, reading microns off.
MAX_MISFIT_M = 3e-9
#: Probe shift between the reference frame and each moved frame (m).
DEFAULT_DELTA_M = 3e-10
#: Width of the square patches cross-correlated, and their spacing, as camera angles (rad).
PATCH_RAD = 0.030
STRIDE_RAD = 3.75e-3


#: The speckle SNR (`speckle_snr`) a measurement needs: what the default twin's Ronchigram
#: gives at the benchmark's shortest exposure, 2 ms (0.82-0.90 over 3 twin seeds at 40 nm
#: over-focus), where every measurement of a near-aligned probe is accepted. Chosen on the
#: default twin only.
MIN_SPECKLE_SNR = 0.8
#: The speckle SNR auto-exposure aims for: the default twin's at the benchmark's median
#: exposure (6.3 ms, between its 0.86 at 2 ms and 3.2 at 10 ms).
TARGET_SPECKLE_SNR = 2.0
#: Immerkaer's noise mask: a difference of two Laplacians, blind to linear and quadratic
#: structure, so white (shot and read) noise dominates its response.
_NOISE_MASK = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def speckle_snr(frame: Frame, aperture_rad: float) -> float:
    """Speckle signal-to-noise of a Ronchigram: the variance of its detail (the frame less
    a 4-pixel Gaussian blur) over the white noise's variance, less 1, in the square
    inscribed in the bright-field disc (semi-angle ``aperture_rad``). The noise is
    estimated from the frame itself (J. Immerkaer, CVIU 64, 300 (1996)), so a camera's
    misreported gain does not matter. Grows about linearly with exposure; ~0 for a frame
    that is noise only. NaN for a frame with no angular calibration."""
    from scipy import ndimage

    scales = [c.scale for c in frame.calibrations if c.units == "rad" and c.scale > 0]
    if not scales:
        return math.nan
    data = np.asarray(frame.data, dtype=np.float64)
    half = max(4, int(0.6 * aperture_rad / scales[0]))
    cy, cx = data.shape[0] // 2, data.shape[1] // 2
    crop = data[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half]
    response = ndimage.convolve(crop, _NOISE_MASK)[1:-1, 1:-1]
    noise_sd = math.sqrt(math.pi / 2) * float(np.mean(np.abs(response))) / 6
    if noise_sd <= 0:
        return math.inf
    detail = crop - ndimage.gaussian_filter(crop, 4.0)
    return float(detail.var()) / noise_sd**2 - 1.0


def auto_exposure_s(
    frame: Frame | None, aperture_rad: float, max_exposure_s: float | None
) -> float | None:
    """Auto-exposure: the exposure (s) a measurement's frames need when ``frame`` (the
    env's latest, at the episode's exposure) is too noisy to measure on (`speckle_snr`
    below `MIN_SPECKLE_SNR`): its exposure times the factor that brings the SNR to
    `TARGET_SPECKLE_SNR` (the SNR grows about linearly with exposure), at most
    ``max_exposure_s``. None when the frame is good enough, cannot be judged (no frame, no
    angular calibration) or auto-exposure is off (``max_exposure_s`` None)."""
    if max_exposure_s is None or frame is None:
        return None
    snr = speckle_snr(frame, aperture_rad)
    if not snr < MIN_SPECKLE_SNR:  # good enough, or NaN
        return None
    factor = TARGET_SPECKLE_SNR / max(snr, TARGET_SPECKLE_SNR / 1000)
    longer = min(max_exposure_s, frame.exposure_s * factor)
    return longer if longer > frame.exposure_s else None


def patch_shift(moved: np.ndarray, reference: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Sub-pixel shift (rows, cols) of ``moved`` relative to ``reference`` (same shape).

    Windowed FFT cross-correlation with a parabolic peak fit, repeated on ``moved`` shifted
    back by the estimate so far (the window biases a single estimate towards zero).
    """
    window = np.outer(np.hanning(reference.shape[0]), np.hanning(reference.shape[1]))
    ref = np.fft.fft2((reference - reference.mean()) * window)
    ky = np.fft.fftfreq(moved.shape[0])[:, None]
    kx = np.fft.fftfreq(moved.shape[1])[None, :]
    spectrum = np.fft.fft2(moved)
    total = np.zeros(2)
    for _ in range(iterations):
        back = np.fft.ifft2(spectrum * np.exp(2j * np.pi * (ky * total[0] + kx * total[1]))).real
        corr = np.fft.fftshift(
            np.fft.ifft2(np.fft.fft2((back - back.mean()) * window) * ref.conj()).real
        )
        i, j = np.unravel_index(int(np.argmax(corr)), corr.shape)
        n0, n1 = corr.shape
        step = np.array([i - n0 // 2, j - n1 // 2], dtype=np.float64)
        for axis, (before, peak, after) in enumerate(
            (
                (corr[i - 1, j], corr[i, j], corr[(i + 1) % n0, j]),
                (corr[i, j - 1], corr[i, j], corr[i, (j + 1) % n1]),
            )
        ):
            curvature = before - 2 * peak + after
            if curvature < 0:
                step[axis] += 0.5 * (before - after) / curvature
        total += step
        if np.all(np.abs(step) < 0.01):
            break
    return total


def shift_jacobians(
    reference: np.ndarray,
    moved_x: np.ndarray,
    moved_y: np.ndarray,
    pixel_rad: float,
    delta_m: float,
    max_angle_rad: float,
    patch: int = 20,
    stride: int = 4,
    reference_after: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres ``theta`` (N, 2) [x, y] in rad and Jacobians (N, 2, 2): column j is the
    pattern's angular shift per metre of probe shift along axis j (x, y), in rad/m.

    Frames are camera images ``[y, x]`` centred on the optical axis; only patches wholly
    within ``max_angle_rad`` are used. Specimen drift moves the pattern exactly as a probe
    shift does; ``reference_after``, a fourth frame at the reference position taken after
    the two shifted ones (equal intervals), measures it, and 1/3 and 2/3 of its shift are
    taken off the x and y frames'.
    """
    ny, nx = reference.shape
    centres, jacobians = [], []
    for top in range(0, ny - patch + 1, stride):
        for left in range(0, nx - patch + 1, stride):
            corners = np.array(
                [[top, left], [top, left + patch], [top + patch, left], [top + patch, left + patch]]
            )
            offsets = (corners - np.array([ny / 2, nx / 2])) * pixel_rad
            if np.any(np.hypot(offsets[:, 0], offsets[:, 1]) > max_angle_rad):
                continue
            window = (slice(top, top + patch), slice(left, left + patch))
            drift = np.zeros(2)
            if reference_after is not None:
                drift = patch_shift(reference_after[window], reference[window]) / 3
            columns = []
            for intervals, moved in ((1, moved_x), (2, moved_y)):
                rows, cols = patch_shift(moved[window], reference[window]) - intervals * drift
                columns.append([cols * pixel_rad / delta_m, rows * pixel_rad / delta_m])
            centres.append(
                [(left + patch / 2 - nx / 2) * pixel_rad, (top + patch / 2 - ny / 2) * pixel_rad]
            )
            jacobians.append(np.array(columns).T)
    return np.array(centres), np.array(jacobians)


def _basis_hessians(theta: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Hessians of each basis function of W (m per m of coefficient) at theta: (N, K, 2, 2)."""
    h = _HESSIAN_STEP_RAD

    def w(dx: float, dy: float) -> np.ndarray:
        return optics.chi_basis(theta[:, 0] + dx, theta[:, 1] + dy, tuple(names)).T  # (N, K)

    centre = w(0, 0)
    wxx = (w(h, 0) - 2 * centre + w(-h, 0)) / h**2
    wyy = (w(0, h) - 2 * centre + w(0, -h)) / h**2
    wxy = (w(h, h) - w(h, -h) - w(-h, h) + w(-h, -h)) / (4 * h**2)
    return np.stack([np.stack([wxx, wxy], -1), np.stack([wxy, wyy], -1)], -2)


def fit_aberrations(
    theta: np.ndarray, jacobians: np.ndarray, names: Sequence[str]
) -> tuple[dict[str, float], float]:
    """Least-squares coefficients (m) from the measured Jacobians, and the RMS misfit of the
    Hessian (m) over the patches kept. ``H = -J^-1`` at every patch; patches with singular J
    are skipped, and patches that misfit more than `OUTLIER_FACTOR` x the median are refitted
    without (on the twin, 12 of 30 measurements had such patches and were off by 100 nm to
    6 um in B2/A2 before; none after)."""
    hessians, keep = [], []
    for index, jacobian in enumerate(jacobians):
        if abs(np.linalg.det(jacobian)) < 1e-30:
            continue
        hessian = -np.linalg.inv(jacobian)
        hessians.append(0.5 * (hessian + hessian.T))
        keep.append(index)
    if len(keep) * 3 < len(names):
        raise MeasurementRefusedError(
            f"{len(keep)} usable patches cannot fit {len(names)} coefficients"
        )
    measured = np.array(hessians)
    basis = _basis_hessians(theta[keep], names)  # (N, K, 2, 2)
    rows = np.stack([basis[:, :, 0, 0], basis[:, :, 0, 1], basis[:, :, 1, 1]], axis=1)  # N,3,K
    target = np.stack([measured[:, 0, 0], measured[:, 0, 1], measured[:, 1, 1]], axis=1)  # N,3
    scale = np.linalg.norm(rows.reshape(-1, len(names)), axis=0)
    scale[scale == 0] = 1.0
    inliers = np.ones(len(keep), dtype=bool)
    for _ in range(OUTLIER_PASSES + 1):
        solution, *_ = np.linalg.lstsq(
            (rows[inliers] / scale).reshape(-1, len(names)), target[inliers].ravel(), rcond=None
        )
        coefficients = solution / scale
        residual = np.linalg.norm(rows @ coefficients - target, axis=1)  # per patch (m)
        bound = OUTLIER_FACTOR * float(np.median(residual[inliers]))
        if np.all(residual[inliers] <= bound) or (residual <= bound).sum() * 3 < len(names):
            break
        inliers = residual <= bound
    misfit = float(np.sqrt(np.mean(residual[inliers] ** 2) / 3))
    return dict(zip(names, coefficients.tolist(), strict=True)), misfit


def measure(
    microscope: Microscope,
    position_m: tuple[float, float],
    names: Sequence[str] = ("C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b"),
    delta_m: float = DEFAULT_DELTA_M,
    exposure_s: float = 1e-2,
    max_angle_rad: float = 0.029,
    reference: Frame | None = None,
    drift_frame: bool = False,
    max_misfit_m: float = MAX_MISFIT_M,
) -> tuple[dict[str, float], list[Frame]]:
    """Measure the aberrations (m) at the present optics from Ronchigrams at ``position_m``
    and ``delta_m`` beside it along x and along y.

    ``reference``: a Ronchigram already taken at ``position_m`` at the present optics (the
    env's frame after the probe step); without it the first frame is taken here.
    ``drift_frame``: one more frame back at ``position_m``; changes of the pattern linear in
    time (specimen drift, lenses still settling) are taken off the shifts. Best 30-80 nm out
    of focus, where the pattern is a fine speckle; returns the fit and the frames taken here
    (to be counted and dosed by the caller). Raises ValueError when too few patches are
    usable or the fit misfits by more than ``max_misfit_m`` (measure elsewhere):
    `MeasurementRefusedError`, a ValueError carrying the misfit.
    """
    if not math.isfinite(delta_m) or delta_m <= 0:
        raise ValueError(f"delta_m must be a positive length, got {delta_m}")
    x, y = position_m
    positions = [(x + delta_m, y), (x, y + delta_m)] + ([(x, y)] if drift_frame else [])
    if reference is None:
        positions.insert(0, (x, y))
    elif not isinstance(reference.request, RonchigramRequest):
        raise ValueError(f"the reference must be a Ronchigram, got a {reference.kind!r} frame")
    elif np.hypot(*np.subtract(reference.request.probe_position_m, position_m)) > 1e-12:
        raise ValueError(
            f"the reference was taken at {reference.request.probe_position_m} m, "
            f"not at the probe position {position_m} m"
        )
    frames = [
        microscope.acquire(RonchigramRequest(exposure_s=exposure_s, probe_position_m=p))
        for p in positions
    ]
    ordered = frames if reference is None else [reference, *frames]
    angular = [c.scale for c in ordered[0].calibrations if c.units == "rad"]
    if not angular:
        raise ValueError("the Ronchigram frames carry no angular (rad) calibration")
    data = [np.asarray(f.data, dtype=np.float64) for f in ordered]
    if any(d.shape != data[0].shape for d in data):
        raise ValueError(f"frames of different shapes: {[d.shape for d in data]}")
    pixel_rad = angular[0]
    theta, jacobians = shift_jacobians(
        data[0],
        data[1],
        data[2],
        pixel_rad,
        delta_m,
        max_angle_rad,
        patch=max(8, round(PATCH_RAD / pixel_rad)),
        stride=max(1, round(STRIDE_RAD / pixel_rad)),
        reference_after=data[3] if drift_frame else None,
    )
    fit, misfit = fit_aberrations(theta, jacobians, names)
    if not misfit <= max_misfit_m:
        raise MeasurementRefusedError(
            f"the patches disagree (Hessian misfit {misfit:.3g} m > {max_misfit_m:.3g} m): "
            "a strong scatterer or too little texture here; measure at another position",
            misfit_m=misfit,
        )
    return fit, frames
