"""emauto.optics against analytic values, abTEM's transfer functions and probes, and Nion's
polynomials.

abTEM notes used here: its arrays are indexed ``[x, y]`` (axis 0 is x; ``phi = atan2(ky, kx)``
on an ``indexing="ij"`` grid, see ``abtem.core.grid.polar_spatial_frequencies``), angles are
``alpha = lambda * k``, its default precision is float32 (set to float64 for tight
comparisons), and its probe aperture is soft by default (``soft=True``): ``soft=False`` gives
the hard aperture emauto uses.
"""

from __future__ import annotations

import math
from typing import Any

import abtem
import numpy as np
import pydantic
import pytest
from abtem.core.energy import energy2sigma, energy2wavelength
from scipy.optimize import brentq
from scipy.special import j0, j1

from emauto import optics

ENERGY = 200e3
LAMBDA = optics.wavelength(ENERGY)
SCALE = {1: 20e-9, 2: 300e-9, 3: 5e-6, 4: 100e-6, 5: 2e-3}  # m, per radial order n


def random_aberrations(rng: np.random.Generator, factor: float = 1.0) -> optics.Aberrations:
    """Every coefficient up to 5th order, uniform in +-factor * SCALE[n]."""
    return optics.Aberrations(
        **{
            name: factor * rng.uniform(-1, 1) * SCALE[int(name[1])]
            for name in optics.ABERRATION_NAMES
        }
    )


def airy_diameter(fraction: float, aperture: float) -> float:
    """Diameter holding ``fraction`` of an Airy probe: 1 - J0(v)^2 - J1(v)^2 = fraction."""
    v = brentq(lambda v: 1 - j0(v) ** 2 - j1(v) ** 2 - fraction, 1e-6, 500)
    return 2 * v * LAMBDA / (2 * math.pi * aperture)


# --------------------------------------------------------------------------- names and model


def test_names_and_aliases() -> None:
    assert len(optics.ABERRATION_NAMES) == 25
    for name in optics.ABERRATION_NAMES:
        n, m = int(name[1]), int(name[2])
        assert m <= n + 1 and (n + 1 - m) % 2 == 0
        assert (name[3:] == "") == (m == 0)
    covered = [name for names in optics.KRIVANEK_ALIASES.values() for name in names]
    assert sorted(covered) == sorted(optics.ABERRATION_NAMES)
    assert optics.KRIVANEK_ALIASES["C3"] == ("C30",)
    assert optics.KRIVANEK_ALIASES["R5"] == ("C54a", "C54b")


def test_model_defaults_frozen_and_strict() -> None:
    ab = optics.Aberrations()
    assert ab.to_dict() == dict.fromkeys(optics.ABERRATION_NAMES, 0.0)
    with pytest.raises(pydantic.ValidationError):
        ab.C10 = 1e-9  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        optics.Aberrations(C99=1.0)  # type: ignore[call-arg]
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(pydantic.ValidationError):
            optics.Aberrations(C30=bad)
        with pytest.raises(ValueError):
            optics.Aberrations.from_mapping({"C1": bad})
        with pytest.raises(ValueError):
            ab.replace(C12a=bad)


def test_from_mapping_aliases_and_errors() -> None:
    ab = optics.Aberrations.from_mapping({"C1": -3e-9, "C3": 1e-6, "C5": 2e-3, "C12b": 1e-9})
    assert (ab.C10, ab.C30, ab.C50, ab.C12b) == (-3e-9, 1e-6, 2e-3, 1e-9)
    with pytest.raises(ValueError, match=r"'C99'.*C10, C12a, C12b"):
        optics.Aberrations.from_mapping({"C99": 1.0})
    with pytest.raises(ValueError, match="C12a and C12b"):
        optics.Aberrations.from_mapping({"A1": 1.0})
    with pytest.raises(ValueError, match="twice"):
        optics.Aberrations.from_mapping({"C1": 1e-9, "C10": 2e-9})


def test_dict_array_replace_round_trips() -> None:
    ab = random_aberrations(np.random.default_rng(7))
    assert optics.Aberrations.from_mapping(ab.to_dict()) == ab
    assert optics.Aberrations.from_array(ab.as_array()) == ab
    names = ("C30", "C12b")
    np.testing.assert_array_equal(ab.as_array(names), [ab.C30, ab.C12b])
    assert optics.Aberrations.from_array([1e-6, 2e-9], names) == optics.Aberrations(
        C30=1e-6, C12b=2e-9
    )
    changed = ab.replace(C3=1e-3, C23a=0.0)
    assert (changed.C30, changed.C23a, changed.C10) == (1e-3, 0.0, ab.C10)
    assert ab.C30 != 1e-3  # the original is untouched
    with pytest.raises(ValueError, match="unknown aberration"):
        ab.replace(Cs=1e-3)


# --------------------------------------------------------------------------- electrons


def test_wavelength_and_sigma_match_abtem() -> None:
    for energy in (60e3, 200e3, 300e3):
        assert optics.wavelength(energy) == pytest.approx(
            energy2wavelength(energy) * 1e-10, rel=1e-7
        )
        # abTEM's sigma is in 1/(eV Å) = rad/(V Å); emauto's is abTEM's, exactly
        assert optics.interaction_parameter(energy) == energy2sigma(energy) * 1e10
    assert optics.wavelength(200e3) == pytest.approx(2.5079e-12, rel=1e-4)  # textbook value
    assert optics.interaction_parameter(200e3) == pytest.approx(7.29e-4 * 1e10, rel=1e-3)
    with pytest.raises(ValueError):
        optics.wavelength(0.0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            optics.interaction_parameter(bad)


def _kirkland_sigma_scipy(energy_eV: float) -> float:
    """Kirkland's sigma = 2 pi m e lambda / h^2 with scipy's (CODATA 2022) constants."""
    from scipy import constants

    mass = constants.m_e * (1 + energy_eV * constants.e / (constants.m_e * constants.c**2))
    return 2 * math.pi * mass * constants.e * optics.wavelength(energy_eV) / constants.h**2


def test_sigma_differs_from_kirkland_with_scipy_constants_by_under_1e_8() -> None:
    """The measurement quoted in `optics.interaction_parameter`'s docstring.

    Kirkland's formula with scipy's constants and abTEM's (ase CODATA 2014) differ only in
    the constants: 4.3e-9 relative at 20 keV rising to 7.9e-9 at 1.5 MeV.
    """
    energies = np.geomspace(20e3, 1.5e6, 201)
    ours = np.array([optics.interaction_parameter(e) for e in energies])
    scipy_sigma = np.array([_kirkland_sigma_scipy(e) for e in energies])
    relative = (ours - scipy_sigma) / ours
    assert np.all(relative > 0)  # scipy's constants give the smaller sigma
    assert relative.min() == pytest.approx(4.28e-9, rel=0.02)
    assert relative.max() == pytest.approx(7.92e-9, rel=0.02)
    assert relative[0] == relative.min() and relative[-1] == relative.max()


# --------------------------------------------------------------------------- chi


def test_chi_basis_is_the_documented_formula() -> None:
    rng = np.random.default_rng(2)
    ax, ay = rng.uniform(-0.05, 0.05, size=(2, 40))
    alpha, phi = np.hypot(ax, ay), np.arctan2(ay, ax)
    basis = optics.chi_basis(ax, ay)
    assert basis.shape == (25, 40)
    for row, name in zip(basis, optics.ABERRATION_NAMES, strict=True):
        n, m = int(name[1]), int(name[2])
        trig = np.sin if name.endswith("b") else np.cos
        np.testing.assert_allclose(row, alpha ** (n + 1) / (n + 1) * trig(m * phi), rtol=1e-12)


def test_chi_equals_tensordot_of_basis_and_broadcasts() -> None:
    ab = random_aberrations(np.random.default_rng(2))
    ax = np.linspace(-0.03, 0.03, 7)[None, :]
    ay = np.linspace(-0.02, 0.02, 5)[:, None]
    basis = optics.chi_basis(ax, ay)
    assert basis.shape == (25, 5, 7)
    expected = 2 * math.pi / LAMBDA * np.tensordot(ab.as_array(), basis, axes=1)
    np.testing.assert_allclose(optics.chi(ax, ay, ab, LAMBDA), expected, rtol=1e-12)
    assert optics.chi(0.01, 0.0, optics.Aberrations(C10=1e-9), LAMBDA) == pytest.approx(
        math.pi * 1e-9 * 0.01**2 / LAMBDA
    )
    assert optics.chi(ax, ay, optics.Aberrations(), LAMBDA).shape == (5, 7)
    with pytest.raises(ValueError, match="unknown aberration 'C11'"):
        optics.chi_basis(ax, ay, ["C11"])


def test_chi_gradient_matches_finite_differences() -> None:
    ab = random_aberrations(np.random.default_rng(4))
    ax, ay = np.random.default_rng(5).uniform(-0.03, 0.03, size=(2, 30))
    gx, gy = optics.chi_gradient(ax, ay, ab, LAMBDA)
    h = 1e-7
    fx = (optics.chi(ax + h, ay, ab, LAMBDA) - optics.chi(ax - h, ay, ab, LAMBDA)) / (2 * h)
    fy = (optics.chi(ax, ay + h, ab, LAMBDA) - optics.chi(ax, ay - h, ab, LAMBDA)) / (2 * h)
    scale = np.max(np.abs(fx))
    np.testing.assert_allclose(gx, fx, atol=1e-6 * scale)
    np.testing.assert_allclose(gy, fy, atol=1e-6 * scale)


# --------------------------------------------------------------------------- abTEM


def test_chi_matches_abtem_transfer_function_on_its_grid() -> None:
    """The decisive convention test: emauto's chi vs abtem.transfer.Aberrations.

    Uses abTEM's public ``to_diffraction_patterns()`` (an fftshifted copy of the kernel that
    ``apply`` multiplies waves with) on a rectangular grid, so a swapped x/y would not even
    have the right shape. Sampling 0.25 Å keeps abTEM's extent/sampling round trip exact
    (0.2 Å turns 48 points into 49 there).
    """
    gpts, sampling_A = (64, 48), 0.25  # abTEM's (nx, ny)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ab = random_aberrations(rng)
        with abtem.config.set({"precision": "float64"}):
            transfer = abtem.transfer.Aberrations(
                aberration_coefficients=optics.to_abtem_polar(ab),
                energy=ENERGY,
                gpts=gpts,
                sampling=sampling_A,
            )
            patterns = transfer.to_diffraction_patterns()
            kernel = np.fft.ifftshift(np.asarray(patterns.array), axes=(-2, -1))
        assert kernel.shape == gpts
        kx = np.fft.fftfreq(gpts[0], d=sampling_A * 1e-10)[:, None]  # axis 0 is x
        ky = np.fft.fftfreq(gpts[1], d=sampling_A * 1e-10)[None, :]
        alpha_x, alpha_y = np.broadcast_arrays(kx * LAMBDA, ky * LAMBDA)
        ours = optics.chi(alpha_x, alpha_y, ab, LAMBDA)
        assert np.max(np.abs(ours)) > 50  # phases well beyond 2 pi
        residual = np.angle(kernel * np.exp(1j * ours))  # abTEM is exp(-i chi)
        assert np.all(np.abs(residual) <= 1e-5 * np.abs(ours) + 1e-6)
        np.testing.assert_allclose(np.abs(kernel), 1.0, atol=1e-12)


def test_chi_matches_abtem_formula_at_scattered_angles() -> None:
    """The same, through abTEM's (private) ``_evaluate_from_angular_grid(alpha, phi)``."""
    rng = np.random.default_rng(10)
    ax, ay = rng.uniform(-0.06, 0.06, size=(2, 200))
    for _ in range(3):
        ab = random_aberrations(rng)
        with abtem.config.set({"precision": "float64"}):
            transfer = abtem.transfer.Aberrations(
                aberration_coefficients=optics.to_abtem_polar(ab), energy=ENERGY
            )
            kernel = transfer._evaluate_from_angular_grid(np.hypot(ax, ay), np.arctan2(ay, ax))
        ours = optics.chi(ax, ay, ab, LAMBDA)
        residual = np.angle(kernel * np.exp(1j * ours))
        assert np.all(np.abs(residual) <= 1e-5 * np.abs(ours) + 1e-6)


def test_abtem_polar_round_trip_and_angles() -> None:
    ab = random_aberrations(np.random.default_rng(1))
    polar = optics.to_abtem_polar(ab)
    assert len(polar) == 2 * 11 + 3  # (C, phi) for each of 11 pairs, C for 3 round ones
    back = optics.from_abtem_polar(polar)
    np.testing.assert_allclose(back.as_array(), ab.as_array(), rtol=1e-12, atol=1e-25)
    assert optics.to_abtem_polar(optics.Aberrations(C10=1e-9))["C10"] == pytest.approx(10.0)
    one = optics.to_abtem_polar(optics.Aberrations(C12b=2e-9))
    assert (one["C12"], one["phi12"]) == (pytest.approx(20.0), pytest.approx(math.pi / 4))
    one = optics.to_abtem_polar(optics.Aberrations(C23a=-1e-9))
    assert math.cos(3 * one["phi23"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="defocus"):
        optics.from_abtem_polar({"defocus": 50.0})


def test_defocus_sign_matches_abtem() -> None:
    """abTEM's defocus is -C10: positive defocus is underfocus, emauto C10 < 0."""
    transfer = abtem.transfer.Aberrations(defocus=50.0, energy=ENERGY)
    assert transfer.C10 == -50.0
    assert set(transfer.aberration_coefficients) == set(optics.to_abtem_polar(optics.Aberrations()))
    c10 = optics.from_abtem_polar(transfer.aberration_coefficients).C10  # type: ignore[arg-type]
    assert c10 == pytest.approx(-5e-9)


def test_probe_intensity_matches_abtem_probe() -> None:
    """Probe intensity vs abtem.Probe(soft=False) on a rectangular grid, no re-centring."""
    ab = optics.Aberrations(C10=-5e-9, C12a=2e-9, C12b=-1e-9, C21b=50e-9, C23a=30e-9, C30=2e-6)
    ny, nx, sampling = 96, 128, 0.1e-10
    centre_A = (nx * sampling * 1e10 / 2, ny * sampling * 1e10 / 2)  # abTEM positions are (x, y)
    with abtem.config.set({"precision": "float64"}):
        probe = abtem.Probe(
            energy=ENERGY,
            semiangle_cutoff=30,
            soft=False,  # abTEM's default soft edge differs from emauto's hard aperture
            gpts=(nx, ny),
            sampling=sampling * 1e10,
            aberrations=optics.to_abtem_polar(ab),
        )
        theirs = np.asarray(probe.build(scan=[centre_A], lazy=False).intensity().array)
    assert theirs.shape == (nx, ny)
    theirs = theirs.T / theirs.sum()  # [x, y] -> [y, x]
    ours = optics.probe_intensity(ab, LAMBDA, 0.03, (ny, nx), sampling)
    assert ours.shape == (ny, nx)
    assert ours.sum() == pytest.approx(1.0)
    # float64 on both sides: agreement to rounding; float32 abTEM would give ~1e-6
    np.testing.assert_allclose(ours, theirs, atol=1e-6 * ours.max())
    swapped = optics.probe_intensity(
        ab.replace(C21a=50e-9, C21b=0.0), LAMBDA, 0.03, (ny, nx), 1e-11
    )
    assert np.abs(swapped - theirs).sum() > 0.1  # the comparison does see the axes


def test_scherzer_defocus_matches_abtem() -> None:
    for c3 in (1.2e-3, -40e-6):
        expected = -abtem.transfer.scherzer_defocus(c3 * 1e10, ENERGY) * 1e-10
        assert optics.scherzer_defocus(c3, LAMBDA) == pytest.approx(expected, rel=1e-6)
    assert optics.scherzer_defocus(1.2e-3, LAMBDA) < 0
    assert optics.scherzer_defocus(0.0, LAMBDA) == 0.0


# --------------------------------------------------------------------------- Nion


def test_nion_convention_matches_usim_polynomials() -> None:
    """Re-implements nionswift-usim's AberrationsController.apply ``get_intermediate``.

    Source: github.com/nion-software/nionswift-usim,
    nionswift_plugin/usim/RonchigramCameraSimulator.py (class AberrationsController): the
    intermediates multiplying each coefficient, with ``i0a = theta_x`` (columns) and
    ``i0b = theta_y`` (rows) from ``numpy.meshgrid``; usim drops the 2 pi / lambda factor.
    """
    tx, ty = np.meshgrid(np.linspace(-0.03, 0.03, 9), np.linspace(-0.02, 0.025, 7))
    r2, d2 = tx**2 + ty**2, tx**2 - ty**2  # usim's get_iradius, get_idiff_sq
    c10, c12b = r2 / 2, tx * ty
    usim = {
        "C10": c10,
        "C12.x": d2 / 2,
        "C12.y": c12b,
        "C21.x": tx * r2 / 3,
        "C21.y": ty * r2 / 3,
        "C23.x": tx * (tx**2 - 3 * ty**2) / 3,
        "C23.y": ty * (3 * tx**2 - ty**2) / 3,
        "C30": c10**2,
        "C32.x": c10 * d2 / 2,
        "C32.y": c10 * c12b,
        "C34.x": (tx**4 - 6 * tx**2 * ty**2 + ty**4) / 4,
        "C34.y": tx**3 * ty - tx * ty**3,
        "C41.x": 4 * tx * c10**2 / 5,
        "C41.y": 4 * ty * c10**2 / 5,
        "C43.x": r2 * (tx * d2 - 2 * tx * ty**2) / 5,
        "C43.y": r2 * (ty * d2 + 2 * ty * tx**2) / 5,
        "C45.x": (tx * d2**2 - 4 * tx * d2 * ty**2 - 4 * tx**3 * ty**2) / 5,
        "C45.y": (ty * d2**2 + 4 * ty * d2 * tx**2 - 4 * tx**2 * ty**3) / 5,
        "C50": 8 * c10**3 / 6,
        "C52.x": r2**2 * d2 / 6,
        "C52.y": r2**2 * c12b / 3,
        "C54.x": r2 * (d2**2 - 4 * c12b**2) / 6,
        "C54.y": 2 * r2 * d2 * c12b / 3,
        "C56.x": d2**3 / 6 - 2 * tx**2 * ty**2 * d2,
        "C56.y": c12b * d2**2 - (4 * tx**3 * ty**3) / 3,
    }
    assert sorted(usim) == sorted(optics.to_nion(optics.Aberrations()))
    for nion_name, polynomial in usim.items():
        ab = optics.from_nion({nion_name: 1.0})
        assert optics.to_nion(ab)[nion_name] == 1.0
        assert sum(ab.as_array() != 0) == 1
        (basis,) = optics.chi_basis(tx, ty, [name for name, v in ab.to_dict().items() if v])
        np.testing.assert_allclose(basis, polynomial, rtol=1e-12, atol=1e-20, err_msg=nion_name)


def test_nion_round_trip_and_errors() -> None:
    ab = random_aberrations(np.random.default_rng(3))
    nion = optics.to_nion(ab)
    assert (nion["C12.x"], nion["C12.y"], nion["C30"]) == (ab.C12a, ab.C12b, ab.C30)
    assert optics.from_nion(nion) == ab
    with pytest.raises(ValueError, match=r"C12\.z"):
        optics.from_nion({"C12.z": 1.0})


# --------------------------------------------------------------------------- pi/4 angle


def test_pi4_angle_analytic() -> None:
    c3 = 1e-3
    expected = (LAMBDA / (2 * c3)) ** 0.25
    assert optics.pi4_angle(optics.Aberrations(C30=c3), LAMBDA) == pytest.approx(expected, rel=1e-6)
    assert optics.pi4_angle(optics.Aberrations(C30=-c3), LAMBDA) == pytest.approx(
        expected, rel=1e-6
    )
    c1 = 50e-9
    expected = math.sqrt(LAMBDA / (4 * c1))
    for ab in (optics.Aberrations(C10=-c1), optics.Aberrations(C12a=c1)):
        # |C12| alpha^2 / 2 |cos 2 phi| peaks at the same pi/4 radius as C10
        assert optics.pi4_angle(ab, LAMBDA) == pytest.approx(expected, rel=1e-5)
    assert optics.pi4_angle(optics.Aberrations(), LAMBDA, max_angle=0.1) == 0.1


def test_pi4_angle_bounds_chi_on_the_disc() -> None:
    ab = random_aberrations(np.random.default_rng(8), factor=0.05)
    angle = optics.pi4_angle(ab, LAMBDA)
    x, y = np.meshgrid(np.linspace(-1, 1, 301), np.linspace(-1, 1, 301))
    inside = x**2 + y**2 <= 1
    assert np.max(np.abs(optics.chi(angle * x[inside], angle * y[inside], ab, LAMBDA))) <= (
        math.pi / 4 * (1 + 1e-3)
    )
    ring = np.linspace(0, 2 * math.pi, 3600)
    beyond = 1.001 * angle
    assert np.max(np.abs(optics.chi(beyond * np.cos(ring), beyond * np.sin(ring), ab, LAMBDA))) > (
        math.pi / 4
    )


# --------------------------------------------------------------------------- Strehl


def test_strehl_flat_phase_is_exactly_one() -> None:
    assert optics.strehl_ratio(optics.Aberrations(), LAMBDA, 0.03) == 1.0
    zeros = np.zeros((3, len(optics.ABERRATION_NAMES)))
    ratios = optics.strehl_ratio_batch(zeros, optics.ABERRATION_NAMES, LAMBDA, 0.03)
    np.testing.assert_array_equal(ratios, 1.0)


def test_strehl_pure_defocus_analytic() -> None:
    """chi = a rho^2 on the unit disc, a = pi C1 alpha^2 / lambda: S = sinc^2(a / 2)."""
    aperture = 0.03
    for c1 in (1e-9, -3e-9, 6e-9, 20e-9):
        a = math.pi * c1 * aperture**2 / LAMBDA
        expected = (math.sin(a / 2) / (a / 2)) ** 2
        ratio = optics.strehl_ratio(optics.Aberrations(C10=c1), LAMBDA, aperture)
        assert ratio == pytest.approx(expected, abs=1e-10)


def test_strehl_marechal_for_small_aberrations() -> None:
    ab = optics.Aberrations(C12a=0.6e-9, C21b=9e-9, C23a=9e-9)
    x, y = np.meshgrid(np.linspace(-1, 1, 401), np.linspace(-1, 1, 401))
    inside = x**2 + y**2 <= 1
    variance = float(np.var(optics.chi(0.03 * x[inside], 0.03 * y[inside], ab, LAMBDA)))
    assert 0.05 < variance < 0.3
    assert optics.strehl_ratio(ab, LAMBDA, 0.03) == pytest.approx(math.exp(-variance), abs=0.01)


def test_strehl_matches_brute_force_disc_mean() -> None:
    """The Gauss-Legendre quadrature vs a plain 1201^2 grid mean, all orders present."""
    x, y = np.meshgrid(np.linspace(-1, 1, 1201), np.linspace(-1, 1, 1201))
    inside = x**2 + y**2 <= 1
    rng = np.random.default_rng(6)
    for _ in range(3):
        ab = random_aberrations(rng, factor=0.15)
        phase = optics.chi(0.03 * x[inside], 0.03 * y[inside], ab, LAMBDA)
        brute = abs(np.mean(np.exp(-1j * phase))) ** 2
        assert optics.strehl_ratio(ab, LAMBDA, 0.03) == pytest.approx(brute, abs=2e-4)


def test_strehl_batch_matches_single() -> None:
    rng = np.random.default_rng(9)
    sets = [random_aberrations(rng, factor=0.1) for _ in range(4)]
    names = ("C10", "C12a", "C12b", "C30")
    coefficients = np.array([ab.as_array(names) for ab in sets])
    batch = optics.strehl_ratio_batch(coefficients, names, LAMBDA, 0.025)
    assert batch.shape == (4,)
    for ratio, coefficient_row in zip(batch, coefficients, strict=True):
        ab = optics.Aberrations.from_array(coefficient_row, names)
        assert ratio == pytest.approx(optics.strehl_ratio(ab, LAMBDA, 0.025), abs=1e-12)
    with pytest.raises(ValueError, match="coefficients must be"):
        optics.strehl_ratio_batch(coefficients[:, :3], names, LAMBDA, 0.025)


# --------------------------------------------------------------------------- probe


def test_probe_intensity_aberration_free_is_centred_and_symmetric() -> None:
    intensity = optics.probe_intensity(optics.Aberrations(), LAMBDA, 0.03, (64, 80), 0.1e-10)
    assert intensity.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(intensity), intensity.shape) == (32, 40)
    centred = intensity[1:, 1:]  # drop the unpaired Nyquist row and column
    np.testing.assert_allclose(centred, centred[::-1, ::-1], atol=1e-12)
    gpts: Any = (np.int64(64), 80)  # numpy scalars work too
    sampling: Any = np.float32(0.1e-10)
    as_numpy = optics.probe_intensity(optics.Aberrations(), LAMBDA, 0.03, gpts, sampling)
    np.testing.assert_allclose(as_numpy, intensity, rtol=1e-5)
    with pytest.raises(ValueError, match="too coarse"):
        optics.probe_intensity(optics.Aberrations(), LAMBDA, 0.03, 64, 0.5e-10)


def test_probe_fwhm_airy() -> None:
    """Aberration-free FWHM = 0.5145 lambda / alpha: (2 J1(v) / v)^2 = 1/2 at v = 1.616."""
    sampling = LAMBDA / 0.03 / 20
    intensity = optics.probe_intensity(optics.Aberrations(), LAMBDA, 0.03, 512, sampling)
    profile = intensity[256, 256:] / intensity[256, 256]
    edge = int(np.argmax(profile < 0.5))
    x = edge - 1 + (profile[edge - 1] - 0.5) / (profile[edge - 1] - profile[edge])
    assert 2 * x * sampling == pytest.approx(0.5145 * LAMBDA / 0.03, rel=3e-3)


def test_probe_size_airy() -> None:
    """d50 of the Airy probe: 1 - J0(v)^2 - J1(v)^2 = 1/2 at v = 1.680, d50 = 0.5348 lambda/alpha.

    (0.5145 lambda / alpha, v = 1.616, is the Airy FWHM, not the 50 % encircled current.)
    """
    d50 = optics.probe_size(optics.Aberrations(), LAMBDA, 0.03)
    assert d50 == pytest.approx(0.5348 * LAMBDA / 0.03, rel=1e-3)
    for fraction in (0.2, 0.5, 0.9):
        size = optics.probe_size(optics.Aberrations(), LAMBDA, 0.03, fraction)
        assert size == pytest.approx(airy_diameter(fraction, 0.03), rel=2e-3)
    with pytest.raises(ValueError, match="fraction"):
        optics.probe_size(optics.Aberrations(), LAMBDA, 0.03, 1.0)


def test_probe_size_geometric_limit_of_defocus() -> None:
    """Large defocus: a uniformly lit disc of radius |C1| alpha, d50 = 2 |C1| alpha / sqrt 2."""
    c1, aperture = 120e-9, 0.03
    geometric = 2 * c1 * aperture / math.sqrt(2)
    wave = optics.probe_size(optics.Aberrations(C10=c1), LAMBDA, aperture)
    assert wave == pytest.approx(geometric, rel=0.01)
    fallback = optics.probe_size(optics.Aberrations(C10=c1), LAMBDA, aperture, max_gpts=128)
    assert fallback == pytest.approx(wave, rel=0.03)


def test_probe_size_is_centred_on_the_centroid() -> None:
    """Coma moves the probe's centroid; the size must not count that shift."""
    coma = optics.Aberrations(C21a=200e-9)
    d50 = optics.probe_size(coma, LAMBDA, 0.03)
    gx, _ = optics.chi_gradient(0.03, 0.0, coma, LAMBDA)
    assert d50 < LAMBDA / (2 * math.pi) * float(gx)  # smaller than the rim ray's shift
    rotated = optics.probe_size(optics.Aberrations(C21b=200e-9), LAMBDA, 0.03)
    assert rotated == pytest.approx(d50, rel=1e-3)
    assert d50 > optics.probe_size(optics.Aberrations(), LAMBDA, 0.03)


def test_phase_variance_matches_marechal_for_small_defocus() -> None:
    """Defocus C1: chi = pi C1 theta^2 / lambda, variance over the disc = (pi C1 a^2/lambda)^2/12;
    Strehl ~ exp(-variance) when small."""
    wavelength, aperture = optics.wavelength(200e3), 0.03
    c1 = 1e-9
    variance = optics.phase_variance_batch(np.array([[c1]]), ["C10"], wavelength, aperture)[0]
    expected = (math.pi * c1 * aperture**2 / wavelength) ** 2 / 12
    assert variance == pytest.approx(expected, rel=1e-9)
    strehl = optics.strehl_ratio_batch(np.array([[c1]]), ["C10"], wavelength, aperture)[0]
    assert strehl == pytest.approx(math.exp(-variance), abs=0.01)
