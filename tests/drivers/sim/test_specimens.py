"""Specimen recipes, their atoms, abTEM potentials and the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import abtem
import numpy as np
import pytest
from scipy.spatial import cKDTree

from emauto.drivers.sim.specimens import (
    AmorphousCarbonRecipe,
    AuOnCarbonRecipe,
    SpecimenError,
    SrTiO3Recipe,
    build_atoms,
    load_recipe,
    load_specimen,
)

SAMPLING = 0.14e-10


@pytest.mark.parametrize("name", ["amorphous_carbon", "srtio3", "au_on_carbon"])
def test_builtin_recipes_load(name: str) -> None:
    assert load_recipe(name)[0] == name


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("recipe:\n  kind: amorphous_carbon\n  colour: red\n", "recipe.amorphous_carbon.colour"),
        ("recipe:\n  kind: amorphous_carbon\n  thickness_m: -1\n", "thickness_m"),
        ("recipe:\n  kind: srtio3\n  cells: abc\n", "cells"),
        ("recipe:\n  kind: diamond\n", "kind"),
        ("recipe: [\n", "not valid YAML"),
    ],
)
def test_bad_recipe_files_name_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecimenError) as info:
        load_recipe(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_unknown_builtin_name() -> None:
    with pytest.raises(SpecimenError, match="unknown specimen"):
        load_recipe("unobtainium")


def test_amorphous_carbon_density_and_spacing() -> None:
    recipe = AmorphousCarbonRecipe(extent_m=(3e-9, 3e-9), thickness_m=2e-9, seed=3)
    atoms, _ = build_atoms(recipe)
    volume_cm3 = 30 * 30 * 20 * 1e-24
    density = len(atoms) * 12.011 * 1.66054e-24 / volume_cm3
    assert density == pytest.approx(2.0, rel=0.01)
    tree = cKDTree(atoms.positions, boxsize=[30, 30, 1000])
    assert len(tree.query_pairs(1.3 - 1e-9)) == 0


def test_srtio3_vacancies_are_recorded() -> None:
    recipe = SrTiO3Recipe(cells=(4, 4, 2), sr_vacancy_fraction=0.25, o_vacancy_fraction=0.0)
    atoms, extras = build_atoms(recipe)
    symbols = atoms.get_chemical_symbols()
    assert symbols.count("Ti") == 32 and symbols.count("O") == 96
    assert symbols.count("Sr") == 32 - 8
    assert extras["vacancy_positions_m"].shape == (8, 3)


def test_au_particles_sit_on_the_support() -> None:
    recipe = AuOnCarbonRecipe(
        support=AmorphousCarbonRecipe(extent_m=(8e-9, 8e-9), thickness_m=1e-9),
        n_particles=2,
        diameter_range_m=(1.5e-9, 2e-9),
    )
    atoms, extras = build_atoms(recipe)
    gold = atoms.positions[atoms.numbers == 79]
    carbon = atoms.positions[atoms.numbers == 6]
    assert len(gold) > 50 and gold[:, 2].min() > carbon[:, 2].max()
    assert extras["particles_xy_size_m"].shape == (2, 3)


def test_transmission_equals_abtems(tmp_path: Path) -> None:
    path = tmp_path / "film.yaml"
    path.write_text("recipe:\n  kind: amorphous_carbon\n  extent_m: [1.0e-9, 1.0e-9]\n"
                    "  thickness_m: 1.0e-9\n")  # fmt: skip
    specimen = load_specimen(path, sampling_m=0.1e-10, cache_dir=tmp_path)
    atoms, _ = build_atoms(specimen.recipe)
    potential = abtem.Potential(atoms, gpts=specimen.gpts[::-1], slice_thickness=10.0,
                                projection="infinite", parametrization="lobato")  # fmt: skip
    theirs = potential.build().compute().transmission_function(200e3).compute().array
    np.testing.assert_allclose(specimen.transmission(200e3), np.swapaxes(theirs, -1, -2),
                               atol=2e-5)  # fmt: skip


def test_cache_hit_and_corrupt_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "film.yaml"
    path.write_text("recipe:\n  kind: amorphous_carbon\n  extent_m: [1.0e-9, 1.0e-9]\n"
                    "  thickness_m: 1.0e-9\n")  # fmt: skip
    first = load_specimen(path, sampling_m=0.1e-10, cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    again = load_specimen(path, sampling_m=0.1e-10, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.projected_potential, again.projected_potential)
    files[0].write_bytes(b"not a zip file")
    rebuilt = load_specimen(path, sampling_m=0.1e-10, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.projected_potential, rebuilt.projected_potential)
    assert "unreadable" in caplog.text


def test_slabs_sum_to_the_projection(tmp_path: Path) -> None:
    path = tmp_path / "film.yaml"
    path.write_text("recipe:\n  kind: amorphous_carbon\n  extent_m: [1.0e-9, 1.0e-9]\n"
                    "  thickness_m: 1.0e-9\n")  # fmt: skip
    whole = load_specimen(path, sampling_m=0.1e-10, cache_dir=tmp_path)
    sliced = load_specimen(path, sampling_m=0.1e-10, slab_thickness_m=2e-10, cache_dir=tmp_path)
    assert sliced.projected_potential.shape[0] == 5
    np.testing.assert_allclose(
        sliced.projected_potential.sum(axis=0),
        whole.projected_potential[0],
        rtol=1e-3,
        atol=1e-3 * whole.projected_potential.max(),
    )


def test_seed_changes_the_structure() -> None:
    a, _ = build_atoms(AmorphousCarbonRecipe(extent_m=(1e-9, 1e-9), thickness_m=1e-9, seed=1))
    b, _ = build_atoms(AmorphousCarbonRecipe(extent_m=(1e-9, 1e-9), thickness_m=1e-9, seed=1))
    c, _ = build_atoms(AmorphousCarbonRecipe(extent_m=(1e-9, 1e-9), thickness_m=1e-9, seed=2))
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.array_equal(a.positions, c.positions)
