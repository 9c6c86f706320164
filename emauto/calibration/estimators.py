"""Estimators of the twin's instrument parameters, one small function each.

Every estimator takes arrays (camera frames ``[y, x]`` in counts, times in s, angles in rad)
and returns `Estimate`s: a value, its standard uncertainty and its unit. Camera pixel
coordinates are (column, row) = (x, y); an angle in the corrector's frame is seen on a camera
turned counter-clockwise by ``r`` at ``R(-r)`` times it (`RonchigramCameraConfig`).

In the shadow-image (geometric) picture, at over-focus ``D`` a specimen point ``x`` appears
at the angle ``(x - p) / D``, ``p`` the probe position: moving the probe by ``delta`` moves
the pattern by ``-delta / D``, specimen drift ``v t`` moves it by ``+v t / D``, and changing
the defocus from ``D`` to ``D'`` scales the pattern about the optic axis by ``D / D'``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, special
from skimage.registration import phase_cross_correlation

from emauto.errors import CalibrationDataError

#: A short vector of numbers: a sequence or a 1-D array.
Numbers = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Estimate:
    """A fitted parameter: ``value`` and its standard uncertainty ``sigma``, in ``unit``."""

    value: float
    sigma: float
    unit: str

    def to_dict(self) -> dict[str, float | str]:
        """``{"value", "sigma", "unit"}`` for JSON."""
        return {"value": self.value, "sigma": self.sigma, "unit": self.unit}


def _stack(frames: Sequence[np.ndarray], what: str, minimum: int = 2) -> np.ndarray:
    if len(frames) < minimum:
        raise CalibrationDataError(f"{what}: need at least {minimum} frames, got {len(frames)}")
    shapes = {np.shape(f) for f in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise CalibrationDataError(f"{what}: frames must be 2-D and of one shape, got {shapes}")
    stack = np.asarray(frames, dtype=np.float64)
    if not np.all(np.isfinite(stack)):
        raise CalibrationDataError(f"{what}: frames hold non-finite values")
    return stack


# ---------------------------------------------------------------------- detector


@dataclass(frozen=True)
class PhotonTransfer:
    """The camera's response from repeat frames at two doses (counts, counts per electron)."""

    gain_counts_per_e: Estimate
    read_noise_counts: Estimate
    dark_offset_counts: Estimate


def photon_transfer(
    low: Sequence[np.ndarray],
    high: Sequence[np.ndarray],
    exposures_s: tuple[float, float],
    dark_region: np.ndarray | None = None,
    bins: int = 16,
) -> PhotonTransfer:
    """Gain (counts/e), read noise (counts rms) and dark offset (counts) from repeat frames
    at a low and a high exposure (s) of the same optics.

    Each pixel's mean is ``g n t + d`` (``n`` electrons per second): the dark offset is
    where the mean over ``dark_region`` (a boolean mask, default: the whole camera; best
    the pixels beyond the bright-field disc) extrapolates to at zero exposure. Each pixel's
    variance over the repeats is ``g (mean - d) + r^2`` (shot noise through the gain, plus
    read noise): pixels are binned by the signal the *other* exposure predicts for them (so
    that a bin's variance is not picked by its own noise), and a weighted least-squares
    fit of the bins' mean variance against mean signal, ``g s + r^2 + q s^2`` (``q``: the
    pattern's own change between repeats, from scan jitter and drift), gives ``g`` and
    ``r``.
    """
    a = _stack(low, "photon transfer (low dose)")
    b = _stack(high, "photon transfer (high dose)")
    if a.shape[1:] != b.shape[1:]:
        raise CalibrationDataError("photon transfer: low- and high-dose frames differ in shape")
    t1, t2 = exposures_s
    if not 0 < t1 < t2:
        raise CalibrationDataError(f"photon transfer: need 0 < t_low < t_high, got {t1}, {t2}")
    region = np.ones(a.shape[1:], dtype=bool) if dark_region is None else dark_region
    if region.shape != a.shape[1:] or region.sum() < 16:
        raise CalibrationDataError("photon transfer: the dark region must hold 16+ pixels")
    r1 = a[:, region].mean(axis=1)  # per-frame region means
    r2 = b[:, region].mean(axis=1)
    dark = float((t2 * r1.mean() - t1 * r2.mean()) / (t2 - t1))
    dark_sigma = float(
        math.sqrt(t2**2 * r1.var(ddof=1) / len(r1) + t1**2 * r2.var(ddof=1) / len(r2)) / (t2 - t1)
    )
    m1, m2 = a.mean(0) - dark, b.mean(0) - dark
    v1, v2 = a.var(0, ddof=1), b.var(0, ddof=1)
    xs, ys, ws = [], [], []
    for mean, var, predicted, count in (
        (m1, v1, m2 * t1 / t2, len(a)),
        (m2, v2, m1 * t2 / t1, len(b)),
    ):
        edges = np.unique(np.quantile(predicted, np.linspace(0, 1, bins + 1)))
        index = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, len(edges) - 2)
        for k in range(len(edges) - 1):
            sel = index == k
            n = int(sel.sum())
            if n < 20:
                continue
            level = float(var[sel].mean())
            xs.append(float(mean[sel].mean()))
            ys.append(level)
            # the sample variance of ``count`` repeats scatters by sqrt(2 / (count - 1))
            ws.append(math.sqrt(n * (count - 1) / 2.0) / max(level, 1e-9))
    if len(xs) < 3 or np.ptp(xs) <= 0:
        raise CalibrationDataError("photon transfer: the frames hold too narrow a range of signal")
    x, y, w = np.asarray(xs), np.asarray(ys), np.asarray(ws)
    # signal, offset and signal^2 (the pattern's own change between repeats: scan jitter,
    # drift), with r^2 >= 0 and q >= 0: excess variance, never less
    design = np.stack([x, np.ones_like(x), x**2], axis=1)
    coef = optimize.lsq_linear(
        design * w[:, None], y * w, bounds=([-np.inf, 0.0, 0.0], [np.inf, np.inf, np.inf])
    ).x
    chi2 = float(np.sum(((design @ coef - y) * w) ** 2)) / max(len(x) - 3, 1)
    covariance = np.linalg.inv((design * w[:, None]).T @ (design * w[:, None])) * max(chi2, 1.0)
    gain, read_var = float(coef[0]), float(coef[1])
    if not gain > 0:
        raise CalibrationDataError(
            f"photon transfer: the variance does not grow with the signal (slope {gain:.3g}); "
            "are the frames of one illumination?"
        )
    read = math.sqrt(max(read_var, 0.0))
    read_var_sigma = math.sqrt(covariance[1, 1])
    read_sigma = read_var_sigma / (2 * max(read, math.sqrt(read_var_sigma)))
    return PhotonTransfer(
        gain_counts_per_e=Estimate(gain, math.sqrt(covariance[0, 0]), "counts/e"),
        read_noise_counts=Estimate(read, read_sigma, "counts"),
        dark_offset_counts=Estimate(dark, dark_sigma, "counts"),
    )


def beam_current(
    frames: Sequence[np.ndarray], exposure_s: float, gain: Estimate, dark_counts: float
) -> Estimate:
    """Beam current (A) from the counts of frames at ``exposure_s`` (s): the electrons that
    reach the camera per second times the electron charge. Electrons scattered beyond the
    camera are not counted (on the twin, under 1 %)."""
    from emauto.units import ELECTRON_CHARGE_C

    stack = _stack(frames, "beam current", minimum=1)
    electrons = (stack - dark_counts).sum(axis=(1, 2)) / gain.value
    current = float(electrons.mean()) * ELECTRON_CHARGE_C / exposure_s
    relative = math.hypot(gain.sigma / gain.value, float(electrons.std()) / electrons.mean())
    return Estimate(current, current * relative, "A")


# ---------------------------------------------------------------------- the bright-field disc


@dataclass(frozen=True)
class Disc:
    """The bright-field disc on the camera (pixels: column, row) and its edge width."""

    centre_x_px: Estimate
    centre_y_px: Estimate
    radius_px: Estimate
    edge_px: float
    inside: float  # counts per pixel inside the disc (above the outside)
    outside: float  # counts per pixel outside the disc


def fit_disc(image: np.ndarray) -> Disc:
    """The bright-field disc of a (dark-subtracted, averaged) in-focus Ronchigram: a
    least-squares fit of ``b + a erfc((rho - R) / (sqrt 2 s)) / 2`` over every pixel,
    ``rho`` the distance from the centre (pixels)."""
    data = _stack([image], "disc", minimum=1)[0]
    ny, nx = data.shape
    threshold = 0.5 * (np.percentile(data, 99) + np.percentile(data, 1))
    mask = data > threshold
    if mask.sum() < 20 or mask.sum() > 0.9 * data.size:
        raise CalibrationDataError(
            "disc: no bright-field disc on the camera (the frame is flat or all bright)"
        )
    cy, cx = ndimage.center_of_mass(mask)
    radius0 = math.sqrt(mask.sum() / math.pi)
    rows, cols = np.mgrid[0:ny, 0:nx].astype(np.float64)
    low, high = float(np.median(data[~mask])), float(np.median(data[mask]))

    def model(p: np.ndarray) -> np.ndarray:
        x0, y0, r, s, a, b = p
        rho = np.hypot(cols - x0, rows - y0)
        return b + a * 0.5 * special.erfc((rho - r) / (math.sqrt(2) * abs(s) + 1e-9))

    def residual(p: np.ndarray) -> np.ndarray:
        return (model(p) - data).ravel()

    start = np.array([cx, cy, radius0, 1.0, high - low, low])
    fit = optimize.least_squares(residual, start, x_scale=[1, 1, 1, 1, high - low, high - low])
    dof = max(data.size - len(start), 1)
    noise = float(np.sum(fit.fun**2) / dof)
    try:
        covariance = np.linalg.inv(fit.jac.T @ fit.jac) * noise
    except np.linalg.LinAlgError as exc:
        raise CalibrationDataError("disc: the edge fit is singular") from exc
    sig = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    x0, y0, r, s, a, b = fit.x
    return Disc(
        centre_x_px=Estimate(float(x0), float(sig[0]), "px"),
        centre_y_px=Estimate(float(y0), float(sig[1]), "px"),
        radius_px=Estimate(float(r), float(sig[2]), "px"),
        edge_px=float(abs(s)),
        inside=float(a),
        outside=float(b),
    )


def camera_scale(disc: Disc, convergence_rad: float) -> Estimate:
    """The camera's true angular pixel (rad/px): the probe-forming aperture's semi-angle
    (rad, the microscope's) over the disc's radius in pixels."""
    if not convergence_rad > 0:
        raise CalibrationDataError(
            f"camera scale: convergence angle must be > 0, got {convergence_rad}"
        )
    r = disc.radius_px
    scale = convergence_rad / r.value
    return Estimate(scale, scale * r.sigma / r.value, "rad/px")


def contrast(image: np.ndarray, disc: Disc, margin: float = 1.25) -> Estimate:
    """The fraction of the Ronchigram's modulation that reaches the camera (1 = all): one
    minus the level beyond ``margin`` disc radii over the mean level of the camera (both
    dark-subtracted). A specimen's own scattering beyond the disc reads as lost contrast
    (on the twin's amorphous carbon, about 0.3 %)."""
    data = _stack([image], "contrast", minimum=1)[0]
    ny, nx = data.shape
    rows, cols = np.mgrid[0:ny, 0:nx]
    rho = np.hypot(cols - disc.centre_x_px.value, rows - disc.centre_y_px.value)
    outside = data[rho > margin * disc.radius_px.value]
    if outside.size < 50:
        raise CalibrationDataError("contrast: too few pixels beyond the disc on the camera")
    mean = float(data.mean())
    if not mean > 0:
        raise CalibrationDataError("contrast: no signal on the camera")
    level = float(outside.mean())
    value = 1.0 - level / mean
    sigma = float(outside.std()) / math.sqrt(outside.size) / mean
    return Estimate(value, sigma, "")


@dataclass(frozen=True)
class FlatField:
    """The camera's relative pixel gains (``gains``, the frames' shape, mean 1 inside the
    disc, 1 where not measured), with the rms of the non-uniformity the frames show
    (``signal_rms``) and of the estimate's own noise (``noise_rms``), both fractions."""

    gains: np.ndarray
    signal_rms: float
    noise_rms: float


#: A flat field is kept only when the non-uniformity is this many times its estimate's noise.
FLAT_FIELD_MIN_SNR = 2.0


def flat_field(
    frames: Sequence[np.ndarray],
    dark_counts: float,
    disc: Disc,
    smooth_px: float = 32.0,
    inner: float = 0.9,
) -> FlatField:
    """Pixel gains from Ronchigrams of different specimen areas (probe positions, defocus).

    Each frame (dark-subtracted) is divided by its mean within ``inner`` disc radii; their
    average keeps the fixed gain pattern while the moving specimen pattern averages out. The
    gains are that average over its own Gaussian smoothing (``smooth_px``, normalised
    within the disc): what varies faster than ``smooth_px`` in every frame alike.
    Two half-averages (even and odd frames) give the noise: their covariance is the
    non-uniformity's variance, a quarter of their difference's variance the estimate's. The
    gains are shrunk towards 1 by ``S / (S + N)`` (variances), a Wiener weight, so a uniform
    camera gets back gains near 1 rather than the frames' own speckle."""
    stack = _stack(frames, "flat field", minimum=4)
    ny, nx = stack.shape[1:]
    rows, cols = np.mgrid[0:ny, 0:nx]
    rho = np.hypot(cols - disc.centre_x_px.value, rows - disc.centre_y_px.value)
    inside = rho < inner * disc.radius_px.value
    if inside.sum() < 100:
        raise CalibrationDataError("flat field: fewer than 100 pixels inside the disc")
    signal = stack - dark_counts
    means = signal[:, inside].mean(axis=1)
    if not np.all(means > 0):
        raise CalibrationDataError("flat field: a frame has no signal in the disc")
    normalised = signal / means[:, None, None]
    weight = ndimage.gaussian_filter(inside.astype(np.float64), smooth_px)

    def relative(average: np.ndarray) -> np.ndarray:
        smooth = ndimage.gaussian_filter(np.where(inside, average, 0.0), smooth_px)
        envelope = np.maximum(smooth / np.maximum(weight, 1e-9), 1e-12)
        ratio = np.where(inside, average / envelope, 1.0)
        return ratio / ratio[inside].mean()

    half_a = relative(normalised[0::2].mean(axis=0))[inside] - 1.0
    half_b = relative(normalised[1::2].mean(axis=0))[inside] - 1.0
    noise_var = float(np.var(half_a - half_b)) / 4.0
    signal_var = max(float(np.mean(half_a * half_b)), 0.0)
    gains = relative(normalised.mean(axis=0))
    shrink = signal_var / (signal_var + noise_var) if signal_var + noise_var > 0 else 0.0
    gains = np.where(inside, 1.0 + shrink * (gains - 1.0), 1.0)
    return FlatField(gains.astype(np.float32), math.sqrt(signal_var), math.sqrt(noise_var))


def aperture_offset(
    disc: Disc,
    axis_px: tuple[float, float],
    scale: Estimate,
    rotation: Estimate,
    tilt_rad: tuple[float, float],
) -> tuple[Estimate, Estimate]:
    """The probe-forming aperture's offset from the optic axis (x, y) in rad, in the
    corrector's frame: the disc centre from the axis pixel ``axis_px`` (column, row), in
    true angles (``scale``, rad/px), turned back by the camera ``rotation`` (rad), less the
    beam tilt (rad) that moves the aperture the same way."""
    du = (disc.centre_x_px.value - axis_px[0]) * scale.value
    dv = (disc.centre_y_px.value - axis_px[1]) * scale.value
    c, s = math.cos(rotation.value), math.sin(rotation.value)
    x = c * du - s * dv - tilt_rad[0]
    y = s * du + c * dv - tilt_rad[1]
    sx = math.hypot(disc.centre_x_px.sigma, disc.centre_y_px.sigma) * scale.value
    return Estimate(x, sx, "rad"), Estimate(y, sx, "rad")


# ---------------------------------------------------------------------- the shadow image


def inner_square(disc: Disc, fraction: float = 0.68, shift_px: float = 0.0) -> tuple[slice, slice]:
    """Rows and columns of a square about the disc's centre, its half-side ``fraction`` of
    the disc's radius, and less where a pattern shifted by up to ``shift_px`` pixels would
    bring the disc's edge into it (a pattern there moves with the probe; the edge does
    not, and with little texture it can pull a correlation)."""
    radius = disc.radius_px.value
    half = max(4, int(min(fraction * radius, radius - abs(shift_px) - 2.0)))
    cx, cy = round(disc.centre_x_px.value), round(disc.centre_y_px.value)
    return slice(cy - half, cy + half), slice(cx - half, cx + half)


def pattern_shift(
    moved: np.ndarray,
    reference: np.ndarray,
    window: tuple[slice, slice],
    guess_px: Numbers = (0.0, 0.0),
    iterations: int = 4,
    smooth_px: float = 1.5,
) -> np.ndarray:
    """Shift (columns, rows) in pixels of the pattern in ``window`` of ``moved`` against
    ``reference``: phase correlation (1/50 pixel) of the tapered windows, repeated on
    ``moved`` shifted back by the estimate so far, starting from ``guess_px`` (columns,
    rows: what the plan expects; the taper biases one estimate towards zero, and a shift
    of a third of the window can lock onto a wrong peak). Both frames are smoothed by a
    Gaussian of ``smooth_px`` first (shot and read noise)."""
    ref = ndimage.gaussian_filter(np.asarray(reference, dtype=np.float64), smooth_px)
    mov = ndimage.gaussian_filter(np.asarray(moved, dtype=np.float64), smooth_px)
    a = ref[window]
    if a.size == 0 or a.shape != mov[window].shape or min(a.shape) < 8:
        raise CalibrationDataError(f"pattern shift: window of shape {a.shape} is too small")
    taper = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    total = np.array([guess_px[1], guess_px[0]], dtype=np.float64)  # rows, columns
    for _ in range(iterations):
        back = ndimage.shift(mov, -total, order=3, mode="nearest") if total.any() else mov
        b = back[window]
        step, _, _ = phase_cross_correlation(
            (a - a.mean()) * taper,
            (b - b.mean()) * taper,
            upsample_factor=50,
            normalization=None,
        )
        total -= step  # phase_cross_correlation: the shift that registers b onto a
        if np.all(np.abs(step) < 0.02):
            break
    return np.array([total[1], total[0]])


def pattern_shift_between(
    moved: np.ndarray,
    reference: np.ndarray,
    window: tuple[slice, slice],
    start_px: Numbers,
    end_px: Numbers,
    width_px: float = 1.5,
    smooth_px: float = 1.5,
) -> np.ndarray:
    """Shift (columns, rows) in pixels of the pattern of ``moved`` against ``reference``,
    known to lie near the segment from ``start_px`` to ``end_px`` (columns, rows): the
    cross-correlation's highest point within ``width_px`` of the segment, refined by
    `pattern_shift` when that stays near the segment. A pattern whose correlation has
    several peaks (little texture, much noise) cannot then lock onto one the physics rules
    out."""
    p0, p1 = np.asarray(start_px, dtype=np.float64), np.asarray(end_px, dtype=np.float64)
    middle = (p0 + p1) / 2  # moved is shifted back by this first: the taper's bias is small
    ref = ndimage.gaussian_filter(np.asarray(reference, dtype=np.float64), smooth_px)[window]
    full = ndimage.gaussian_filter(np.asarray(moved, dtype=np.float64), smooth_px)
    mov = ndimage.shift(full, (-middle[1], -middle[0]), order=3, mode="nearest")[window]
    if ref.size == 0 or ref.shape != mov.shape or min(ref.shape) < 8:
        raise CalibrationDataError(f"pattern shift: window of shape {ref.shape} is too small")
    taper = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
    fa = np.fft.fft2((ref - ref.mean()) * taper)
    fb = np.fft.fft2((mov - mov.mean()) * taper)
    corr = np.fft.fftshift(np.fft.ifft2(np.conj(fa) * fb).real)  # peak at moved's shift
    n0, n1 = corr.shape
    rows, cols = np.mgrid[0:n0, 0:n1]
    lag = np.stack([cols - n1 // 2, rows - n0 // 2], axis=-1).astype(np.float64) + middle

    def distance(points: np.ndarray) -> np.ndarray:
        d = p1 - p0
        length2 = float(d @ d)
        t = np.clip(((points - p0) @ d) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        return np.asarray(np.linalg.norm(points - (p0 + np.multiply.outer(t, d)), axis=-1))

    near = distance(lag) <= width_px
    if not near.any():
        raise CalibrationDataError("pattern shift: the expected segment lies outside the window")
    masked = np.where(near, corr, -np.inf)
    i, j = np.unravel_index(int(np.argmax(masked)), corr.shape)
    peak = lag[i, j].copy()
    for axis, (before, centre, after) in enumerate(
        (
            (corr[i, j - 1], corr[i, j], corr[i, (j + 1) % n1]),
            (corr[i - 1, j], corr[i, j], corr[(i + 1) % n0, j]),
        )
    ):
        curvature = before - 2 * centre + after
        if curvature < 0:
            peak[axis] += float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5))
    refined = pattern_shift(moved, reference, window, peak, smooth_px=smooth_px)
    if float(distance(refined[None, :])[0]) <= width_px:
        return refined
    return peak


def camera_rotation(
    shifts_px: Sequence[np.ndarray], probe_shifts_m: Sequence[tuple[float, float]]
) -> tuple[Estimate, bool]:
    """The camera's rotation (rad, counter-clockwise from the corrector's axes) from the
    pattern's shifts (columns, rows; pixels) under probe shifts (x, y; m) at over-focus.

    A probe shift ``delta`` moves the pattern by ``-delta / D`` in the corrector's frame,
    seen at ``R(-r)`` of that on the camera; ``r`` is the angle that best turns the
    expected directions onto the measured ones. The returned flag says that the pattern
    moved more than 90 degrees from where over-focus sends it: read as C10 acting with the
    opposite sign (the camera is taken to be turned by less than 90 degrees), and the
    rotation is given for that case.
    """
    if len(shifts_px) < 2 or len(shifts_px) != len(probe_shifts_m):
        raise CalibrationDataError(
            "camera rotation: need two or more probe shifts and their frames"
        )
    angles, weights = [], []
    for measured, probe in zip(shifts_px, probe_shifts_m, strict=True):
        expected = -np.asarray(probe, dtype=np.float64)
        angle_measured = math.atan2(measured[1], measured[0])
        angle_expected = math.atan2(expected[1], expected[0])
        angles.append(angle_expected - angle_measured)
        weights.append(float(np.hypot(*measured)))
    if min(weights) < 0.5:
        raise CalibrationDataError(
            f"camera rotation: the pattern moved only {min(weights):.2g} px under a probe shift "
            "(no texture, or not out of focus)"
        )
    unit = np.exp(1j * np.array(angles))
    mean = np.sum(np.array(weights) * unit) / np.sum(weights)
    rotation = float(np.angle(mean))
    reversed_c10 = abs(rotation) > math.pi / 2
    if reversed_c10:
        rotation = float(np.angle(-mean))
    spread = np.angle(unit / (mean / abs(mean)))
    sigma = float(np.std(spread, ddof=1) / math.sqrt(len(angles)))
    return Estimate(rotation, sigma, "rad"), reversed_c10


def drift_speed(
    shifts_px: Sequence[np.ndarray], times_s: Numbers, scale: Estimate, defocus_m: float
) -> Estimate:
    """Specimen drift speed (m/s) from the pattern's shifts (pixels) at times (s) at the
    same probe position and over-focus ``defocus_m``: a straight-line fit of each
    component's shift against time; the pattern moves ``v t / D``."""
    if len(shifts_px) < 3:
        raise CalibrationDataError("drift: need frames at three or more times")
    t = np.asarray(times_s, dtype=np.float64)
    s = np.asarray(shifts_px, dtype=np.float64) * scale.value * defocus_m  # metres
    design = np.stack([t, np.ones_like(t)], axis=1)
    velocity, variances = [], []
    for axis in range(2):
        coef, residual, *_ = np.linalg.lstsq(design, s[:, axis], rcond=None)
        dof = max(len(t) - 2, 1)
        noise = float(residual[0]) / dof if residual.size else 0.0
        cov = np.linalg.inv(design.T @ design) * noise
        velocity.append(float(coef[0]))
        variances.append(float(cov[0, 0]))
    speed = math.hypot(*velocity)
    sigma = math.sqrt(sum(variances) / 2)
    return Estimate(speed, sigma, "m/s")


def lens_lag(
    delays_s: Numbers,
    remaining: Numbers,
    sigmas: Numbers | None = None,
) -> tuple[Estimate, Estimate]:
    """Lens time constant (s) from the fraction of a C10 step still to go at delays (s)
    after it.

    ``tau``: a least-squares fit of ``exp(-t / tau)`` (the fraction starts at 1: the plan
    reads the settled values before and after the step). ``a``: a second fit of
    ``a exp(-t / tau)`` with ``a`` free, as a check (near 1 for an exponential lens).
    Both use the soft-L1 loss (one misread frame does not pull them), each reading weighted
    by ``1 / sigma`` (relative; default equal).
    """
    t = np.asarray(delays_s, dtype=np.float64)
    f = np.asarray(remaining, dtype=np.float64)
    sig = np.ones_like(t) if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    if sig.shape != t.shape or not np.all(sig > 0):
        raise CalibrationDataError("lens lag: one positive sigma per reading")
    if len(t) < 4 or not np.all(np.isfinite(f)):
        raise CalibrationDataError("lens lag: need four or more finite readings after the step")
    if np.max(f) < 0.3:
        raise CalibrationDataError(
            f"lens lag: the optics had settled by the first reading ({t.min():.3g} s after the "
            "step); take readings sooner"
        )
    weight = float(np.median(sig)) / sig

    def soft_l1(tau: float) -> float:  # the fits' loss, for the start
        z = ((np.exp(-t / tau) - f) * weight / 0.1) ** 2
        return float(np.sum(2.0 * (np.sqrt(1.0 + z) - 1.0)))

    # the start: the best of a grid over the delays' range (a misread frame cannot put the
    # fit into a local minimum)
    grid = np.geomspace(max(float(t.min()), 1e-4) / 3, float(t.max()) * 3, 80)
    tau0 = float(min(grid, key=soft_l1))

    def fit(free: bool) -> tuple[np.ndarray, np.ndarray]:
        def residual(p: np.ndarray) -> np.ndarray:
            amplitude = float(p[1]) if free else 1.0
            return (amplitude * np.exp(-t / math.exp(float(p[0]))) - f) * weight

        start = np.array([math.log(tau0), 1.0]) if free else np.array([math.log(tau0)])
        result = optimize.least_squares(residual, start, loss="soft_l1", f_scale=0.1)
        if not result.success:
            raise CalibrationDataError(f"lens lag: the exponential fit failed: {result.message}")
        dof = max(len(t) - len(start), 1)
        noise = (float(np.median(np.abs(result.fun))) * 1.4826) ** 2  # robust variance
        try:
            cov = np.linalg.inv(result.jac.T @ result.jac) * max(noise, 1e-12) * len(t) / dof
        except np.linalg.LinAlgError as exc:
            raise CalibrationDataError("lens lag: the exponential fit is singular") from exc
        return result.x, np.sqrt(np.maximum(np.diag(cov), 0.0))

    x, sx = fit(free=False)
    tau = math.exp(float(x[0]))
    xa, sa = fit(free=True)
    return Estimate(tau, tau * float(sx[0]), "s"), Estimate(float(xa[1]), float(sa[1]), "")


def derotate(image: np.ndarray, rotation_rad: float, axis_px: tuple[float, float]) -> np.ndarray:
    """A camera image turned back into the corrector's frame about the axis pixel
    (column, row): the output pixel at offset ``a`` from the axis shows the camera pixel at
    ``R(-r) a`` (bilinear)."""
    c, s = math.cos(rotation_rad), math.sin(rotation_rad)
    # output (row, col) offsets (ay, ax) -> camera (v, u) = R(-r) (ax, ay):
    # u = c ax + s ay, v = -s ax + c ay
    matrix = np.array([[c, -s], [s, c]])  # (v, u) from (ay, ax)
    centre = np.array([axis_px[1], axis_px[0]])
    offset = centre - matrix @ centre
    return ndimage.affine_transform(
        np.asarray(image, dtype=np.float64), matrix, offset=offset, order=1, mode="nearest"
    )
