"""Electron optics: aberrations in Krivanek notation, chi(k), pi/4 angle, Strehl, probe size.

Convention (the project's reference)
------------------------------------
Aberrations are Cartesian components in metres, named ``Cnm`` (rotationally symmetric,
m = 0) or ``Cnma`` / ``Cnmb``. The aberration function is::

    chi(alpha, phi) = (2 pi / lambda) * sum_{n,m} alpha^(n+1) / (n+1)
                      * (C_nm_a cos(m phi) + C_nm_b sin(m phi))

with ``alpha = |(alpha_x, alpha_y)|`` the scattering angle (rad) and
``phi = atan2(alpha_y, alpha_x)``; x and y are the specimen-plane axes (in emauto images
x is the column index, y the row index, arrays are ``[y, x]``). The wave in the aperture
plane is ``A(alpha) exp(-i chi)``, abTEM's sign. Positive C10 is overfocus (Krivanek), equal
to abTEM's ``C10``; abTEM's ``defocus`` is ``-C10``.

- abTEM (polar, Ångström): ``C_nm cos(m (phi - phi_nm))``, so ``C_nm_a = C_nm cos(m phi_nm)``
  and ``C_nm_b = C_nm sin(m phi_nm)``.
- Nion (SI Cartesian): ``C12.x`` = ``C12a``, ``C12.y`` = ``C12b``, …, the same polynomials
  (checked against nionswift-usim's expressions in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import constants, optimize, special

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

_SCALAR_ALIASES = {"C1": "C10", "C3": "C30", "C5": "C50"}


def _orders(name: str) -> tuple[int, int, str]:
    """(n, m, part) of a Cartesian name: ``C23b`` -> (2, 3, 'b'); ``C30`` -> (3, 0, '')."""
    return int(name[1]), int(name[2]), name[3:]


class Aberrations(BaseModel):
    """Cartesian aberration coefficients in metres (Krivanek notation)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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
        """Build from ``{name: metres}``; accepts ``C1``, ``C3``, ``C5`` for the round ones."""
        resolved: dict[str, float] = {}
        for key, value in values.items():
            name = _SCALAR_ALIASES.get(key, key)
            if name not in ABERRATION_NAMES:
                raise ValueError(
                    f"unknown aberration {key!r}; expected one of {', '.join(ABERRATION_NAMES)}"
                )
            resolved[name] = float(value)
        return cls(**resolved)

    def to_dict(self) -> dict[str, float]:
        """``{name: metres}`` for every coefficient."""
        return {name: float(getattr(self, name)) for name in ABERRATION_NAMES}

    def as_array(self, names: Sequence[str] = ABERRATION_NAMES) -> np.ndarray:
        """The coefficients (m) in the order of ``names``."""
        return np.array([getattr(self, name) for name in names], dtype=np.float64)

    def replace(self, **changes: float) -> Aberrations:
        """A copy with some coefficients changed."""
        return Aberrations.from_mapping({**self.to_dict(), **changes})


# --------------------------------------------------------------------------- electrons


def wavelength(energy_eV: float) -> float:
    """Relativistic electron wavelength (m) at a kinetic energy (eV)."""
    m, e, c, h = constants.m_e, constants.e, constants.c, constants.h
    energy_J = energy_eV * e
    return float(h / math.sqrt(2 * m * energy_J * (1 + energy_J / (2 * m * c**2))))


def interaction_parameter(energy_eV: float) -> float:
    """Kirkland's relativistic interaction parameter sigma (rad / (V m))."""
    m, e, c = constants.m_e, constants.e, constants.c
    gamma = 1 + energy_eV * e / (m * c**2)
    return float(2 * math.pi * gamma * m * e * wavelength(energy_eV) / constants.h**2)


# --------------------------------------------------------------------------- chi


def chi_basis(
    alpha_x: np.ndarray | float,
    alpha_y: np.ndarray | float,
    names: Sequence[str] = ABERRATION_NAMES,
) -> np.ndarray:
    """Basis functions ``alpha^(n+1)/(n+1) * cos|sin(m phi)``, shape (len(names), *alpha).

    ``chi = 2 pi / lambda * np.tensordot(coefficients, basis, axes=1)``.
    """
    ax = np.asarray(alpha_x, dtype=np.float64)
    ay = np.asarray(alpha_y, dtype=np.float64)
    alpha = np.hypot(ax, ay)
    phi = np.arctan2(ay, ax)
    basis = np.empty((len(names), *np.broadcast(ax, ay).shape))
    for i, name in enumerate(names):
        n, m, part = _orders(name)
        radial = alpha ** (n + 1) / (n + 1)
        if m == 0:
            basis[i] = radial
        elif part == "a":
            basis[i] = radial * np.cos(m * phi)
        else:
            basis[i] = radial * np.sin(m * phi)
    return basis


def chi(
    alpha_x: np.ndarray | float,
    alpha_y: np.ndarray | float,
    aberrations: Aberrations,
    wavelength_m: float,
) -> np.ndarray:
    """The aberration function chi (rad) at scattering angles (alpha_x, alpha_y) in rad."""
    names = [name for name in ABERRATION_NAMES if getattr(aberrations, name) != 0.0]
    shape = np.broadcast(np.asarray(alpha_x), np.asarray(alpha_y)).shape
    if not names:
        return np.zeros(shape)
    basis = chi_basis(alpha_x, alpha_y, names)
    coefficients = aberrations.as_array(names)
    return np.asarray(2 * math.pi / wavelength_m * np.tensordot(coefficients, basis, axes=1))


# --------------------------------------------------------------------------- conventions


def to_abtem_polar(aberrations: Aberrations) -> dict[str, float]:
    """abTEM's polar convention: magnitudes in Ångström, angles ``phi_nm`` in rad."""
    out: dict[str, float] = {}
    values = aberrations.to_dict()
    for name in ABERRATION_NAMES:
        n, m, part = _orders(name)
        if m == 0:
            out[f"C{n}{m}"] = values[name] * 1e10
        elif part == "a":
            a, b = values[name], values[f"C{n}{m}b"]
            out[f"C{n}{m}"] = math.hypot(a, b) * 1e10
            out[f"phi{n}{m}"] = math.atan2(b, a) / m
    return out


def from_abtem_polar(polar: Mapping[str, float]) -> Aberrations:
    """Inverse of `to_abtem_polar` (missing keys are zero)."""
    values: dict[str, float] = {}
    for name in ABERRATION_NAMES:
        n, m, part = _orders(name)
        magnitude = float(polar.get(f"C{n}{m}", 0.0)) * 1e-10
        if m == 0:
            values[name] = magnitude
            continue
        angle = float(polar.get(f"phi{n}{m}", 0.0))
        trig = math.cos if part == "a" else math.sin
        values[name] = magnitude * trig(m * angle)
    return Aberrations(**values)


def _nion_name(name: str) -> str:
    n, m, part = _orders(name)
    return f"C{n}{m}" + {"a": ".x", "b": ".y", "": ""}[part]


def to_nion(aberrations: Aberrations) -> dict[str, float]:
    """Nion's SI Cartesian names (``C12.x`` = ``C12a``), metres."""
    return {_nion_name(name): value for name, value in aberrations.to_dict().items()}


def from_nion(values: Mapping[str, float]) -> Aberrations:
    """Inverse of `to_nion`; unknown Nion names raise ValueError."""
    reverse = {_nion_name(name): name for name in ABERRATION_NAMES}
    unknown = sorted(set(values) - set(reverse))
    if unknown:
        raise ValueError(f"unknown Nion aberration name(s) {unknown}")
    return Aberrations(**{reverse[key]: float(v) for key, v in values.items()})


def scherzer_defocus(C30_m: float, wavelength_m: float) -> float:
    """Scherzer C10 (m) in emauto's sign: underfocus (negative) for positive C3."""
    return -math.copysign(math.sqrt(1.5 * abs(C30_m) * wavelength_m), C30_m)


# --------------------------------------------------------------------------- probe quality


@lru_cache(maxsize=16)
def _disc_points(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-disc sample points (x, y) on an n x n grid of equal-area cells."""
    coords = (np.arange(n) + 0.5) / n * 2 - 1
    x, y = np.meshgrid(coords, coords)
    inside = x**2 + y**2 <= 1.0
    return x[inside], y[inside]


@lru_cache(maxsize=16)
def _disc_basis(n: int) -> np.ndarray:
    x, y = _disc_points(n)
    return chi_basis(x, y)


def strehl_ratio_batch(
    coefficients: np.ndarray,
    wavelength_m: float,
    aperture_rad: float,
    names: Sequence[str] = ABERRATION_NAMES,
    n: int = 64,
) -> np.ndarray:
    """Strehl ratios of a batch of aberration sets, coefficients (B, K) in m -> (B,)."""
    coefficients = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    index = [ABERRATION_NAMES.index(name) for name in names]
    basis = _disc_basis(n)[index]
    powers = np.array([_orders(name)[0] + 1 for name in names], dtype=np.float64)
    scaled = coefficients * aperture_rad**powers
    phase = (2 * math.pi / wavelength_m) * scaled @ basis
    return np.abs(np.mean(np.exp(-1j * phase), axis=1)) ** 2


def strehl_ratio(
    aberrations: Aberrations, wavelength_m: float, aperture_rad: float, n: int = 64
) -> float:
    """Peak probe intensity relative to the aberration-free probe, over a filled disc."""
    return float(
        strehl_ratio_batch(aberrations.as_array()[None], wavelength_m, aperture_rad, n=n)[0]
    )


def pi4_angle(
    aberrations: Aberrations,
    wavelength_m: float,
    max_angle: float = 0.2,
    n_radial: int = 2000,
    n_azimuthal: int = 360,
) -> float:
    """Largest semi-angle (rad) within which |chi| <= pi/4 everywhere; ``max_angle`` if none."""
    radii = np.linspace(0.0, max_angle, n_radial + 1)[1:]
    phis = np.linspace(0.0, 2 * math.pi, n_azimuthal, endpoint=False)
    alpha_x = radii[:, None] * np.cos(phis)[None, :]
    alpha_y = radii[:, None] * np.sin(phis)[None, :]
    worst = np.max(np.abs(chi(alpha_x, alpha_y, aberrations, wavelength_m)), axis=1)
    worst = np.maximum.accumulate(worst)
    above = np.flatnonzero(worst > math.pi / 4)
    if len(above) == 0:
        return max_angle
    i = int(above[0])
    if i == 0:
        return float(radii[0] * (math.pi / 4) / worst[0])
    r0, r1, w0, w1 = radii[i - 1], radii[i], worst[i - 1], worst[i]
    return float(r0 + (r1 - r0) * (math.pi / 4 - w0) / (w1 - w0))


def probe_intensity(
    aberrations: Aberrations,
    wavelength_m: float,
    aperture_rad: float,
    gpts: int,
    sampling_m: float,
) -> np.ndarray:
    """Real-space probe intensity (gpts, gpts), [y, x], sum 1, centred at gpts // 2."""
    freq = np.fft.fftfreq(gpts, d=sampling_m) * wavelength_m
    alpha_x, alpha_y = np.meshgrid(freq, freq, indexing="xy")
    inside = alpha_x**2 + alpha_y**2 <= aperture_rad**2
    wave_k = np.where(inside, np.exp(-1j * chi(alpha_x, alpha_y, aberrations, wavelength_m)), 0)
    intensity = np.abs(np.fft.fftshift(np.fft.ifft2(wave_k))) ** 2
    return np.asarray(intensity / intensity.sum())


def probe_size(
    aberrations: Aberrations, wavelength_m: float, aperture_rad: float, fraction: float = 0.5
) -> float:
    """Diameter (m) of the centroid-centred circle that holds ``fraction`` of the current."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    sampling = wavelength_m / (10.0 * aperture_rad)  # well inside the intensity band limit
    geometric = _geometric_radius(aberrations, aperture_rad)
    diffraction = 10 * wavelength_m / aperture_rad
    gpts = int(min(max(2 ** math.ceil(math.log2(4 * (geometric + diffraction) / sampling)), 128),
                   2048))  # fmt: skip
    intensity = probe_intensity(aberrations, wavelength_m, aperture_rad, gpts, sampling)
    coords = (np.arange(gpts) - gpts // 2) * sampling
    x, y = np.meshgrid(coords, coords, indexing="xy")
    cx, cy = float(np.sum(x * intensity)), float(np.sum(y * intensity))
    # Encircled current of the band-limited intensity, exactly, from its Fourier series:
    # EE(R) = (1/A) sum_q F(q) exp(2 pi i q.c) pi R^2 2 J1(2 pi q R) / (2 pi q R)
    spectrum = np.fft.fft2(np.fft.ifftshift(intensity))
    q = np.fft.fftfreq(gpts, d=sampling)
    qx, qy = np.meshgrid(q, q, indexing="xy")
    weights = spectrum * np.exp(2j * math.pi * (qx * cx + qy * cy))
    q_abs = np.hypot(qx, qy)
    area = (gpts * sampling) ** 2

    def encircled(radius: float) -> float:
        argument = 2 * math.pi * q_abs * radius
        airy = np.where(argument > 0, 2 * special.j1(argument) / np.maximum(argument, 1e-30), 1.0)
        return float(np.real(np.sum(weights * airy)) * math.pi * radius**2 / area)

    radius = optimize.brentq(
        lambda r: encircled(r) - fraction, 1e-3 * sampling, gpts * sampling / 2
    )
    return float(2 * radius)


def _geometric_radius(aberrations: Aberrations, aperture_rad: float) -> float:
    """A bound (m) on the geometric probe radius: sum over terms of |C| alpha^(n)."""
    total = 0.0
    for name, value in aberrations.to_dict().items():
        n, _, _ = _orders(name)
        total += abs(value) * aperture_rad**n
    return total
