"""Specimen recipes, their atoms, abTEM potentials and the on-disk cache."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import abtem
import numpy as np
import pytest
from abtem.core.energy import energy2sigma
from scipy import constants
from scipy.spatial import cKDTree

from emauto.drivers.sim import specimens
from emauto.drivers.sim.specimens import (
    AmorphousCarbonRecipe,
    AuOnCarbonRecipe,
    CarbonFilm,
    Specimen,
    SpecimenError,
    SrTiO3Recipe,
    build_atoms,
    builtin_recipes,
    load_recipe,
    load_specimen,
    parse_recipe,
    recipe_dir,
)

A_STO = 3.905e-10
TINY_CARBON = AmorphousCarbonRecipe(extent_m=(1e-9, 1e-9), thickness_m=1e-9, seed=1)
SMALL_STO = SrTiO3Recipe(extent_m=(3 * A_STO, 2 * A_STO), thickness_m=2 * A_STO, seed=2)


def _tiny(cache: Path, **kwargs: Any) -> Specimen:
    return load_specimen(TINY_CARBON, sampling_m=0.1e-10, cache_dir=cache, **kwargs)


# --------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("name", ["amorphous_carbon", "srtio3", "au_on_carbon"])
def test_builtin_recipes_are_the_defaults(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.kind == name
    assert recipe == type(recipe)()  # the YAML files document the defaults
    assert load_recipe(recipe_dir() / f"{name}.yaml") == recipe
    assert name in builtin_recipes()


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("recipe:\n  kind: amorphous_carbon\n  colour: red\n", "recipe.colour", "Extra inputs"),
        (
            "recipe:\n  kind: amorphous_carbon\n  thickness_m: -1\n",
            "recipe.thickness_m",
            "greater than 0",
        ),
        ("recipe:\n  kind: srtio3\n  extent_m: abc\n", "recipe.extent_m", "valid tuple"),
        ("recipe:\n  kind: srtio3\n  seed: 1.5\n", "recipe.seed", "valid integer"),
        (
            "recipe:\n  kind: au_on_carbon\n  support:\n    thickness_m: 0\n",
            "recipe.support.thickness_m",
            "greater than 0",
        ),
        ("recipe:\n  kind: diamond\n", "recipe.kind", "amorphous_carbon"),
        ("recipe:\n  extent_m: [1.0e-9, 1.0e-9]\n", "recipe.kind", "kind"),
        ("colour: red\nrecipe:\n  kind: srtio3\n", "colour", "Extra inputs"),
        ("- 1\n- 2\n", "", "expected a mapping with a 'recipe:' key"),
        ("recipe: [\n", "", "not valid YAML"),
    ],
)
def test_bad_recipe_files_name_the_file_and_field(
    tmp_path: Path, text: str, field: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecimenError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and field in message
    assert expected in message, message
    assert isinstance(info.value, ValueError)


def test_unknown_recipe_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecimenError, match=r"unknown specimen 'unobtainium'.*srtio3"):
        load_recipe("unobtainium")
    with pytest.raises(SpecimenError, match="no such specimen recipe file"):
        load_recipe(tmp_path / "missing.yaml")


def test_infeasible_film_is_rejected() -> None:
    with pytest.raises(SpecimenError, match=r"min_distance_m.*packing"):
        parse_recipe({"kind": "amorphous_carbon", "min_distance_m": 2e-10, "density_g_cm3": 3})
    with pytest.raises(SpecimenError, match="does not fit"):
        parse_recipe(
            {"kind": "au_on_carbon", "support": {"extent_m": [3e-9, 3e-9], "thickness_m": 1e-9}}
        )


# --------------------------------------------------------------------------- atoms


def test_amorphous_carbon_density_and_min_distance() -> None:
    recipe = AmorphousCarbonRecipe(extent_m=(2e-9, 2e-9), thickness_m=2e-9, seed=3)
    atoms = build_atoms(recipe)
    assert set(atoms.numbers) == {6}
    volume_cm3 = 2e-7 * 2e-7 * 2e-7
    density = len(atoms) * 12.011 * 1.66054e-24 / volume_cm3
    assert density == pytest.approx(2.0, rel=2e-3)
    lx, ly, lz = atoms.cell.lengths()
    assert (lx, ly, lz) == pytest.approx((20.0, 20.0, 20.0))
    assert atoms.positions.min() >= 0 and np.all(atoms.positions < [lx, ly, lz])
    # periodic in x and y: pairs across the cell edges count too
    tree = cKDTree(atoms.positions, boxsize=[lx, ly, lz + 10])
    distances, _ = tree.query(atoms.positions, k=2)
    assert distances[:, 1].min() >= 1.3
    assert distances[:, 1].min() < 1.5  # dense enough that the limit matters


def test_srtio3_stoichiometry_and_vacancies() -> None:
    recipe = SrTiO3Recipe(
        extent_m=(4 * A_STO, 4 * A_STO),
        thickness_m=2 * A_STO,
        sr_vacancy_fraction=0.25,
        o_vacancy_fraction=0.05,
    )
    assert recipe.cells == (4, 4, 2)
    atoms = build_atoms(recipe)
    extras = atoms.info["extras"]
    symbols = atoms.get_chemical_symbols()
    assert symbols.count("Ti") == 32
    assert symbols.count("Sr") == 32 - 8
    assert symbols.count("O") == 96 - round(0.05 * 96)
    vacancies = extras["vacancy_positions_m"]
    assert vacancies.shape == (8 + 5, 3)
    assert sorted(extras["vacancy_numbers"].tolist()) == [8] * 5 + [38] * 8
    # each vacancy is a lattice site of its species, and no atom is left on it
    a = A_STO
    sr = extras["vacancy_numbers"] == 38
    np.testing.assert_allclose(np.round(vacancies[sr] / a) * a, vacancies[sr], atol=1e-15)
    occupied = cKDTree(atoms.positions * 1e-10)
    assert occupied.query(vacancies)[0].min() > 0.4 * a
    assert tuple(atoms.cell.lengths()) == pytest.approx((4 * a * 1e10, 4 * a * 1e10, 2 * a * 1e10))


def test_srtio3_potential_is_periodic(tmp_path: Path) -> None:
    recipe = SrTiO3Recipe(
        extent_m=(3 * A_STO, 3 * A_STO),
        thickness_m=2 * A_STO,
        sr_vacancy_fraction=0,
        o_vacancy_fraction=0,
    )
    specimen = load_specimen(recipe, sampling_m=A_STO / 20, cache_dir=tmp_path)
    assert specimen.gpts == (60, 60)
    potential = specimen.projected_potential[0]
    for axis in (0, 1):
        np.testing.assert_allclose(
            np.roll(potential, 20, axis=axis), potential, atol=1e-4 * potential.max()
        )


def test_au_particles_sit_on_the_support_without_overlap() -> None:
    recipe = AuOnCarbonRecipe(
        support=CarbonFilm(extent_m=(8e-9, 8e-9), thickness_m=1e-9),
        n_particles=4,
        diameter_range_m=(1.5e-9, 2.5e-9),
        zone_axis_110_fraction=0.5,
        seed=4,
    )
    atoms = build_atoms(recipe)
    extras = atoms.info["extras"]
    gold = atoms.positions[atoms.numbers == 79]
    carbon = atoms.positions[atoms.numbers == 6]
    assert len(carbon) == recipe.support.n_atoms
    assert len(gold) == extras["particle_atom_counts"].sum() > 4 * 50
    assert gold[:, 2].min() > carbon[:, 2].max() + 2.0
    assert atoms.cell.lengths()[2] > gold[:, 2].max()
    assert np.all(atoms.positions < atoms.cell.lengths()) and atoms.positions.min() >= 0
    centres, diameters = extras["particle_centres_m"], extras["particle_diameters_m"]
    assert centres.shape == (4, 3) and diameters.shape == (4,)
    assert np.all((diameters > 1.0e-9) & (diameters < 3.0e-9))
    lx, ly = recipe.support.extent_m
    for i in range(4):
        for j in range(i):
            d = centres[i, :2] - centres[j, :2]
            d -= np.round(d / [lx, ly]) * [lx, ly]
            assert np.hypot(*d) > (diameters[i] + diameters[j]) / 2 + recipe.min_gap_m
    # every Au atom belongs to its particle: within its radius of its centre (periodic)
    start = 0
    for centre, diameter, count in zip(
        centres, diameters, extras["particle_atom_counts"], strict=True
    ):
        d = gold[start : start + count] * 1e-10 - centre
        d[:, :2] -= np.round(d[:, :2] / [lx, ly]) * [lx, ly]
        assert np.linalg.norm(d, axis=1).max() <= diameter / 2 * (1 + 1e-9) + 1e-10
        start += count
    # two of four on a [110] zone axis: their rotation takes [110] onto z
    zone = extras["particle_zone_110"]
    assert zone.sum() == 2
    axis = extras["particle_rotations"][zone] @ (np.array([1.0, 1.0, 0.0]) / math.sqrt(2))
    np.testing.assert_allclose(np.abs(axis[:, 2]), 1.0, atol=1e-12)


def test_seed_determinism() -> None:
    a = build_atoms(TINY_CARBON)
    b = build_atoms(TINY_CARBON)
    c = build_atoms(TINY_CARBON.model_copy(update={"seed": 2}))
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.array_equal(a.positions, c.positions)


# --------------------------------------------------------------------------- potentials


def test_transmission_equals_abtems(tmp_path: Path) -> None:
    """Same atoms, same grid: our transmission is abTEM's, transposed to [y, x]."""
    specimen = load_specimen(SMALL_STO, sampling_m=0.2e-10, n_slabs=2, cache_dir=tmp_path)
    ny, nx = specimen.gpts
    assert nx != ny  # a non-square cell catches a missing transpose
    atoms = build_atoms(specimen.recipe)
    thickness = atoms.cell.lengths()[2]
    potential = abtem.Potential(
        atoms,
        gpts=(nx, ny),
        slice_thickness=(thickness / 2, thickness / 2),
        projection="infinite",
        parametrization="lobato",
    )
    built: Any = potential.build().compute()
    theirs = built.transmission_function(200e3).compute().array
    ours = specimen.transmission(200e3)
    assert ours.dtype == np.complex64 and ours.shape == (2, ny, nx)
    np.testing.assert_allclose(ours, np.swapaxes(theirs, -1, -2), atol=1e-5)
    phase = specimen.phase_shift(200e3)
    assert phase.dtype == np.float32
    np.testing.assert_allclose(np.exp(1j * phase), ours, atol=1e-6)
    # the phase is abTEM's sigma (float32) times the potential, bit for bit
    sigma = np.float32(energy2sigma(200e3) * 1e10)
    np.testing.assert_array_equal(phase, sigma * specimen.projected_potential)


def test_potential_is_indexed_y_x(tmp_path: Path) -> None:
    specimen = load_specimen(
        AmorphousCarbonRecipe(extent_m=(2e-9, 1e-9), thickness_m=1e-9),
        sampling_m=0.1e-10,
        cache_dir=tmp_path,
    )
    assert specimen.gpts == (100, 200)
    potential = specimen.projected_potential[0]
    rows = np.round(specimen.positions_m[:, 1] / specimen.sampling_m).astype(int) % 100
    cols = np.round(specimen.positions_m[:, 0] / specimen.sampling_m).astype(int) % 200
    at_atoms = potential[rows, cols].mean()
    assert at_atoms > 3 * potential.mean()


def test_projected_potential_units_are_volt_metres(tmp_path: Path) -> None:
    """The integral of the projected potential over the cell is sum_atoms h^2 f(0) / (2 pi m e).

    With the electron scattering factor of carbon f(0) = 2.51 Å (Kirkland), independent of
    abTEM's constants.
    """
    specimen = _tiny(tmp_path)
    integral = float(specimen.projected_potential.sum(dtype=np.float64)) * specimen.sampling_m**2
    per_f0 = constants.h**2 / (2 * math.pi * constants.m_e * constants.e)  # V m^2
    expected = len(specimen.numbers) * per_f0 * 2.51e-10  # V m^3
    assert integral == pytest.approx(expected, rel=0.01)


def test_sampling_is_exact_for_amorphous_and_square_for_crystals(tmp_path: Path) -> None:
    carbon = load_specimen(
        AmorphousCarbonRecipe(extent_m=(1e-9, 1.3e-9), thickness_m=1e-9),
        sampling_m=0.137e-10,
        cache_dir=tmp_path,
    )
    assert carbon.sampling_m == pytest.approx(0.137e-10, rel=1e-12)
    ny, nx = carbon.gpts
    assert carbon.extent_m == pytest.approx((nx * 0.137e-10, ny * 0.137e-10), rel=1e-12)
    assert isinstance(carbon.recipe, AmorphousCarbonRecipe)
    assert carbon.recipe.extent_m == carbon.extent_m
    crystal = load_specimen(SMALL_STO, sampling_m=0.137e-10, cache_dir=tmp_path)
    ny, nx = crystal.gpts
    assert crystal.extent_m == pytest.approx((3 * A_STO, 2 * A_STO), rel=1e-12)
    assert crystal.extent_m[0] / nx == pytest.approx(crystal.extent_m[1] / ny, rel=1e-12)
    assert crystal.sampling_m == pytest.approx(crystal.extent_m[0] / nx, rel=1e-12)
    assert abs(crystal.sampling_m / 0.137e-10 - 1) < 0.02


def test_slabs_sum_to_the_projection(tmp_path: Path) -> None:
    whole = _tiny(tmp_path)
    assert whole.n_slabs == 1 and whole.slab_thickness_m == pytest.approx(1e-9)
    sliced = _tiny(tmp_path, slab_thickness_m=3e-10)
    assert sliced.n_slabs == 4 and sliced.slab_thickness_m == pytest.approx(2.5e-10)
    three = _tiny(tmp_path, n_slabs=3)
    assert three.projected_potential.shape == (3, *whole.gpts)
    for stack in (sliced, three):
        np.testing.assert_allclose(
            stack.projected_potential.sum(axis=0),
            whole.projected_potential[0],
            atol=1e-5 * whole.projected_potential.max(),
        )
    with pytest.raises(SpecimenError, match="not both"):
        _tiny(tmp_path, n_slabs=2, slab_thickness_m=2e-10)


@pytest.mark.parametrize(
    "kwargs",
    [{"sampling_m": -1e-11}, {"sampling_m": float("nan")}, {"n_slabs": 0}, {"seed": -1}],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"sampling_m": 0.1e-10, "cache_dir": tmp_path, **kwargs}
    with pytest.raises(SpecimenError):
        load_specimen(TINY_CARBON, **arguments)


def test_specimen_arrays_are_read_only(tmp_path: Path) -> None:
    specimen = _tiny(tmp_path)
    with pytest.raises(ValueError, match="read-only"):
        specimen.projected_potential[0, 0, 0] = 1.0
    with pytest.raises(SpecimenError, match="energy"):
        specimen.transmission(-1.0)


# --------------------------------------------------------------------------- cache and seeds


def test_cache_hit_is_identical_and_skips_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_specimen(SMALL_STO, sampling_m=0.2e-10, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not build anything")

    monkeypatch.setattr(specimens, "build_atoms", no_build)
    monkeypatch.setattr(specimens, "_project", no_build)
    again = load_specimen(SMALL_STO, sampling_m=0.2e-10, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.projected_potential, again.projected_potential)
    np.testing.assert_array_equal(first.positions_m, again.positions_m)
    np.testing.assert_array_equal(first.numbers, again.numbers)
    assert first.extras.keys() == again.extras.keys()
    for name in first.extras:
        np.testing.assert_array_equal(first.extras[name], again.extras[name])
    assert (first.extent_m, first.thickness_m, first.sampling_m) == (
        again.extent_m,
        again.thickness_m,
        again.sampling_m,
    )
    assert again.recipe == first.recipe and again.name == first.name == "srtio3"


def test_cache_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAUTO_CACHE_DIR", str(tmp_path / "env-cache"))
    _tiny(None)  # type: ignore[arg-type]
    assert len(list((tmp_path / "env-cache").glob("*.npz"))) == 1


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rewrite(path: Path, **changes: Any) -> None:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    arrays = {name: value for name, value in arrays.items() if value is not None}
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda path: path.write_bytes(b"not a zip file"),
        _truncate,
        lambda path: _rewrite(path, numbers=None),
        lambda path: _rewrite(path, metadata=np.array("{not json")),
        lambda path: _rewrite(path, projected_potential=np.zeros((1, 5, 5), np.float32)),
        lambda path: _rewrite(path, positions_m=np.zeros((3, 3))),
    ],
    ids=["garbage", "truncated", "missing-key", "bad-metadata", "wrong-shape", "wrong-atoms"],
)
def test_corrupt_cache_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, corrupt: Any
) -> None:
    first = _tiny(tmp_path)
    (path,) = tmp_path.glob("*.npz")
    corrupt(path)
    rebuilt = _tiny(tmp_path)
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(first.projected_potential, rebuilt.projected_potential)
    np.testing.assert_array_equal(first.positions_m, rebuilt.positions_m)
    caplog.clear()
    _tiny(tmp_path)  # the rewritten file is good again
    assert "rebuilding" not in caplog.text


def test_mismatching_cache_file_is_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another specimen's (valid) file under this key's name is detected by its metadata."""
    first = _tiny(tmp_path / "a")
    other = _tiny(tmp_path / "b", seed=7)
    (ours,) = (tmp_path / "a").glob("*.npz")
    (theirs,) = (tmp_path / "b").glob("*.npz")
    ours.write_bytes(theirs.read_bytes())
    again = _tiny(tmp_path / "a")
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(again.positions_m, first.positions_m)
    assert not np.array_equal(again.positions_m, other.positions_m)


def test_unwritable_cache_still_builds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    specimen = _tiny(blocker / "cache")
    assert specimen.projected_potential.shape == (1, 100, 100)
    assert "could not write the specimen cache" in caplog.text


def test_seed_override(tmp_path: Path) -> None:
    one = _tiny(tmp_path, seed=11)
    again = _tiny(tmp_path / "fresh", seed=11)
    other = _tiny(tmp_path, seed=12)
    assert one.recipe.seed == 11 and other.recipe.seed == 12
    np.testing.assert_array_equal(one.positions_m, again.positions_m)
    np.testing.assert_array_equal(one.projected_potential, again.projected_potential)
    assert not np.array_equal(one.positions_m, other.positions_m)
    assert not np.array_equal(one.projected_potential, other.projected_potential)
    np.testing.assert_array_equal(build_atoms(one.recipe).positions * 1e-10, one.positions_m)
