"""Electron optics: aberrations in Krivanek notation, chi, pi/4 angle, Strehl ratio, probe size.

Convention (the project's reference)
------------------------------------
Aberrations are Cartesian components in metres, named ``Cnm`` when rotationally symmetric
(m = 0) and ``Cnma`` / ``Cnmb`` otherwise: n + 1 is the power of the angle, m the angular
symmetry. The aberration function (rad) is::

    chi(alpha, phi) = (2 pi / lambda) * sum_{n,m} alpha^(n+1) / (n+1)
                      * (C_nm_a cos(m phi) + C_nm_b sin(m phi))

with ``alpha = |(alpha_x, alpha_y)|`` the scattering angle (rad), ``phi = atan2(alpha_y,
alpha_x)``, and x, y the specimen-plane axes (in emauto images x is the column index and y the
row index; arrays are ``[y, x]``). An angle is ``alpha = lambda * k`` for a spatial frequency
``k`` (1/m), as in abTEM. The wave in the aperture plane is ``A(alpha) exp(-i chi)``, abTEM's
sign. Positive C10 is overfocus in Krivanek's sense; it equals abTEM's ``C10``, and abTEM's
``defocus`` is ``-C10``.

Other conventions, converted here and tested in ``tests/test_optics.py``:

- abTEM (polar, Ångström and rad): ``C_nm cos(m (phi - phi_nm))``, so
  ``C_nm_a = C_nm cos(m phi_nm)`` and ``C_nm_b = C_nm sin(m phi_nm)``. abTEM arrays are
  indexed ``[x, y]``.
- Nion Swift (Cartesian, metres): ``C12.x`` is ``C12a`` and ``C12.y`` is ``C12b``, with the
  same polynomials as here (nionswift-usim's ``AberrationsController``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from scipy import constants, fft, optimize, special

from emauto.units import StrictModel

ABERRATION_NAMES: tuple[str, ...] = (
    "C10", "C12a", "C12b", "C21a", "C21b", "C23a", "C23b",
    "C30", "C32a", "C32b", "C34a", "C34b",
    "C41a", "C41b", "C43a", "C43b", "C45a", "C45b",
    "C50", "C52a", "C52b", "C54a", "C54b", "C56a", "C56b",
)  # fmt: skip

KRIVANEK_ALIASES: dict[str, tuple[str, ...]] = {
    "C1": ("C10",),
    "A1": ("C12a", "C12b"),
    "B2": ("C21a", "C21b"),
    "A2": ("C23a", "C23b"),
    "C3": ("C30",),
    "S3": ("C32a", "C32b"),
    "A3": ("C34a", "C34b"),
    "B4": ("C41a", "C41b"),
    "D4": ("C43a", "C43b"),
    "A4": ("C45a", "C45b"),
    "C5": ("C50",),
    "S5": ("C52a", "C52b"),
    "R5": ("C54a", "C54b"),
    "A5": ("C56a", "C56b"),
}

_SCALAR_ALIASES: dict[str, str] = {
    alias: names[0] for alias, names in KRIVANEK_ALIASES.items() if len(names) == 1
}


def _orders(name: str) -> tuple[int, int, str]:
    """``(n, m, part)`` of a Cartesian name: ``C23b`` -> (2, 3, 'b'), ``C30`` -> (3, 0, '')."""
    if name not in ABERRATION_NAMES:
        raise ValueError(
            f"unknown aberration {name!r}; expected one of {', '.join(ABERRATION_NAMES)}"
        )
    return int(name[1]), int(name[2]), name[3:]


def _check_positive(label: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{label} must be a finite positive number, got {value!r}")
    return value


# --------------------------------------------------------------------------- the model


class Aberrations(StrictModel):
    """Cartesian aberration coefficients (m), Krivanek notation; see the module docstring."""

    C10: float = 0.0
    C12a: float = 0.0
    C12b: float = 0.0
    C21a: float = 0.0
    C21b: float = 0.0
    C23a: float = 0.0
    C23b: float = 0.0
    C30: float = 0.0
    C32a: float = 0.0
    C32b: float = 0.0
    C34a: float = 0.0
    C34b: float = 0.0
    C41a: float = 0.0
    C41b: float = 0.0
    C43a: float = 0.0
    C43b: float = 0.0
    C45a: float = 0.0
    C45b: float = 0.0
    C50: float = 0.0
    C52a: float = 0.0
    C52b: float = 0.0
    C54a: float = 0.0
    C54b: float = 0.0
    C56a: float = 0.0
    C56b: float = 0.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> Aberrations:
        """Build from ``{name: metres}``; ``C1``, ``C3``, ``C5`` stand for C10, C30, C50."""
        resolved: dict[str, float] = {}
        for key, value in values.items():
            name = _SCALAR_ALIASES.get(key, key)
            if name not in ABERRATION_NAMES:
                hint = ""
                if key in KRIVANEK_ALIASES:
                    hint = (
                        f" ({key} has two components: give {' and '.join(KRIVANEK_ALIASES[key])})"
                    )
                raise ValueError(
                    f"unknown aberration {key!r}{hint}; expected one of "
                    f"{', '.join(ABERRATION_NAMES)} (or C1, C3, C5)"
                )
            if name in resolved:
                raise ValueError(f"aberration {name} given twice (as {name} and an alias)")
            resolved[name] = value
        return cls.model_validate(resolved)

    @classmethod
    def from_array(
        cls, values: Sequence[float] | np.ndarray, names: Sequence[str] = ABERRATION_NAMES
    ) -> Aberrations:
        """Inverse of `as_array`: coefficients (m) in the order of ``names``."""
        array = np.asarray(values, dtype=np.float64)
        if array.shape != (len(names),):
            raise ValueError(f"expected {len(names)} coefficients, got shape {array.shape}")
        return cls.from_mapping(dict(zip(names, array.tolist(), strict=True)))

    def to_dict(self) -> dict[str, float]:
        """``{name: metres}`` for every coefficient, in `ABERRATION_NAMES` order."""
        return {name: float(getattr(self, name)) for name in ABERRATION_NAMES}

    def as_array(self, names: Sequence[str] = ABERRATION_NAMES) -> np.ndarray:
        """The coefficients (m) in the order of ``names``, float64."""
        for name in names:
            _orders(name)
        return np.array([getattr(self, name) for name in names], dtype=np.float64)

    def replace(self, **changes: float) -> Aberrations:
        """A validated copy with some coefficients (m) changed; aliases C1/C3/C5 allowed."""
        changed = Aberrations.from_mapping(changes).model_dump(exclude_unset=True)
        return Aberrations.model_validate({**self.to_dict(), **changed})


# --------------------------------------------------------------------------- electrons


def wavelength(energy_eV: float) -> float:
    """Relativistic electron wavelength (m) at a kinetic energy (eV)."""
    energy_J = _check_positive("energy_eV", energy_eV) * constants.e
    rest_J = constants.m_e * constants.c**2
    return float(constants.h * constants.c / math.sqrt(energy_J * (energy_J + 2 * rest_J)))


electron_wavelength = wavelength


def interaction_parameter(energy_eV: float) -> float:
    """Relativistic interaction parameter sigma (rad/(V m)) at a kinetic energy (eV).

    Kirkland's ``sigma = 2 pi m e lambda / h^2`` with the relativistic mass ``m`` and
    wavelength ``lambda``, evaluated by abTEM (`abtem.core.energy.energy2sigma`, rad/(V Å),
    ase's CODATA-2014 constants) and converted to SI. abTEM's value and not the same formula
    with scipy's constants (as in `wavelength`): the twin's multislice runs inside abTEM with
    this sigma, and its fast path (`emauto.drivers.sim.specimens.Specimen.phase_shift`) must
    give the same numbers. Between 20 keV and 1.5 MeV the two differ by 4.3e-9 to 7.9e-9
    (relative; scipy's CODATA-2022 constants give the smaller sigma), enough to round to a
    different float32 sigma at about 6 % of energies; ``tests/test_optics.py`` measures it.
    """
    _check_positive("energy_eV", energy_eV)
    from abtem.core.energy import energy2sigma

    return float(energy2sigma(float(energy_eV))) * 1e10  # rad/(V Å) -> rad/(V m)


# --------------------------------------------------------------------------- chi


def chi_basis(
    alpha_x: np.ndarray | float,
    alpha_y: np.ndarray | float,
    names: Sequence[str] = ABERRATION_NAMES,
) -> np.ndarray:
    """Basis ``alpha^(n+1)/(n+1) * (cos | sin)(m phi)`` (rad^(n+1)), shape (K, *alpha.shape).

    ``chi = 2 pi / lambda * np.tensordot(coefficients_m, basis, axes=1)``. Evaluated as
    polynomials: ``alpha^(n+1) e^(i m phi) = |w|^(n+1-m) w^m`` with ``w = alpha_x + i alpha_y``.
    """
    ax, ay = np.broadcast_arrays(
        np.asarray(alpha_x, dtype=np.float64), np.asarray(alpha_y, dtype=np.float64)
    )
    orders = [_orders(name) for name in names]
    r2 = ax**2 + ay**2
    w = ax + 1j * ay
    w_powers = [np.ones_like(w)]
    for _ in range(max((m for _, m, _ in orders), default=0)):
        w_powers.append(w_powers[-1] * w)
    basis = np.empty((len(names), *ax.shape), dtype=np.float64)
    for i, (n, m, part) in enumerate(orders):
        angular = w_powers[m].imag if part == "b" else w_powers[m].real
        basis[i] = r2 ** ((n + 1 - m) // 2) * angular / (n + 1)
    return basis


def _nonzero(aberrations: Aberrations) -> tuple[list[str], np.ndarray]:
    names = [name for name in ABERRATION_NAMES if getattr(aberrations, name) != 0.0]
    return names, aberrations.as_array(names)


def chi(
    alpha_x: np.ndarray | float,
    alpha_y: np.ndarray | float,
    aberrations: Aberrations,
    wavelength_m: float,
) -> np.ndarray:
    """The aberration function chi (rad) at scattering angles ``(alpha_x, alpha_y)`` (rad)."""
    names, coefficients = _nonzero(aberrations)
    basis = chi_basis(alpha_x, alpha_y, names)
    return (2 * math.pi / wavelength_m) * np.tensordot(coefficients, basis, axes=1)


def chi_gradient(
    alpha_x: np.ndarray | float,
    alpha_y: np.ndarray | float,
    aberrations: Aberrations,
    wavelength_m: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(d chi / d alpha_x, d chi / d alpha_y)`` in rad per rad.

    ``wavelength_m / (2 pi)`` times this is the geometric ray's position in the specimen
    plane (m). Each term is ``Re[c w^p conj(w)^q] / (n+1)`` with ``c = a - i b``,
    ``p = (n+1+m)/2``, ``q = (n+1-m)/2``; its gradient follows from Wirtinger derivatives.
    """
    ax, ay = np.broadcast_arrays(
        np.asarray(alpha_x, dtype=np.float64), np.asarray(alpha_y, dtype=np.float64)
    )
    w = ax + 1j * ay
    wc = np.conj(w)
    derivative = np.zeros(ax.shape, dtype=np.complex128)  # 2 d chi / d w = chi_x - i chi_y
    values = aberrations.to_dict()
    for name in ABERRATION_NAMES:
        n, m, part = _orders(name)
        if part == "b":
            continue
        c = values[name] - 1j * values.get(f"C{n}{m}b", 0.0)
        if c == 0:
            continue
        p, q = (n + 1 + m) // 2, (n + 1 - m) // 2
        term = c * p * w ** (p - 1) * wc**q
        if q > 0:
            term = term + np.conj(c) * q * w ** (q - 1) * wc**p
        derivative += term / (n + 1)
    scale = 2 * math.pi / wavelength_m
    return scale * derivative.real, -scale * derivative.imag


# --------------------------------------------------------------------------- conventions


def to_abtem_polar(aberrations: Aberrations) -> dict[str, float]:
    """abTEM's polar coefficients: ``C_nm`` in Ångström, ``phi_nm`` in rad (in [-pi/m, pi/m])."""
    values = aberrations.to_dict()
    out: dict[str, float] = {}
    for name in ABERRATION_NAMES:
        n, m, part = _orders(name)
        if m == 0:
            out[f"C{n}{m}"] = values[name] * 1e10
        elif part == "a":
            a, b = values[name], values[f"C{n}{m}b"]
            out[f"C{n}{m}"] = math.hypot(a, b) * 1e10
            out[f"phi{n}{m}"] = math.atan2(b, a) / m
    return out


def _abtem_polar_keys() -> tuple[str, ...]:
    keys: list[str] = []
    for name in ABERRATION_NAMES:
        n, m, part = _orders(name)
        if part != "b":
            keys.append(f"C{n}{m}")
        if part == "a":
            keys.append(f"phi{n}{m}")
    return tuple(keys)


def from_abtem_polar(polar: Mapping[str, float]) -> Aberrations:
    """Inverse of `to_abtem_polar` (Å, rad); missing keys are zero, unknown keys raise."""
    unknown = sorted(set(polar) - set(_abtem_polar_keys()))
    if unknown:
        raise ValueError(
            f"unknown abTEM polar key(s) {unknown}; expected {', '.join(_abtem_polar_keys())} "
            "(abTEM's aliases such as 'defocus' = -C10 are not accepted)"
        )
    values: dict[str, float] = {}
    for name in ABERRATION_NAMES:
        n, m, part = _orders(name)
        magnitude = float(polar.get(f"C{n}{m}", 0.0)) * 1e-10
        angle = float(polar.get(f"phi{n}{m}", 0.0))
        if m == 0:
            values[name] = magnitude
        elif part == "a":
            values[name] = magnitude * math.cos(m * angle)
        else:
            values[name] = magnitude * math.sin(m * angle)
    return Aberrations.model_validate(values)


def _nion_name(name: str) -> str:
    n, m, part = _orders(name)
    return f"C{n}{m}" + {"a": ".x", "b": ".y", "": ""}[part]


def to_nion(aberrations: Aberrations) -> dict[str, float]:
    """Nion Swift's Cartesian names (``C12.x`` = ``C12a``, ``C12.y`` = ``C12b``), metres."""
    return {_nion_name(name): value for name, value in aberrations.to_dict().items()}


def from_nion(values: Mapping[str, float]) -> Aberrations:
    """Inverse of `to_nion`; missing names are zero, unknown names raise ValueError."""
    reverse = {_nion_name(name): name for name in ABERRATION_NAMES}
    unknown = sorted(set(values) - set(reverse))
    if unknown:
        raise ValueError(f"unknown Nion aberration name(s) {unknown}; expected {sorted(reverse)}")
    return Aberrations.model_validate({reverse[key]: value for key, value in values.items()})


def scherzer_defocus(C30_m: float, wavelength_m: float) -> float:
    """Scherzer C10 (m) in emauto's sign, ``-sign(C3) sqrt(1.5 |C3| lambda)``: underfocus."""
    return -math.copysign(math.sqrt(1.5 * abs(C30_m) * wavelength_m), C30_m)


# --------------------------------------------------------------------------- probe quality


def pi4_angle(
    aberrations: Aberrations,
    wavelength_m: float,
    max_angle: float = 0.2,
    n_radial: int = 400,
    n_azimuthal: int = 360,
) -> float:
    """Largest semi-angle (rad) of a disc on which ``|chi| <= pi/4`` everywhere.

    Scans ``n_radial`` rings up to ``max_angle`` for the first whose azimuthal maximum of
    ``|chi|`` exceeds pi/4, then bisects between it and the ring before. Returns
    ``max_angle`` when no ring within it does.
    """
    _check_positive("max_angle", max_angle)
    names, coefficients = _nonzero(aberrations)
    phis = np.linspace(0.0, 2 * math.pi, n_azimuthal, endpoint=False)
    scale = 2 * math.pi / wavelength_m

    def worst(radii: np.ndarray) -> np.ndarray:
        basis = chi_basis(radii[:, None] * np.cos(phis), radii[:, None] * np.sin(phis), names)
        return np.max(np.abs(scale * np.tensordot(coefficients, basis, axes=1)), axis=1)

    radii = np.linspace(0.0, max_angle, n_radial + 1)
    above = np.flatnonzero(worst(radii) > math.pi / 4)
    if len(above) == 0:
        return float(max_angle)
    low, high = float(radii[above[0] - 1]), float(radii[above[0]])
    while high - low > 1e-9 * max_angle:
        middle = 0.5 * (low + high)
        if worst(np.array([middle]))[0] > math.pi / 4:
            high = middle
        else:
            low = middle
    return low


@lru_cache(maxsize=8)
def _disc_quadrature(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points ``(x, y)`` on the unit disc and weights (sum 1) for its mean.

    Gauss-Legendre in ``s = r^2`` (n nodes) times the trapezoid rule in phi (4 n nodes): the
    ring mean of a polynomial in (x, y) is a polynomial in s, so smooth integrands converge
    exponentially. Cached; the arrays are read-only.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    nodes, weights = np.polynomial.legendre.leggauss(n)
    radii = np.sqrt((nodes + 1) / 2)
    n_phi = 4 * n
    phis = (np.arange(n_phi) + 0.5) * (2 * math.pi / n_phi)
    x = (radii[:, None] * np.cos(phis)).ravel()
    y = (radii[:, None] * np.sin(phis)).ravel()
    w = np.repeat(weights / 2 / n_phi, n_phi)
    for array in (x, y, w):
        array.setflags(write=False)
    return x, y, w


@lru_cache(maxsize=32)
def _disc_basis(names: tuple[str, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    """chi basis on the unit-disc quadrature points and the angular powers ``n + 1``."""
    x, y, _ = _disc_quadrature(n)
    basis = chi_basis(x, y, names)
    powers = np.array([_orders(name)[0] + 1 for name in names], dtype=np.float64)
    basis.setflags(write=False)
    powers.setflags(write=False)
    return basis, powers


def _aperture_phase(
    coefficients: np.ndarray,
    names: Sequence[str],
    wavelength_m: float,
    aperture_rad: float,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """chi (B, P) at the disc quadrature points of (B, K) coefficient sets, and the weights."""
    coefficients = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    if coefficients.ndim != 2 or coefficients.shape[1] != len(names):
        raise ValueError(
            f"coefficients must be (B, {len(names)}) for {len(names)} names, "
            f"got shape {coefficients.shape}"
        )
    _check_positive("aperture_rad", aperture_rad)
    basis, powers = _disc_basis(tuple(names), n)
    _, _, weights = _disc_quadrature(n)
    phase = (coefficients * ((2 * math.pi / wavelength_m) * aperture_rad**powers)) @ basis
    return phase, weights


def strehl_ratio_batch(
    coefficients: np.ndarray,
    names: Sequence[str],
    wavelength_m: float,
    aperture_rad: float,
    n: int = 32,
) -> np.ndarray:
    """Strehl ratios, shape (B,), of a batch of aberration sets ``coefficients`` (B, K) in m.

    ``S = |mean over the filled aperture disc of exp(-i chi)|^2``, the probe's peak intensity
    relative to the aberration-free probe. ``names`` (K) orders the columns. The mean is
    ``1 + sum w (exp(-i chi) - 1)`` so that a flat phase gives exactly 1.
    """
    phase, weights = _aperture_phase(coefficients, names, wavelength_m, aperture_rad, n)
    deviation = -2 * np.sin(phase / 2) ** 2 - 1j * np.sin(phase)  # exp(-i chi) - 1
    mean = 1 + deviation @ weights
    return np.minimum(np.abs(mean) ** 2, 1.0)


def phase_variance_batch(
    coefficients: np.ndarray,
    names: Sequence[str],
    wavelength_m: float,
    aperture_rad: float,
    n: int = 32,
) -> np.ndarray:
    """Variance of chi over the filled aperture disc (rad^2), shape (B,), for (B, K) sets.

    Piston-free wavefront error: Marechal's ``S ~ exp(-variance)`` holds for small values,
    and unlike the Strehl ratio the variance keeps a slope far from the optimum.
    """
    phase, weights = _aperture_phase(coefficients, names, wavelength_m, aperture_rad, n)
    mean = phase @ weights
    return np.maximum(np.square(phase) @ weights - mean**2, 0.0)


def strehl_ratio(
    aberrations: Aberrations, wavelength_m: float, aperture_rad: float, n: int = 32
) -> float:
    """Strehl ratio of one aberration set over a filled disc of semi-angle ``aperture_rad``."""
    names, coefficients = _nonzero(aberrations)
    if not names:
        return 1.0
    return float(strehl_ratio_batch(coefficients[None], names, wavelength_m, aperture_rad, n)[0])


def phase_variance(
    aberrations: Aberrations, wavelength_m: float, aperture_rad: float, n: int = 32
) -> float:
    """Variance of chi (rad^2) of one aberration set over a filled disc of ``aperture_rad``."""
    names, coefficients = _nonzero(aberrations)
    if not names:
        return 0.0
    return float(phase_variance_batch(coefficients[None], names, wavelength_m, aperture_rad, n)[0])


def _grid_shape(gpts: int | tuple[int, int]) -> tuple[int, int]:
    """``(ny, nx)`` from one int or a pair."""
    ny, nx = np.broadcast_to(np.asarray(gpts), (2,)).tolist()
    if int(ny) != ny or int(nx) != nx or ny < 1 or nx < 1:
        raise ValueError(f"gpts must be one or two positive integers, got {gpts}")
    return int(ny), int(nx)


def _grid_sampling(sampling_m: float | tuple[float, float]) -> tuple[float, float]:
    """``(sy, sx)`` in m from one float or a pair."""
    sy, sx = np.broadcast_to(np.asarray(sampling_m, dtype=np.float64), (2,)).tolist()
    return _check_positive("sampling_m", sy), _check_positive("sampling_m", sx)


def _probe_wave_k(
    aberrations: Aberrations,
    wavelength_m: float,
    aperture_rad: float,
    gpts: tuple[int, int],
    sampling_m: tuple[float, float],
    shift_m: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Hard-aperture probe in reciprocal space ([y, x], unshifted FFT order), moved by shift."""
    (ny, nx), (sy, sx) = gpts, sampling_m
    if aperture_rad > wavelength_m / (2 * max(sx, sy)):
        raise ValueError(
            f"sampling {max(sx, sy):.3g} m too coarse for a {aperture_rad:.3g} rad aperture: "
            f"need <= lambda / (2 alpha) = {wavelength_m / (2 * aperture_rad):.3g} m"
        )
    kx = np.fft.fftfreq(nx, d=sx)[None, :]
    ky = np.fft.fftfreq(ny, d=sy)[:, None]
    alpha_x, alpha_y = np.broadcast_arrays(kx * wavelength_m, ky * wavelength_m)
    inside = alpha_x**2 + alpha_y**2 <= aperture_rad**2  # abTEM's hard aperture: <=
    phase = chi(alpha_x[inside], alpha_y[inside], aberrations, wavelength_m)
    phase = phase - 2 * math.pi * (kx * shift_m[0] + ky * shift_m[1])[inside]
    wave_k = np.zeros((ny, nx), dtype=np.complex128)
    wave_k[inside] = np.exp(-1j * phase)
    return wave_k


def probe_intensity(
    aberrations: Aberrations,
    wavelength_m: float,
    aperture_rad: float,
    gpts: int | tuple[int, int],
    sampling_m: float | tuple[float, float],
) -> np.ndarray:
    """Real-space probe intensity ``[y, x]``, sum 1, optical axis at ``(ny // 2, nx // 2)``.

    The FFT of a hard aperture times ``exp(-i chi)`` on a periodic grid of ``gpts`` (ny, nx)
    points spaced ``sampling_m`` (sy, sx) metres.
    """
    shape, sampling = _grid_shape(gpts), _grid_sampling(sampling_m)
    wave_k = _probe_wave_k(aberrations, wavelength_m, aperture_rad, shape, sampling)
    intensity = np.abs(np.fft.fftshift(np.fft.ifft2(wave_k))) ** 2
    return intensity / intensity.sum()


def _airy_diameter(wavelength_m: float, aperture_rad: float, fraction: float) -> float:
    """Diameter (m) of the circle holding ``fraction`` of an aberration-free (Airy) probe."""
    v = optimize.brentq(lambda v: 1 - special.j0(v) ** 2 - special.j1(v) ** 2 - fraction, 0, 1e4)
    return float(2 * v * wavelength_m / (2 * math.pi * aperture_rad))


def _geometric_rays(
    aberrations: Aberrations, wavelength_m: float, aperture_rad: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray positions (x, y) in the specimen plane (m) over the filled aperture, and weights."""
    ux, uy, weights = _disc_quadrature(n)
    gx, gy = chi_gradient(aperture_rad * ux, aperture_rad * uy, aberrations, wavelength_m)
    scale = wavelength_m / (2 * math.pi)
    return scale * gx, scale * gy, weights


def _encircled_fraction_radius(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, fraction: float
) -> float:
    """Radius around the weighted centroid holding ``fraction`` of the weight."""
    cx, cy = float(weights @ x), float(weights @ y)
    distance = np.hypot(x - cx, y - cy)
    order = np.argsort(distance)
    cumulative = np.cumsum(weights[order])
    return float(np.interp(fraction, cumulative, distance[order]))


def probe_size(
    aberrations: Aberrations,
    wavelength_m: float,
    aperture_rad: float,
    fraction: float = 0.5,
    max_gpts: int = 2048,
) -> float:
    """Diameter (m) of the circle, centred on the intensity centroid, holding ``fraction``.

    Wave optics on a periodic grid chosen from the geometric probe size (ray positions
    ``lambda/(2 pi) grad chi`` over the aperture) and the Airy tails, sampled finely enough
    that the intensity's Fourier series is exact; the encircled current then follows in
    closed form from that series. The centroid is ``lambda/(2 pi) <grad chi>`` over the
    aperture. When the grid would need more than ``max_gpts`` points a side (the geometric
    blur then dominates), returns ``sqrt(d_geometric^2 + d_Airy^2)`` instead.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    _check_positive("aperture_rad", aperture_rad)
    x, y, weights = _geometric_rays(aberrations, wavelength_m, aperture_rad, 48)
    centre = (float(weights @ x), float(weights @ y))
    rim = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    rx, ry = chi_gradient(
        aperture_rad * np.cos(rim), aperture_rad * np.sin(rim), aberrations, wavelength_m
    )
    scale = wavelength_m / (2 * math.pi)
    geometric = max(
        float(np.max(np.hypot(x - centre[0], y - centre[1]), initial=0.0)),
        float(np.max(np.hypot(scale * rx - centre[0], scale * ry - centre[1]))),
    )
    sampling = wavelength_m / (5 * aperture_rad)  # intensity band limit 2 alpha / lambda
    extent = 3 * geometric + max(64.0, 2 / (1 - fraction)) * wavelength_m / aperture_rad
    gpts = fft.next_fast_len(math.ceil(extent / sampling))
    if gpts > max_gpts:
        d_geometric = 2 * _encircled_fraction_radius(x, y, weights, fraction)
        return math.hypot(d_geometric, _airy_diameter(wavelength_m, aperture_rad, fraction))
    wave_k = _probe_wave_k(
        aberrations, wavelength_m, aperture_rad, (gpts, gpts), (sampling, sampling), centre
    )
    intensity = np.abs(np.fft.ifft2(wave_k)) ** 2  # centroid at index (0, 0)
    spectrum = np.fft.fft2(intensity / intensity.sum())
    q = np.fft.fftfreq(gpts, d=sampling)
    q_abs = np.hypot(q[None, :], q[:, None])
    band = q_abs <= 2.01 * aperture_rad / wavelength_m
    coefficients, q_band = spectrum.real[band], q_abs[band]
    area = (gpts * sampling) ** 2

    def encircled(radius: float) -> float:
        # (1/A) sum_q F(q) * integral over the disc of exp(2 pi i q.r) = pi R^2 jinc(2 pi q R)
        argument = 2 * math.pi * q_band * radius
        jinc = np.where(argument > 0, 2 * special.j1(argument) / np.maximum(argument, 1e-300), 1)
        return float(coefficients @ jinc) * math.pi * radius**2 / area

    half = gpts * sampling / 2
    if encircled(half) < fraction:
        raise ValueError(f"fraction {fraction} too close to 1 for the grid; use a smaller one")
    return float(2 * optimize.brentq(lambda r: encircled(r) - fraction, 0.0, half, xtol=1e-15))
