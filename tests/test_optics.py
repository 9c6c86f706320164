"""Optics against analytic values, abTEM's transfer functions and Nion's conventions."""

from __future__ import annotations

import math

import abtem
import numpy as np
import pytest
from abtem.core.energy import energy2sigma, energy2wavelength
from scipy.optimize import brentq
from scipy.special import j0, j1

from emauto import optics

ENERGY = 200e3
LAMBDA = optics.wavelength(ENERGY)


def random_aberrations(rng: np.random.Generator) -> optics.Aberrations:
    scale = {1: 20e-9, 2: 300e-9, 3: 5e-6, 4: 100e-6, 5: 2e-3}
    return optics.Aberrations(
        **{name: rng.uniform(-1, 1) * scale[int(name[1])] for name in optics.ABERRATION_NAMES}
    )


def test_wavelength_and_sigma_match_abtem() -> None:
    assert pytest.approx(energy2wavelength(ENERGY) * 1e-10, rel=1e-6) == LAMBDA
    assert optics.interaction_parameter(ENERGY) == pytest.approx(
        energy2sigma(ENERGY) * 1e10, rel=1e-6
    )


def test_chi_matches_abtem_transfer_function() -> None:
    """emauto's chi vs abtem.transfer.Aberrations on abTEM's own wave grid ([x, y] axes)."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        ab = random_aberrations(rng)
        aberrations = abtem.transfer.Aberrations(
            aberration_coefficients=optics.to_abtem_polar(ab), energy=ENERGY
        )
        waves = abtem.PlaneWave(energy=ENERGY, gpts=(64, 48), sampling=0.2)
        # abTEM 1.0 has no public "evaluate on this grid"; _evaluate_kernel is what apply() uses
        transfer = np.asarray(aberrations._evaluate_kernel(waves))  # abTEM's [x, y] grid
        kx = np.fft.fftfreq(64, d=0.2e-10)[:, None]  # abTEM axis 0 is x
        ky = np.fft.fftfreq(48, d=0.2e-10)[None, :]
        alpha_x, alpha_y = np.broadcast_arrays(kx * LAMBDA, ky * LAMBDA)
        expected = np.exp(-1j * optics.chi(alpha_x, alpha_y, ab, LAMBDA))
        inside = np.hypot(alpha_x, alpha_y) < 0.04
        np.testing.assert_allclose(transfer[inside], expected[inside], atol=2e-3)


def test_abtem_polar_round_trip() -> None:
    rng = np.random.default_rng(1)
    ab = random_aberrations(rng)
    back = optics.from_abtem_polar(optics.to_abtem_polar(ab))
    np.testing.assert_allclose(back.as_array(), ab.as_array(), rtol=1e-12, atol=1e-25)
    assert optics.to_abtem_polar(optics.Aberrations(C10=1e-9))["C10"] == pytest.approx(10.0)


def test_defocus_sign_matches_abtem() -> None:
    """abTEM's defocus is -C10."""
    transfer = abtem.transfer.Aberrations(defocus=50.0, energy=ENERGY)
    assert transfer.C10 == -50.0
    assert pytest.approx(-5e-9) == optics.from_abtem_polar({"C10": transfer.C10}).C10


def test_nion_convention_matches_usim_polynomials() -> None:
    """nionswift-usim's AberrationsController (RonchigramCameraSimulator.py) polynomials."""
    tx, ty = np.meshgrid(np.linspace(-0.03, 0.03, 9), np.linspace(-0.03, 0.03, 9))
    r2 = tx**2 + ty**2
    usim = {
        "C10": r2 / 2,
        "C12.x": (tx**2 - ty**2) / 2,
        "C12.y": tx * ty,
        "C21.x": tx * r2 / 3,
        "C21.y": ty * r2 / 3,
        "C23.x": tx * (tx**2 - 3 * ty**2) / 3,
        "C23.y": ty * (3 * tx**2 - ty**2) / 3,
        "C30": (r2 / 2) ** 2,
        "C32.x": (r2 / 2) * (tx**2 - ty**2) / 2,
        "C32.y": (r2 / 2) * tx * ty,
        "C34.x": (tx**4 - 6 * tx**2 * ty**2 + ty**4) / 4,
        "C34.y": tx**3 * ty - tx * ty**3,
    }
    for nion_name, polynomial in usim.items():
        ab = optics.from_nion({nion_name: 1.0})
        assert optics.to_nion(ab)[nion_name] == 1.0
        ours = optics.chi(tx, ty, ab, LAMBDA) * LAMBDA / (2 * math.pi)
        np.testing.assert_allclose(ours, polynomial, atol=1e-18, err_msg=nion_name)


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown aberration"):
        optics.Aberrations.from_mapping({"C99": 1.0})
    with pytest.raises(ValueError, match="Nion"):
        optics.from_nion({"C12.z": 1.0})
    with pytest.raises(ValueError):
        optics.Aberrations(C10=math.nan)


def test_chi_basis_reproduces_chi() -> None:
    ab = random_aberrations(np.random.default_rng(2))
    ax, ay = np.random.default_rng(3).uniform(-0.03, 0.03, size=(2, 50))
    basis = optics.chi_basis(ax, ay)
    np.testing.assert_allclose(
        2 * math.pi / LAMBDA * ab.as_array() @ basis, optics.chi(ax, ay, ab, LAMBDA), rtol=1e-12
    )


def test_scherzer_defocus_matches_abtem() -> None:
    c3 = 1.2e-3
    expected = -abtem.transfer.scherzer_defocus(c3 * 1e10, ENERGY) * 1e-10
    assert optics.scherzer_defocus(c3, LAMBDA) == pytest.approx(expected, rel=1e-9)
    assert optics.scherzer_defocus(c3, LAMBDA) < 0


def test_pi4_angle_analytic() -> None:
    c3 = 1e-3
    assert optics.pi4_angle(optics.Aberrations(C30=c3), LAMBDA) == pytest.approx(
        (LAMBDA / (2 * c3)) ** 0.25, rel=5e-3
    )
    c1 = 50e-9
    assert optics.pi4_angle(optics.Aberrations(C10=c1), LAMBDA) == pytest.approx(
        math.sqrt(LAMBDA / (4 * c1)), rel=5e-3
    )
    assert optics.pi4_angle(optics.Aberrations(), LAMBDA, max_angle=0.1) == 0.1


def test_strehl_analytic() -> None:
    aperture = 0.03
    assert optics.strehl_ratio(optics.Aberrations(), LAMBDA, aperture) == 1.0
    for c1 in (1e-9, 3e-9, 6e-9):
        # chi = a rho^2 on the unit disc, a = pi C1 alpha^2 / lambda: S = sinc^2(a/2)
        a = math.pi * c1 * aperture**2 / LAMBDA
        expected = (math.sin(a / 2) / (a / 2)) ** 2
        assert optics.strehl_ratio(
            optics.Aberrations(C10=c1), LAMBDA, aperture, n=256
        ) == pytest.approx(expected, abs=2e-3)


def test_strehl_marechal_for_small_aberrations() -> None:
    ab = optics.Aberrations(C12a=0.2e-9, C21b=3e-9, C23a=3e-9)
    x, y = np.meshgrid(np.linspace(-1, 1, 401), np.linspace(-1, 1, 401))
    inside = x**2 + y**2 <= 1
    phase = optics.chi(0.03 * x[inside], 0.03 * y[inside], ab, LAMBDA)
    marechal = math.exp(-float(np.var(phase)))
    assert optics.strehl_ratio(ab, LAMBDA, 0.03) == pytest.approx(marechal, abs=0.01)


def test_probe_size_airy() -> None:
    v50 = brentq(lambda v: 1 - j0(v) ** 2 - j1(v) ** 2 - 0.5, 0.5, 3.0)
    expected = 2 * v50 / (2 * math.pi) * LAMBDA / 0.03
    assert optics.probe_size(optics.Aberrations(), LAMBDA, 0.03) == pytest.approx(
        expected, rel=0.01
    )


def test_probe_intensity_matches_abtem_probe() -> None:
    ab = optics.Aberrations(C10=-5e-9, C12a=2e-9, C21b=50e-9)
    gpts, sampling = 128, 0.1e-10
    probe = abtem.Probe(
        energy=ENERGY, semiangle_cutoff=30, soft=False, gpts=gpts, sampling=sampling * 1e10,
        aberrations=optics.to_abtem_polar(ab),
    )  # fmt: skip
    theirs = np.asarray(probe.build().intensity().compute().array).T  # [x, y] -> [y, x]
    theirs = theirs / theirs.sum()
    ours = optics.probe_intensity(ab, LAMBDA, 0.03, gpts, sampling)
    # abTEM centres its probe at the grid centre too; compare centred on the peaks' centroid
    shift = np.unravel_index(np.argmax(theirs), theirs.shape)
    ours_shift = np.unravel_index(np.argmax(ours), ours.shape)
    ours = np.roll(ours, np.subtract(shift, ours_shift), axis=(0, 1))
    assert np.abs(ours - theirs).sum() < 0.02
